import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import {
  CHECKPOINT_WORKFLOW,
  labelsRemovedDetail,
  stateQuery,
  type CheckpointWorkflowInput,
  type FinalizeRequest,
  type GitHubPauseTarget,
  type ResumedCheckpoint,
} from '../../common/checkpoint';
import { fail } from '../../common/fail';
import { SA_CHECKPOINT_NAME, SA_JOB_ID } from '../../common/search-attributes';
import { checkpointInput, runnerSearchAttributes } from '../../config/checkpoint-input';
import type { RunnerConfig } from '../../config/inventory';
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
  pauseSent: boolean;
  labelsSent: { target: GitHubPauseTarget; labels: string[] } | null;
  finalize: FinalizeRequest | null;
}

/** Whether an open run of the checkpoint's workflow holds it. */
async function held(deps: ActivityDeps, c: ActiveCheckpoint): Promise<boolean> {
  const t = deps.temporal!;
  const handle = t.client.workflow.getHandle(c.workflowId);
  try {
    const d = await handle.describe();
    if (d.status.name !== 'RUNNING') return false;
    // A run names the checkpoint it creates in a search attribute, which
    // describe reads from the run's own state: no query, so no replay of a
    // run the worker has evicted from its cache (a pass asks about every
    // waiting checkpoint). A run an earlier version adopted a checkpoint
    // with carries only the runner's attributes: that one is asked.
    const named = d.typedSearchAttributes.get(SA_CHECKPOINT_NAME);
    if (named !== undefined) return named === c.name;
    return (await handle.query(stateQuery)).name === c.name;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/**
 * What the checkpoint's last run did that Postgres may never have seen: a
 * run pauses the runner, and accepts a finalize, before its first Postgres
 * write (so both work while Postgres is down); terminated before that write
 * landed, it left them only in its history. Only a run that held this
 * checkpoint counts (its create's answer or its resume input names it).
 */
async function unrecorded(deps: ActivityDeps, c: ActiveCheckpoint): Promise<Unrecorded> {
  const none = { pauseSent: false, labelsSent: null, finalize: null };
  if (c.state !== 'created') return none; // finalize_queued was written with its pause
  let events;
  try {
    events =
      (await deps.temporal!.client.workflow.getHandle(c.workflowId).fetchHistory()).events ?? [];
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return none; // past retention
    throw err;
  }
  const payload = (p: unknown): unknown =>
    p ? defaultPayloadConverter.fromPayload(p as Payload) : undefined;
  let held = false;
  let pauseSent = false;
  let labelsSent: { target: GitHubPauseTarget; labels: string[] } | null = null;
  let finalize: FinalizeRequest | null = null;
  for (const e of events) {
    const started = e.workflowExecutionStartedEventAttributes;
    if (started) {
      const input = payload(started.input?.payloads?.[0]) as CheckpointWorkflowInput | undefined;
      held ||= input?.resume?.name === c.name;
    }
    const created = e.workflowExecutionUpdateCompletedEventAttributes;
    if (created?.meta?.updateId && created.outcome?.success) {
      const dto = payload(created.outcome.success.payloads?.[0]) as { name?: string } | undefined;
      held ||= dto?.name === c.name;
    }
    const scheduled = e.activityTaskScheduledEventAttributes;
    if (scheduled?.activityType?.name === 'sendPause') pauseSent = true;
    if (scheduled?.activityType?.name === 'removeRunnerLabels') {
      labelsSent = payload(scheduled.input?.payloads?.[0]) as typeof labelsSent;
    }
    const accepted = e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input;
    if (accepted?.name === 'finalize' && finalize === null) {
      const req = payload(accepted.args?.payloads?.[0]) as FinalizeRequest | undefined;
      if (req?.checkpointName === c.name) finalize = req;
    }
  }
  return held ? { pauseSent, labelsSent, finalize } : none;
}

/**
 * Logs the pause the ended run sent before Postgres recorded it, so the
 * adopting run undoes it.
 */
async function recoverPause(
  { store }: ReconcileContext,
  c: ActiveCheckpoint,
  runner: RunnerConfig,
  lost: Unrecorded,
  now: Date,
): Promise<void> {
  let detail: string;
  if (lost.labelsSent) {
    // Logged as sent: the adopting run puts back exactly these (if GitHub removed them).
    detail = `${labelsRemovedDetail(lost.labelsSent.target, lost.labelsSent.labels, true)} (by its ended run, before Postgres recorded it: from the run's history)`;
  } else if (lost.pauseSent && !(await store.operations.pausedByCheckpoint(c.id))) {
    detail = `its ended run sent the pause of GitLab runner ${runner.gitlab_runner_id} before Postgres recorded it (from the run's history)`;
  } else {
    return;
  }
  await writeOperation(
    store.operations,
    {
      checkpointId: c.id,
      runnerId: c.runnerId,
      backend: null,
      operation: 'pause',
      key: activityKey(`recovered-pause:${c.id}`, `recovered-pause:${c.id}`),
    },
    { result: 'ok', detail, startedAt: now, finishedAt: now },
  );
}

/** Where the adopting run picks the checkpoint up. */
function adoptedAt(
  c: ActiveCheckpoint,
  lost: Unrecorded,
  now: Date,
): NonNullable<ResumedCheckpoint['adopted']> {
  if (lost.finalize) {
    // The job ended (the finalize is in the run's history): reset now.
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
  await recoverPause(ctx, c, runner, lost, now);
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
