/**
 * Waiting for the job to end: the first of a finalize (update handler), a
 * finished GitLab job (polled by the worker, when it polls this job) or the
 * TTL. A long wait grows the history, so it continues as a new run when
 * Temporal suggests it, carrying the checkpoint along.
 */
import {
  allHandlersFinished,
  CancellationScope,
  condition,
  log,
  makeContinueAsNewFunc,
  patched,
  workflowInfo,
} from '@temporalio/workflow';
import type { JobState } from '../../activities/gitlab/client';
import type {
  CheckpointOutcome,
  CheckpointTiming,
  CheckpointWorkflowInput,
  ResumedCheckpoint,
} from '../../common/checkpoint';
import { describeFailure, retryAfterOf } from '../../common/fail';
import { PATCH_POLL_SPREAD } from '../../common/patches';
import { gitlabPoller, poller } from './activities';
import type { CheckpointRun } from './run';

export async function waitForJobEnd(run: CheckpointRun): Promise<void> {
  const { timing } = run.input;
  const cp = run.checkpoint;
  const ended = () => run.jobEnd !== null;
  const ttlAt = cp.createdAt.getTime() + timing.ttlSeconds * 1000;
  // The project to poll, or null when nobody polls this job.
  const pollProject = cp.pollJobs ? cp.projectId : null;
  let nextPollAt = cp.createdAt.getTime() + firstPollAfterSeconds(timing, pollProject) * 1000;
  run.doing(
    `waiting for the job (TTL at ${new Date(ttlAt).toISOString()}${pollProject !== null ? '; polling GitLab' : ''})`,
  );
  for (;;) {
    const now = Date.now();
    if (ended()) return;
    if (now >= ttlAt) {
      run.jobEnd = 'ttl';
      return;
    }
    const wakeAt = pollProject !== null ? Math.min(ttlAt, nextPollAt) : ttlAt;
    if (await condition(ended, Math.max(1, wakeAt - now))) return;
    if (pollProject !== null && Date.now() >= nextPollAt) {
      nextPollAt = Date.now() + timing.pollerIntervalSeconds * 1000;
      const polled = await pollOnce(run, pollProject, ttlAt);
      if (polled.status !== undefined && polled.status !== 'running' && !ended()) {
        run.jobEnd = { status: polled.status, source: 'poller', at: new Date() };
        return;
      }
      // The CI system said how long to wait (429): the next poll comes no sooner.
      if (polled.waitMs !== undefined)
        nextPollAt = Math.max(nextPollAt, Date.now() + polled.waitMs);
    }
    if (workflowInfo().continueAsNewSuggested && !ended()) {
      await condition(allHandlersFinished);
      if (ended()) return;
      await continueAsNew(run);
    }
  }
}

/**
 * When a checkpoint's first job-status poll comes, after its creation. Since
 * PATCH_POLL_SPREAD at a random moment within one poll interval after the
 * minimum age: checkpoints created together (a pipeline's jobs starting at
 * once, a fleet coming back) would otherwise poll together, every interval,
 * and their burst of polls would fill the GitLab queue past its budget for
 * as long as it takes to drain, so every reset meanwhile waits for a token
 * (bench/scale.ts measures it). Before it: at the minimum age or one
 * interval, whichever is later. Math.random is the workflow's seeded one.
 */
function firstPollAfterSeconds(timing: CheckpointTiming, pollProject: string | null): number {
  // Asked only when polling: a run that never polls keeps its history as before.
  if (pollProject !== null && patched(PATCH_POLL_SPREAD))
    return timing.pollerMinAgeSeconds + Math.random() * timing.pollerIntervalSeconds;
  return Math.max(timing.pollerMinAgeSeconds, timing.pollerIntervalSeconds);
}

/**
 * One job-status poll. GitHub runners' polls go to the plain `poller` (they
 * are not GitLab's to budget); GitLab's wait on the GitLab poll queue.
 */
async function pollOnce(
  run: CheckpointRun,
  projectId: string,
  ttlAt: number,
): Promise<{ status?: JobState; waitMs?: number }> {
  if (run.runner.pause?.kind !== 'github') return pollWithinBudget(run, projectId, ttlAt);
  try {
    return {
      status: await poller.pollJobStatus({
        projectId,
        jobId: run.checkpoint.jobId,
        runnerId: run.runner.runnerId,
      }),
    };
  } catch (err) {
    log.warn('job status poll failed; will poll again', { error: describeFailure(err) });
    return {};
  }
}

/**
 * One job-status poll on the GitLab queue, behind every reset's requests
 * (priority 5). The poll may wait in that queue for the GitLab budget, up to
 * one poll interval; meanwhile a finalize or the TTL ends the wait at once (the
 * poll is cancelled), so a queued poll never delays a reset. Returns the
 * job's state if GitLab told it, and the wait GitLab asked for after a 429.
 */
async function pollWithinBudget(
  run: CheckpointRun,
  projectId: string,
  ttlAt: number,
): Promise<{ status?: JobState; waitMs?: number }> {
  const cp = run.checkpoint;
  const scope = new CancellationScope();
  let settled = false;
  const out: { status?: JobState; waitMs?: number } = {};
  void scope
    .run(() =>
      gitlabPoller(run.input.timing.pollerIntervalSeconds).pollJobStatus({
        projectId,
        jobId: cp.jobId,
        runnerId: run.runner.runnerId,
      }),
    )
    .then(
      (status) => {
        out.status = status;
      },
      (err: unknown) => {
        out.waitMs = retryAfterOf(err);
        if (!scope.consideredCancelled)
          log.warn('job status poll failed; will poll again', { error: describeFailure(err) });
      },
    )
    .finally(() => {
      settled = true;
    });
  await condition(() => settled || run.jobEnd !== null, Math.max(1, ttlAt - Date.now()));
  if (!settled) scope.cancel();
  return out;
}

/** Carries the waiting checkpoint into a fresh run (same workflow id, same search attributes). */
async function continueAsNew(run: CheckpointRun): Promise<never> {
  const cp = run.checkpoint;
  const resume: ResumedCheckpoint = {
    name: cp.name,
    jobId: cp.jobId,
    projectId: cp.projectId,
    checkpointId: cp.id,
    createdAt: cp.createdAt.toISOString(),
    pollJobs: cp.pollJobs,
  };
  return makeContinueAsNewFunc<(input: CheckpointWorkflowInput) => Promise<CheckpointOutcome>>({
    typedSearchAttributes: workflowInfo().typedSearchAttributes,
  })({ runner: run.runner, timing: run.input.timing, resume });
}
