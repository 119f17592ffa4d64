/**
 * The checkpoint workflow's activity profiles: every timeout and retry policy
 * it uses, named once, with why. Timeouts and retry policies are not checked
 * on replay, so changing them is safe for running checkpoints; a task queue
 * or priority is part of the command and is gated (gitlabPlacement).
 */
import {
  patched,
  proxyActivities,
  proxyLocalActivities,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../../activities';
import { NON_RETRYABLE_TYPES } from '../../common/failures';
import { GITLAB_PRIORITY, gitlabPollTaskQueue, gitlabTaskQueue } from '../../common/gitlab-budget';
import { PATCH_GITLAB_PRIORITY } from '../../common/patches';

/**
 * Bookkeeping in Postgres (record, transition, note): must eventually
 * succeed, so it retries without limit (backing off). Local activities: a
 * few milliseconds of SQL that need no task queue round trip and no
 * workflow task of their own (the result is a marker in the history). Safe
 * because each is idempotent (a worker that dies mid-call leaves its
 * workflow task to time out, and the next worker runs it again) and keyed
 * like a remote one (activityKey: the call's id is the same counter). Only
 * for calls that touch Postgres alone: anything slow or external would hold
 * the workflow task open.
 *
 * Hazard: unlike a remote activity's, a local one's retries show in the
 * history. While Postgres is down, backoffs past 10 s are timers (a few
 * events per attempt, so ~600 events an hour at the 30 s maximum), and a
 * message that arrives during an attempt waits for it (at most the
 * connection timeout) or for the workflow task's heartbeat.
 */
export const records = proxyLocalActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  localRetryThreshold: '10 seconds',
  retry: {
    initialInterval: '500 milliseconds',
    maximumInterval: '30 seconds',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
});

/**
 * The pause before a reset (GitLab: pause; GitHub: remove labels). Bounded:
 * while GitLab is down it hands out no jobs either, so after ~2 minutes the
 * reset goes ahead unpaused. A rate limit asks the next attempt to wait
 * (GitHub's primary limit: until its reset, up to an hour): the
 * schedule-to-close bound keeps that from holding the reset back longer.
 */
const PAUSER: ActivityOptions = {
  startToCloseTimeout: '1 minute',
  scheduleToCloseTimeout: '5 minutes',
  retry: {
    maximumAttempts: 6,
    initialInterval: '1 second',
    maximumInterval: '30 seconds',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
};
export const pauser = proxyActivities<Activities>(PAUSER);

/**
 * GitLab unpause: the runner must not stay paused, so it retries without
 * limit; only a permanent answer (runner gone, no permission) stops it.
 */
const UNPAUSER: ActivityOptions = {
  startToCloseTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '5 minutes',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
};
export const unpauser = proxyActivities<Activities>(UNPAUSER);

/**
 * Where a GitLab activity goes: since 2.0.0 (PATCH_GITLAB_PRIORITY) the one
 * GitLab queue at `priorityKey`, whose rate limit is the fleet's GitLab
 * budget and whose priority puts a reset's requests ahead of polls; a run
 * replaying a 1.1 history keeps 1.1's queue (`legacyQueue`) without one.
 * Only callable inside a workflow (the queues are named after its own).
 */
export function gitlabPlacement(
  priorityKey: number,
  legacyQueue: (taskQueue: string) => string,
): Pick<ActivityOptions, 'taskQueue' | 'priority'> {
  return patched(PATCH_GITLAB_PRIORITY)
    ? gitlabBudget(priorityKey)
    : { taskQueue: legacyQueue(workflowInfo().taskQueue) };
}

/**
 * The GitLab queue at `priorityKey`, ungated: for workflow paths that are
 * new in 2.0.0 (no 1.1 history can reach them), so they need no marker.
 * Only callable inside a workflow.
 */
export function gitlabBudget(priorityKey: number): Pick<ActivityOptions, 'taskQueue' | 'priority'> {
  return { taskQueue: gitlabTaskQueue(workflowInfo().taskQueue), priority: { priorityKey } };
}

/**
 * `pauser` on the GitLab queue: its attempts wait there for a token, inside
 * the same 5-minute bound. A 429's wait (nextRetryDelay) is honoured.
 */
export function gitlabPauser() {
  return proxyActivities<Activities>({
    ...PAUSER,
    ...gitlabPlacement(GITLAB_PRIORITY.reset, gitlabTaskQueue),
  });
}

/** `unpauser` on the GitLab queue; a 429 delays the next attempt as asked. */
export function gitlabUnpauser() {
  return proxyActivities<Activities>({
    ...UNPAUSER,
    ...gitlabPlacement(GITLAB_PRIORITY.reset, gitlabTaskQueue),
  });
}

/**
 * Job-status polls on the GitLab queue, behind everything else: one attempt,
 * and no longer in the queue than one poll interval. When the polls of
 * the fleet exceed what the budget leaves them they wait in that queue; a
 * poll that waited a whole interval is dropped (schedule-to-start timeout,
 * not retried) and the loop simply polls again, so polls never pile up and
 * the effective interval stretches to what the budget allows. A 429 is not
 * retried here either: the loop waits as long as GitLab asked.
 */
export function gitlabPoller(intervalSeconds: number) {
  return proxyActivities<Activities>({
    ...gitlabPlacement(GITLAB_PRIORITY.poll, gitlabPollTaskQueue),
    scheduleToStartTimeout: Math.max(1000, Math.round(intervalSeconds * 1000)),
    startToCloseTimeout: '1 minute',
    retry: { maximumAttempts: 1, nonRetryableErrorTypes: NON_RETRYABLE_TYPES },
  });
}

/**
 * Job-status polls: a failed poll is skipped, the next one comes soon anyway.
 * The wait wakes for a finalize only between polls, so a rate-limited poll
 * (whose retry waits as long as GitLab or GitHub asks) gives up after two
 * minutes instead of holding the job's end back.
 */
export const poller = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  scheduleToCloseTimeout: '2 minutes',
  retry: {
    maximumAttempts: 3,
    initialInterval: '1 second',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
});

function stepOptions(
  maxAttempts: number,
  startToCloseTimeout: ActivityOptions['startToCloseTimeout'],
): ActivityOptions {
  return {
    startToCloseTimeout,
    // Long steps heartbeat every few seconds: a crashed worker's step is retried elsewhere soon after.
    heartbeatTimeout: '15 seconds',
    // The retry budget of a reset step; exhausting it hands the checkpoint to an operator.
    retry: {
      maximumAttempts: maxAttempts,
      initialInterval: '1 second',
      maximumInterval: '30 seconds',
      nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
    },
  };
}

/**
 * Reset and cleanup steps (snapshot, stop, rollback, start, commands): a
 * budget of `maxAttempts` each. Proxmox tasks and agent commands have their
 * own deadlines inside the activity; 15 minutes only bounds a stuck attempt.
 */
export function stepActivities(maxAttempts: number) {
  return proxyActivities<Activities>(stepOptions(maxAttempts, '15 minutes'));
}

/**
 * The readiness gate: the activity polls until the worker's
 * READINESS_TIMEOUT_SECONDS and then fails as NotReady; the heartbeat timeout
 * catches a dead worker. The hour only bounds an attempt that hangs yet beats.
 */
export function readinessActivities(maxAttempts: number) {
  return proxyActivities<Activities>(stepOptions(maxAttempts, '1 hour'));
}
