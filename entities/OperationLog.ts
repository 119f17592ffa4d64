import { Column, Entity, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import type { Backend } from '../common/states';
import type { Checkpoint } from './Checkpoint';

export const OPERATION_RESULTS = ['running', 'ok', 'error', 'skipped'] as const;
export type OperationResult = (typeof OPERATION_RESULTS)[number];

/**
 * One step of a checkpoint's life (create, pause, rollback, unpause, ...).
 * `idempotencyKey` makes the row safe under activity retries: a retried step
 * updates its row instead of adding another.
 */
@Entity('operation_logs')
export class OperationLog {
  @PrimaryGeneratedColumn({ type: 'integer', primaryKeyConstraintName: 'pk_operation_logs' })
  id!: number;

  @Column({ name: 'checkpoint_id', type: 'integer' })
  checkpointId!: number;

  @ManyToOne('Checkpoint', 'operations', { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'checkpoint_id', foreignKeyConstraintName: 'fk_operation_logs_checkpoint' })
  checkpoint?: Checkpoint;

  @Column({ name: 'idempotency_key', type: 'varchar', length: 255, unique: true })
  idempotencyKey!: string;

  @Column({ type: 'varchar', length: 64 })
  operation!: string;

  @Column({ name: 'runner_id', type: 'varchar', length: 255 })
  runnerId!: string;

  @Column({ type: 'varchar', length: 20, nullable: true })
  backend!: Backend | null;

  @Column({ type: 'varchar', length: 16 })
  result!: OperationResult;

  @Column({ type: 'text', nullable: true })
  detail!: string | null;

  @Column({ type: 'text', nullable: true })
  error!: string | null;

  /** Activity attempt that last wrote this row. */
  @Column({ type: 'integer', default: 1 })
  attempt!: number;

  @Column({ name: 'started_at', type: 'timestamptz', default: () => 'now()' })
  startedAt!: Date;

  @Column({ name: 'finished_at', type: 'timestamptz', nullable: true })
  finishedAt!: Date | null;

  @Column({ name: 'duration_ms', type: 'integer', nullable: true })
  durationMs!: number | null;
}
