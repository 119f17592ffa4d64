import type { PauseTarget } from '../common/checkpoint';
import { fail } from '../common/fail';
import type { Store } from '../store';
import {
  ActiveCheckpointExists,
  type CheckpointRef,
  type CheckpointTransition,
  type NewCheckpoint,
} from '../store/checkpoints';
import type { OperationResult } from '../store/operation-log';
import type { JobEndPath, WorkerMetrics } from './metrics';
import { activityKey, writeOperation } from './operation-log';

/** A state change, and what the operation log must say along with it. */
export interface TransitionRequest extends CheckpointTransition {
  /**
   * An operator released the checkpoint with this GitLab runner still paused:
   * logged as `left_paused`, so the reconciler knows the pause is no longer
   * e2epool's to undo.
   */
  leftPausedGitlabRunnerId?: number;
  /**
   * The same for a GitHub runner whose labels an operator's `release` left
   * off: what stays so (`GitHub runner 7 of acme/app without its labels […]`).
   */
  leftPausedWhat?: string;
  /** The pause the run tried before this transition (see PAUSE_FIRST_PATCH), logged with it. */
  pauseLog?: PauseLog;
  /**
   * Set on the transition that ends a checkpoint with its runner clean, ready
   * and unpaused: when and how its job's end was seen. Observed, once the
   * state has changed, as e2epool_time_to_clean_seconds.
   */
  timeToClean?: { jobEndedAt: string; path: JobEndPath };
}

/** How a pause tried before any Postgres write went, for its `pause` log row. */
export interface PauseLog {
  result: OperationResult;
  detail: string;
  error: string | null;
  /** ISO-8601. */
  startedAt: string;
  finishedAt: string;
  /** Set when the pause is e2epool's (sent, or done): recorded in runner_pauses along with the row. */
  fact?: { target: PauseTarget; state: 'sent' | 'paused'; labels?: string[] };
}

/** Postgres bookkeeping of checkpoints: every state change is a compare-and-set. */
export function recordActivities(
  store: Store,
  o: { pollJobs: (runnerId: string) => boolean; metrics: WorkerMetrics },
) {
  return {
    /**
     * Inserts the checkpoint row (state `created`); a retry finds the row it
     * already inserted. An active row of the same runner left by a workflow run
     * that was terminated (the per-runner workflow id means that run is closed)
     * is marked `reset_failed` and logged, so it cannot block the runner.
     */
    async recordCheckpoint(i: NewCheckpoint): Promise<{ id: number; pollJobs: boolean }> {
      return store.transaction(async (tx) => {
        const { id, superseded } = await tx.checkpoints.record(i).catch((err: unknown) => {
          if (err instanceof ActiveCheckpointExists) {
            throw fail(
              'CheckpointConflict',
              `Active checkpoint already exists for runner '${i.runnerId}' (concurrent create)`,
            );
          }
          throw err;
        });
        const now = new Date();
        for (const s of superseded) {
          await writeOperation(
            tx.operations,
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
          tx.operations,
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
        return { id, pollJobs: o.pollJobs(i.runnerId) };
      });
    },

    /**
     * Moves a checkpoint from one of `from` to `to`, as a compare-and-set. A
     * retry that finds the row already in `to` succeeds; any other state is a
     * conflict no retry can fix.
     */
    async transitionCheckpoint(i: TransitionRequest): Promise<void> {
      // One transaction: nobody sees the new state without its log row.
      const moved = await store.transaction(async (tx) => {
        const outcome = await tx.checkpoints.transition(i);
        let row: CheckpointRef;
        if (outcome.changed) row = outcome.checkpoint;
        else {
          const current = outcome.current;
          if (!current) throw fail('StateConflict', `checkpoint ${i.checkpointId} does not exist`);
          if (current.state !== i.to) {
            throw fail(
              'StateConflict',
              `checkpoint '${current.name}' is ${current.state}, expected one of ${i.from.join(', ')}`,
            );
          }
          row = current;
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
          tx.operations,
          {
            checkpointId: row.id,
            runnerId: row.runnerId,
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
        if (i.pauseLog) {
          await writeOperation(
            tx.operations,
            {
              checkpointId: row.id,
              runnerId: row.runnerId,
              backend: null,
              operation: 'pause',
              key: activityKey('pause', `${row.name}:pause:0`),
            },
            {
              result: i.pauseLog.result,
              detail: i.pauseLog.detail,
              error: i.pauseLog.error,
              startedAt: new Date(i.pauseLog.startedAt),
              finishedAt: new Date(i.pauseLog.finishedAt),
            },
          );
          if (i.pauseLog.fact) {
            const at = new Date(i.pauseLog.startedAt);
            await tx.pauses.opened({
              checkpointId: row.id,
              runnerId: row.runnerId,
              ...i.pauseLog.fact,
              at,
            });
          }
        }
        if (i.leftPausedGitlabRunnerId !== undefined || i.leftPausedWhat !== undefined) {
          await tx.pauses.closed(row.id, 'left_paused');
          const detail =
            i.leftPausedWhat !== undefined
              ? `released by an operator with ${i.leftPausedWhat}: e2epool will not put them back`
              : `released by an operator with GitLab runner ${i.leftPausedGitlabRunnerId} still paused: e2epool will not unpause it`;
          await writeOperation(
            tx.operations,
            {
              checkpointId: row.id,
              runnerId: row.runnerId,
              backend: null,
              operation: 'left_paused',
              key: activityKey('left_paused', `${row.name}:left_paused`),
            },
            {
              result: 'skipped',
              detail,
              startedAt: now,
              finishedAt: now,
            },
          );
        }
        return outcome.changed ? row : null;
      });
      // Only the attempt that moved the row observes: a retry finds it moved already.
      if (moved && i.timeToClean) {
        const seconds = (Date.now() - Date.parse(i.timeToClean.jobEndedAt)) / 1000;
        o.metrics.timeToClean.observe(
          { backend: moved.backend, path: i.timeToClean.path },
          Math.max(0, seconds),
        );
      }
    },

    /**
     * Adds a note to a checkpoint's operation log (e.g. why it is not polled).
     * `heldUntil` (hold notes): sets, or with null clears, checkpoints.held_until.
     */
    async noteOperation(i: {
      checkpointId: number;
      runnerId: string;
      key: string;
      operation: string;
      result: OperationResult;
      detail: string;
      heldUntil?: string | null;
    }): Promise<void> {
      const now = new Date();
      if (i.heldUntil !== undefined) {
        await store.holds.set(i.checkpointId, i.heldUntil === null ? null : new Date(i.heldUntil));
      }
      await writeOperation(
        store.operations,
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
