import { Column, Entity, OneToMany, PrimaryGeneratedColumn } from 'typeorm';
import type { Backend, CheckpointState, FinalizeStatus } from '../common/states';
import type { OperationLog } from './OperationLog';

/**
 * One checkpoint: a restore point taken before a CI job. The row records what
 * the checkpoint workflow did; the workflow itself is the source of truth for
 * what happens next. Constraints and indexes live in the migrations.
 */
@Entity('checkpoints')
export class Checkpoint {
  @PrimaryGeneratedColumn({ type: 'integer', primaryKeyConstraintName: 'pk_checkpoints' })
  id!: number;

  @Column({ type: 'varchar', length: 255, unique: true })
  name!: string;

  @Column({ name: 'runner_id', type: 'varchar', length: 255 })
  runnerId!: string;

  @Column({ name: 'job_id', type: 'varchar', length: 255 })
  jobId!: string;

  /** GitLab project (numeric id or path) whose job is polled; null: no polling. */
  @Column({ name: 'project_id', type: 'varchar', length: 255, nullable: true })
  projectId!: string | null;

  @Column({ type: 'varchar', length: 255, nullable: true })
  caller!: string | null;

  @Column({ type: 'varchar', length: 20 })
  backend!: Backend;

  @Column({ type: 'varchar', length: 32 })
  state!: CheckpointState;

  @Column({ name: 'finalize_status', type: 'varchar', length: 16, nullable: true })
  finalizeStatus!: FinalizeStatus | null;

  @Column({ name: 'finalize_source', type: 'varchar', length: 100, nullable: true })
  finalizeSource!: string | null;

  /** Proxmox snapshot name (valid for Proxmox even when the checkpoint name is not). */
  @Column({ name: 'snapshot_name', type: 'varchar', length: 40, nullable: true })
  snapshotName!: string | null;

  @Column({ name: 'workflow_id', type: 'varchar', length: 255 })
  workflowId!: string;

  /** Last failure, for operators (no secrets). */
  @Column({ name: 'error_detail', type: 'text', nullable: true })
  errorDetail!: string | null;

  @Column({ name: 'reset_attempts', type: 'integer', default: 0 })
  resetAttempts!: number;

  @Column({ name: 'created_at', type: 'timestamptz', default: () => 'now()' })
  createdAt!: Date;

  @Column({ name: 'finalized_at', type: 'timestamptz', nullable: true })
  finalizedAt!: Date | null;

  /** When the checkpoint became terminal; the cooldown is measured from here. */
  @Column({ name: 'ended_at', type: 'timestamptz', nullable: true })
  endedAt!: Date | null;

  @Column({ name: 'updated_at', type: 'timestamptz', default: () => 'now()' })
  updatedAt!: Date;

  @OneToMany('OperationLog', 'checkpoint')
  operations?: OperationLog[];
}
