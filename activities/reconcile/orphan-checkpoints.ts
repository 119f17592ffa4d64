import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import {
  CHECKPOINT_WORKFLOW,
  labelsRemovedDetail,
  type CheckpointMemo,
  type CheckpointWorkflowInput,
  type ResumedCheckpoint,
} from '../../common/checkpoint';
import { fail } from '../../common/fail';
import { SA_CHECKPOINT_NAME, SA_JOB_ID } from '../../common/search-attributes';
import { checkpointInput, runnerSearchAttributes } from '../../config/checkpoint-input';
import type { ActiveCheckpoint } from '../../store/checkpoints';
import { pollsJobsOf, type ActivityDeps } from '../deps';
import { activityKey, writeOperation } from '../operation-log';
import {
  minAge,
  type ReconcileContext,
  type ReconcileFinding,
  type ReconcileInput,
} from './record';

/** What the checkpoint's last run did that Postgres may never have seen (see unrecorded). */
interface Unrecorded {
  pause: CheckpointMemo['pause'] | null;
  finalize: CheckpointMemo['finalize'] | null;
}

/** Whether an open run of the checkpoint's workflow holds it. */
async function held(deps: ActivityDeps, c: ActiveCheckpoint): Promise<boolean> {
  const t = deps.temporal!;
  const handle = t.client.workflow.getHandle(c.workflowId);
  try {
    const d = await handle.describe();
    if (d.status.name !== 'RUNNING') return false;
    // A run names the checkpoint it holds in a search attribute, which
    // describe reads from the run's own state: no query, so no replay of a
    // run the worker has evicted from its cache (a pass asks about every
    // waiting checkpoint). An adopting run starts named; a created one is
    // named once its create is done (record and snapshot), so a running run
    // without a name is still in its create: the checkpoint is the one it is
    // creating, or its create fails against this active one and ends. Either
    // way not an orphan now; the next pass looks again.
    const named = d.typedSearchAttributes.get(SA_CHECKPOINT_NAME);
    return named === undefined || named === c.name;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/**
 * What the checkpoint's last run did that Postgres may never have seen: a
 * run pauses the runner, and accepts a finalize, before its first Postgres
 * write (so both work while Postgres is down); terminated before that write
 * landed, it left them only in its memo (CheckpointMemo, set before each
 * act). Only entries that name this checkpoint count.
 */
async function unrecorded(deps: ActivityDeps, c: ActiveCheckpoint): Promise<Unrecorded> {
  const none = { pause: null, finalize: null };
  if (c.state !== 'created') return none; // finalize_queued was written with its pause
  let memo: CheckpointMemo;
  try {
    // describe decodes the memo with the client's (default) payload converter.
    const d = await deps.temporal!.client.workflow.getHandle(c.workflowId).describe();
    memo = (d.memo ?? {}) as CheckpointMemo;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return none; // past retention
    throw err;
  }
  return {
    pause: memo.pause?.checkpoint === c.name ? memo.pause : null,
    finalize: memo.finalize?.checkpoint === c.name ? memo.finalize : null,
  };
}

/**
 * Records the pause the ended run sent before Postgres recorded it (state
 * `sent`: whether it landed is unknown), so the adopting run undoes it; a
 * GitHub pause adds its labels to any this checkpoint has off already.
 */
async function recoverPause(
  { store }: ReconcileContext,
  c: ActiveCheckpoint,
  lost: Unrecorded,
  now: Date,
): Promise<void> {
  const pause = lost.pause;
  if (!pause) return;
  const open = await store.pauses.openOf(c.id);
  if (open && pause.target.kind === 'gitlab') return; // recorded already
  const labels = [...(open?.labels ?? [])];
  for (const l of pause.labels) if (!labels.includes(l)) labels.push(l);
  const detail =
    pause.target.kind === 'github'
      ? `${labelsRemovedDetail(pause.target, labels, true)} (by its ended run, before Postgres recorded it: from the run's memo)`
      : `its ended run sent the pause of GitLab runner ${pause.target.gitlabRunnerId} before Postgres recorded it (from the run's memo)`;
  await store.transaction(async (tx) => {
    const state = open?.state === 'paused' ? 'paused' : 'sent';
    await tx.pauses.opened({
      checkpointId: c.id,
      runnerId: c.runnerId,
      target: pause.target,
      state,
      labels,
    });
    await writeOperation(
      tx.operations,
      {
        checkpointId: c.id,
        runnerId: c.runnerId,
        backend: null,
        operation: 'pause',
        key: activityKey(`recovered-pause:${c.id}`, `recovered-pause:${c.id}`),
      },
      { result: 'ok', detail, startedAt: now, finishedAt: now },
    );
  });
}

/** Where the adopting run picks the checkpoint up. */
function adoptedAt(
  c: ActiveCheckpoint,
  lost: Unrecorded,
  now: Date,
): NonNullable<ResumedCheckpoint['adopted']> {
  if (lost.finalize) {
    // The job ended (the finalize is in the run's memo): reset now.
    return {
      state: 'finalize_queued',
      jobEnd: { status: lost.finalize.status, source: lost.finalize.source, at: now.toISOString() },
    };
  }
  return {
    state: c.state,
    jobEnd:
      c.state === 'created'
        ? null
        : c.finalizeStatus
          ? {
              status: c.finalizeStatus,
              source: c.finalizeSource ?? 'reconciler',
              at: new Date(c.finalizedAt ?? c.createdAt).toISOString(),
            }
          : 'ttl',
  };
}

/** A new run that resumes the checkpoint: it resets the runner and unpauses it. */
async function adopt(
  ctx: ReconcileContext,
  c: ActiveCheckpoint,
): Promise<ReconcileFinding['action']> {
  const { deps, store } = ctx;
  const t = deps.temporal!;
  const runner = deps.inventory.inventory.forReset(c.runnerId);
  if (!runner) {
    const outcome = await store.checkpoints.transition({
      checkpointId: c.id,
      from: [c.state],
      to: 'reset_failed',
      errorDetail: 'its workflow run ended without finishing it, and the runner left the inventory',
    });
    return outcome.changed ? 'ended' : 'skipped';
  }
  const lost = await unrecorded(deps, c);
  const now = new Date();
  await recoverPause(ctx, c, lost, now);
  const input: CheckpointWorkflowInput = {
    ...checkpointInput(runner, deps.settings, deps.inventory.inventory),
    resume: {
      name: c.name,
      jobId: c.jobId,
      projectId: c.projectId,
      checkpointId: c.id,
      createdAt: new Date(c.createdAt).toISOString(),
      pollJobs: pollsJobsOf(deps, c.runnerId),
      adopted: adoptedAt(c, lost, now),
    },
  };
  try {
    await t.client.workflow.start(CHECKPOINT_WORKFLOW, {
      workflowId: c.workflowId,
      taskQueue: t.taskQueue,
      args: [input],
      // Never displace a run: one that started meanwhile owns the runner.
      workflowIdConflictPolicy: 'FAIL',
      workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      // Named from the start, as a created run names itself: operators find
      // it by checkpoint and job, and the next pass reads it without a query.
      typedSearchAttributes: [
        ...runnerSearchAttributes(runner),
        { key: SA_CHECKPOINT_NAME, value: c.name },
        { key: SA_JOB_ID, value: c.jobId },
      ],
      staticSummary: `runner ${runner.runner_id} · job ${c.jobId} · adopted by the reconciler`,
    });
    return 'adopted';
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return 'skipped';
    throw err;
  }
}

function orphanDetail(c: ActiveCheckpoint, action: ReconcileFinding['action']): string {
  return action === 'adopted'
    ? `no open run held this ${c.state} checkpoint: a new run adopted it`
    : action === 'ended'
      ? 'no open run held it and its runner left the inventory: ended reset_failed'
      : action === 'reported'
        ? `no open run holds this ${c.state} checkpoint (E2EPOOL_RECONCILE_REPAIR=false: not repaired)`
        : 'a run started for it meanwhile';
}

export function orphanCheckpointActivities(ctx: ReconcileContext) {
  const { deps, store, record } = ctx;
  return {
    /**
     * Active checkpoint rows that no open run holds (its run was terminated,
     * failed or timed out) are adopted by a new run, which resets and unpauses
     * the runner; with repair off they are only reported.
     */
    async reconcileCheckpoints(i: ReconcileInput): Promise<ReconcileFinding[]> {
      if (!deps.temporal)
        throw fail('PermanentFailure', 'this worker has no Temporal client for the reconciler');
      const findings: ReconcileFinding[] = [];
      for (const c of await store.checkpoints.listActive(minAge(i))) {
        if (await held(deps, c)) continue;
        // A pass over many rows takes a while: the run may have finished this
        // checkpoint since the list was read (a run moves its row before it
        // closes, so a row still as listed after the look at Temporal is
        // orphaned). Adopting a finished one would fail on its row, or
        // collide with the runner's next checkpoint.
        if ((await store.checkpoints.stateOf(c.id)) !== c.state) continue;
        const action = i.repair ? await adopt(ctx, c) : 'reported';
        const detail = orphanDetail(c, action);
        findings.push(
          await record(
            { kind: 'orphan_checkpoint', checkpoint: c.name, runnerId: c.runnerId, action, detail },
            c,
          ),
        );
      }
      return findings;
    },
  };
}
