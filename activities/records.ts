import type { DataSource } from 'typeorm';
import {
  TERMINAL_STATES,
  type Backend,
  type CheckpointState,
  type FinalizeStatus,
} from '../common/states';
import type { OperationResult } from '../store/operation-log';
import { conflict, permanent } from './failures';
import { activityKey, writeOperation } from './operation-log';

const ACTIVE = ['created', 'finalize_queued', 'needs_attention'];

export interface RecordCheckpointInput {
  name: string;
  runnerId: string;
  jobId: string;
  projectId: string | null;
  caller: string | null;
  backend: Backend;
  workflowId: string;
  snapshotName: string | null;
  createdAt: string;
}

export interface TransitionInput {
  checkpointId: number;
  from: CheckpointState[];
  to: CheckpointState;
  finalizeStatus?: FinalizeStatus | null;
  finalizeSource?: string | null;
  finalizedAt?: string | null;
  /** Set (or, with null, clear) the error detail shown to operators. */
  errorDetail?: string | null;
  resetRounds?: number;
}

function isUniqueViolation(err: unknown, constraint: string): boolean {
  const e = err as {
    code?: string;
    constraint?: string;
    driverError?: { code?: string; constraint?: string };
  };
  const d = e.driverError ?? e;
  return d.code === '23505' && d.constraint === constraint;
}

