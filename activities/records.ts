import type { PauseTarget } from '../common/checkpoint';
import { fail } from '../common/fail';
import type { Backend } from '../common/states';
import type { Store, Stores } from '../store';
import {
  ActiveCheckpointExists,
  type CheckpointRef,
  type CheckpointTransition,
  type NewCheckpoint,
} from '../store/checkpoints';
import type { OperationLogStore, OperationOutcome, OperationResult } from '../store/operation-log';
import type { JobEndPath, WorkerMetrics } from './metrics';
import { activityKey, writeOperation } from './operation-log';
import { reportStreak, streakQuarantine, type StreakRule } from './quarantine';

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
  /** The pause the run tried before this transition (see pauseBeforeBookkeeping), logged with it. */
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

type RecordOptions = {
  pollJobs: (runnerId: string) => boolean;
  metrics: WorkerMetrics;
  /** The failure-streak quarantine rule; absent: no runner is quarantined for streaks. */
  streak?: StreakRule;
};

/** Where a log row goes: the checkpoint, its runner, and the backend its step ran on. */
type RowOf = Pick<CheckpointRef, 'runnerId'> & { checkpointId: number; backend: Backend | null };

/**
 * Writes the log row of something that happened at one instant (a state
 * change, a note): it starts and ends at `at`. `key` is the fallback key
 * outside an activity; inside one, activityKey makes it the call's own.
 */
async function logAt(
  ops: OperationLogStore,
  row: RowOf,
  step: { operation: string; suffix: string; key: string },
  outcome: Pick<OperationOutcome, 'result' | 'detail' | 'error'>,
  at: Date,
): Promise<void> {
  await writeOperation(
    ops,
    { ...row, operation: step.operation, key: activityKey(step.suffix, step.key) },
    { ...outcome, startedAt: at, finishedAt: at },
  );
}

/**
 * Inserts the checkpoint row (state `created`) with its `create` log row,
 * and a `poller` note when nothing polls the job; a retry finds the row it
 * already inserted. An active row of the same runner left by a workflow run
 * that was terminated (the per-runner workflow id means that run is closed)
 * is marked `reset_failed` and logged, so it cannot block the runner.
 */
async function recordCheckpoint(
  store: Store,
  o: RecordOptions,
  i: NewCheckpoint,
): Promise<{ id: number; pollJobs: boolean }> {
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
      await logAt(
        tx.operations,
        { checkpointId: s.id, runnerId: i.runnerId, backend: i.backend },
        { operation: 'superseded', suffix: `superseded:${s.id}`, key: `superseded:${s.id}` },
        {
          result: 'error',
          error: `superseded by ${i.name}: its workflow run ended without finishing it`,
        },
        now,
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
    const pollJobs = o.pollJobs(i.runnerId);
    if (!i.projectId || !pollJobs) {
      // Why nothing polls this job: written with the row, so the create needs no call of its own.
      await logAt(
        tx.operations,
        { checkpointId: id, runnerId: i.runnerId, backend: null },
        { operation: 'poller', suffix: 'poller', key: `${i.name}:poller` },
        { result: 'skipped', detail: pollingSkippedDetail(i.projectId) },
        now,
      );
    }
    return { id, pollJobs };
  });
}

/** Why nothing polls a job (finalize or the TTL will end it). */
function pollingSkippedDetail(projectId: string | null): string {
  return !projectId
    ? 'no project_id: the job end is detected by finalize or the TTL only'
    : "job polling is off (E2EPOOL_POLLER_ENABLED=false, or no client of the runner's CI system): the job end is detected by finalize or the TTL only";
}

/**
 * The compare-and-set: the row it moved (`moved`), or the row a retry finds
 * in `to` already (`moved` null); any other state is a conflict no retry can fix.
 */
async function compareAndSet(
  tx: Stores,
  i: TransitionRequest,
): Promise<{ row: CheckpointRef; moved: CheckpointRef | null }> {
  const outcome = await tx.checkpoints.transition(i);
  if (outcome.changed) return { row: outcome.checkpoint, moved: outcome.checkpoint };
  const current = outcome.current;
  if (!current) throw fail('StateConflict', `checkpoint ${i.checkpointId} does not exist`);
  if (current.state !== i.to) {
    throw fail(
      'StateConflict',
      `checkpoint '${current.name}' is ${current.state}, expected one of ${i.from.join(', ')}`,
    );
  }
  return { row: current, moved: null };
}

