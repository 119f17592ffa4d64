/**
 * Waiting for the job to end: the first of a finalize (update handler), a
 * finished GitLab job (polled by the worker, when it polls this job) or the
 * TTL. A long wait grows the history, so it continues as a new run when
 * Temporal suggests it, carrying the checkpoint along.
 */
import {
  allHandlersFinished,
  condition,
  log,
  makeContinueAsNewFunc,
  workflowInfo,
} from '@temporalio/workflow';
import type {
  CheckpointOutcome,
  CheckpointWorkflowInput,
  ResumedCheckpoint,
} from '../../common/checkpoint';
import { describeFailure } from '../../common/fail';
import { poller } from './activities';
import type { CheckpointRun } from './run';

export async function waitForJobEnd(run: CheckpointRun): Promise<void> {
  const { timing } = run.input;
  const cp = run.checkpoint;
  const ended = () => run.jobEnd !== null;
  const ttlAt = cp.createdAt.getTime() + timing.ttlSeconds * 1000;
  // The project to poll, or null when nobody polls this job.
  const pollProject = cp.pollJobs ? cp.projectId : null;
  let nextPollAt =
    cp.createdAt.getTime() +
    Math.max(timing.pollerMinAgeSeconds, timing.pollerIntervalSeconds) * 1000;
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
      try {
        const status = await poller.pollJobStatus({
          projectId: pollProject,
          jobId: cp.jobId,
          runnerId: run.runner.runnerId,
        });
        if (status !== 'running' && !ended()) {
          run.jobEnd = { status, source: 'poller', at: new Date() };
          return;
        }
      } catch (err) {
        log.warn('job status poll failed; will poll again', { error: describeFailure(err) });
      }
    }
    if (workflowInfo().continueAsNewSuggested && !ended()) {
      await condition(allHandlersFinished);
      if (ended()) return;
      await continueAsNew(run);
    }
  }
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