/** Postgres bookkeeping of checkpoints: every state change is a compare-and-set. */
export function recordActivities(ds: DataSource) {
  return {
    /**
     * Inserts the checkpoint row (state `created`); a retry finds the row it
     * already inserted. An active row of the same runner left by a workflow run
     * that was terminated (the per-runner workflow id means that run is closed)
     * is marked `reset_failed` and logged, so it cannot block the runner.
     */
    async recordCheckpoint(i: RecordCheckpointInput): Promise<{ id: number }> {
      return ds.transaction(async (tx) => {
        const stale = (await tx.query(
          `UPDATE checkpoints
              SET state = 'reset_failed', ended_at = now(), updated_at = now(),
                  error_detail = 'superseded: its workflow run ended without finishing it (terminated?)'
            WHERE runner_id = $1 AND state = ANY($2) AND name <> $3
        RETURNING id, name`,
          [i.runnerId, ACTIVE, i.name],
        )) as [Array<{ id: number; name: string }>, number];
        const inserted = (await tx
          .query(
            `INSERT INTO checkpoints
               (name, runner_id, job_id, project_id, caller, backend, state, snapshot_name, workflow_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'created', $7, $8, $9, now())
             ON CONFLICT (name) DO NOTHING
             RETURNING id`,
            [
              i.name,
              i.runnerId,
              i.jobId,
              i.projectId,
              i.caller,
              i.backend,
              i.snapshotName,
              i.workflowId,
              i.createdAt,
            ],
          )
          .catch((err: unknown) => {
            if (isUniqueViolation(err, 'ix_one_active_checkpoint_per_runner')) {
              throw conflict(
                `Active checkpoint already exists for runner '${i.runnerId}' (concurrent create)`,
              );
            }
            throw err;
          })) as Array<{ id: number }>;
        const id =
          inserted[0]?.id ??
          (
            (await tx.query(`SELECT id FROM checkpoints WHERE name = $1`, [i.name])) as Array<{
              id: number;
            }>
          )[0]!.id;
        const now = new Date();
        for (const s of stale[0] ?? []) {
          await writeOperation(
            tx,
            {
              checkpointId: s.id,
              runnerId: i.runnerId,
              backend: i.backend,
              operation: 'superseded',
              key: activityKey(`superseded:${s.id}`, `superseded:${s.id}`),
            },
            {
              result: 'error',
              error: `superseded by ${i.name}: its workflow run ended without finishing it`,
              startedAt: now,
              finishedAt: now,
            },
          );
        }
        await writeOperation(
          tx,
          {
            checkpointId: id,
            runnerId: i.runnerId,
            backend: i.backend,
            operation: 'create',
            key: activityKey('create', `${i.name}:create`),
          },
          {
            result: 'ok',
            detail: `Checkpoint created for job ${i.jobId}${i.caller ? `, caller=${i.caller}` : ''}`,
            startedAt: new Date(i.createdAt),
            finishedAt: now,
          },
        );
        return { id };
      });
    },

    /**
     * Moves a checkpoint from one of `from` to `to`, as a compare-and-set. A
     * retry that finds the row already in `to` succeeds; any other state is a
     * conflict no retry can fix.
     */
    async transitionCheckpoint(i: TransitionInput): Promise<void> {
      const terminal = (TERMINAL_STATES as readonly string[]).includes(i.to);
      const rows = (await ds.query(
        `UPDATE checkpoints SET
            state = $3,
            finalize_status = COALESCE($4, finalize_status),
            finalize_source = COALESCE($5, finalize_source),
            finalized_at = COALESCE($6::timestamptz, finalized_at),
            error_detail = CASE WHEN $7 THEN $8 ELSE error_detail END,
            reset_attempts = COALESCE($9, reset_attempts),
            ended_at = CASE WHEN $10 THEN now() ELSE NULL END,
            updated_at = now()
          WHERE id = $1 AND state = ANY($2)
        RETURNING id, name, runner_id, backend`,
        [
          i.checkpointId,
          i.from,
          i.to,
          i.finalizeStatus ?? null,
          i.finalizeSource ?? null,
          i.finalizedAt ?? null,
          i.errorDetail !== undefined,
          i.errorDetail ?? null,
          i.resetRounds ?? null,
          terminal,
        ],
      )) as [Array<{ id: number; name: string; runner_id: string; backend: Backend }>, number];
      let row = rows[0]?.[0];
      if (!row) {
        const current = (await ds.query(
          `SELECT id, name, runner_id, backend, state FROM checkpoints WHERE id = $1`,
          [i.checkpointId],
        )) as Array<{
          id: number;
          name: string;
          runner_id: string;
          backend: Backend;
          state: CheckpointState;
        }>;
        if (!current[0])
          throw permanent(`checkpoint ${i.checkpointId} does not exist`, 'StateConflict');
        if (current[0].state !== i.to) {
          throw permanent(
            `checkpoint '${current[0].name}' is ${current[0].state}, expected one of ${i.from.join(', ')}`,
            'StateConflict',
          );
        }
        row = current[0];
      }
      const now = new Date();
      const detail = [
        `state=${i.to}`,
        i.finalizeStatus ? `status=${i.finalizeStatus}` : null,
        i.finalizeSource ? `source=${i.finalizeSource}` : null,
      ]
        .filter(Boolean)
        .join(', ');
      await writeOperation(
        ds,
        {
          checkpointId: row.id,
          runnerId: row.runner_id,
          backend: row.backend,
          operation: i.to,
          key: activityKey(`state:${i.to}`, `${row.name}:state:${i.to}`),
        },
        {
          result:
            i.to === 'needs_attention' || i.to === 'reset_failed' || i.to === 'create_failed'
              ? 'error'
              : 'ok',
          detail,
          error: i.errorDetail ?? null,
          startedAt: now,
          finishedAt: now,
        },
      );
    },

    /** Adds a note to a checkpoint's operation log (e.g. why it is not polled). */
    async noteOperation(i: {
      checkpointId: number;
      runnerId: string;
      key: string;
      operation: string;
      result: OperationResult;
      detail: string;
    }): Promise<void> {
      const now = new Date();
      await writeOperation(
        ds,
        {
          checkpointId: i.checkpointId,
          runnerId: i.runnerId,
          backend: null,
          operation: i.operation,
          key: activityKey(i.operation, i.key),
        },
        { result: i.result, detail: i.detail, startedAt: now, finishedAt: now },
      );
    },
  };
}