/** The state change's own log row. */
async function logState(tx: Stores, row: CheckpointRef, i: TransitionRequest, now: Date) {
  const detail = [
    `state=${i.to}`,
    i.finalizeStatus ? `status=${i.finalizeStatus}` : null,
    i.finalizeSource ? `source=${i.finalizeSource}` : null,
  ]
    .filter(Boolean)
    .join(', ');
  const failed = i.to === 'needs_attention' || i.to === 'reset_failed' || i.to === 'create_failed';
  await logAt(
    tx.operations,
    { checkpointId: row.id, runnerId: row.runnerId, backend: row.backend },
    { operation: i.to, suffix: `state:${i.to}`, key: `${row.name}:state:${i.to}` },
    { result: failed ? 'error' : 'ok', detail, error: i.errorDetail ?? null },
    now,
  );
}

/** The `pause` row of a pause tried before any Postgres write (see PauseLog). */
async function logPause(tx: Stores, row: CheckpointRef, p: PauseLog) {
  if (p.fact) {
    await tx.pauses.opened({
      checkpointId: row.id,
      runnerId: row.runnerId,
      ...p.fact,
      at: new Date(p.startedAt),
    });
  }
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
      result: p.result,
      detail: p.detail,
      error: p.error,
      startedAt: new Date(p.startedAt),
      finishedAt: new Date(p.finishedAt),
    },
  );
}

/** The `left_paused` row of an operator's release that left the runner held. */
async function logLeftPaused(tx: Stores, row: CheckpointRef, i: TransitionRequest, now: Date) {
  await tx.pauses.closed(row.id, 'left_paused');
  const detail =
    i.leftPausedWhat !== undefined
      ? `released by an operator with ${i.leftPausedWhat}: e2epool will not put them back`
      : `released by an operator with GitLab runner ${i.leftPausedGitlabRunnerId} still paused: e2epool will not unpause it`;
  await logAt(
    tx.operations,
    { checkpointId: row.id, runnerId: row.runnerId, backend: null },
    { operation: 'left_paused', suffix: 'left_paused', key: `${row.name}:left_paused` },
    { result: 'skipped', detail },
    now,
  );
}

/**
 * Moves a checkpoint from one of `from` to `to`, as a compare-and-set. A
 * retry that finds the row already in `to` succeeds; any other state is a
 * conflict no retry can fix.
 */
async function transitionCheckpoint(
  store: Store,
  o: RecordOptions,
  i: TransitionRequest,
): Promise<void> {
  // One transaction: nobody sees the new state without its log row.
  const { moved, streak } = await store.transaction(async (tx) => {
    const { row, moved } = await compareAndSet(tx, i);
    const now = new Date();
    await logState(tx, row, i, now);
    if (i.pauseLog) await logPause(tx, row, i.pauseLog);
    if (i.leftPausedGitlabRunnerId !== undefined || i.leftPausedWhat !== undefined)
      await logLeftPaused(tx, row, i, now);
    // Only the attempt that moved the row: a retry of a committed attempt finds it moved.
    const streak =
      moved && i.to === 'reset_failed' && o.streak
        ? await streakQuarantine(tx, o.streak, row, false)
        : null;
    return { moved, streak };
  });
  if (streak && o.streak) reportStreak(o.streak, moved!.runnerId, streak);
  // Only the attempt that moved the row observes: a retry finds it moved already.
  if (moved && i.timeToClean) {
    const seconds = (Date.now() - Date.parse(i.timeToClean.jobEndedAt)) / 1000;
    o.metrics.timeToClean.observe(
      { backend: moved.backend, path: i.timeToClean.path },
      Math.max(0, seconds),
    );
  }
}

/** Postgres bookkeeping of checkpoints: every state change is a compare-and-set. */
export function recordActivities(store: Store, o: RecordOptions) {
  return {
    recordCheckpoint: (i: NewCheckpoint) => recordCheckpoint(store, o, i),
    transitionCheckpoint: (i: TransitionRequest) => transitionCheckpoint(store, o, i),

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
      if (i.heldUntil !== undefined) {
        await store.holds.set(i.checkpointId, i.heldUntil === null ? null : new Date(i.heldUntil));
      }
      await logAt(
        store.operations,
        { checkpointId: i.checkpointId, runnerId: i.runnerId, backend: null },
        { operation: i.operation, suffix: i.operation, key: i.key },
        { result: i.result, detail: i.detail },
        new Date(),
      );
    },
  };
}
