/**
 * One GitLab rate budget for the whole fleet. Every GitLab request a worker
 * makes runs in an activity of its own on the GitLab task queue beside the
 * main one, and each activity attempt makes at most one request (except the
 * unpause, which reads the runner back: two, more only to undo a pause that
 * landed late, see unpauseRunner; and an idle runner's hold, activities/
 * runner-hold.ts: check then pause, two); Temporal's matching service hands out
 * that queue's activity tasks no faster than its
 * `maxTaskQueueActivitiesPerSecond`, however many workers poll it.
 *
 * Since 2.0.0 (PATCH_GITLAB_PRIORITY) everything shares `<taskQueue>-gitlab`
 * and Temporal's task priority orders it (docs/operators.md, "GitLab rate budget"):
 * what a reset waits on (pause check, pause, unpause) goes first, the
 * reconciler next, job-status polls last. A reset never waits behind polls
 * and gets the whole budget while polls are idle. That needs the server's
 * dynamic config `matching.useNewMatcher`; without it the queue is first in,
 * first out (still within the budget).
 *
 * Runs started on 1.1 put their polls on `<taskQueue>-gitlab-poll` (and
 * everything else on `<taskQueue>-gitlab`, as now): the worker keeps polling
 * it, at a twentieth of the budget, for those polls. Nothing new is ever
 * scheduled there (patched() is true outside replay), and a poll is never
 * retried and waits at most one poll interval, so it is empty one poll
 * interval after the last 1.1 worker stopped; a later release drops it.
 *
 * Workflow-safe: the workflows name the queues, the worker polls them.
 */

/** The GitLab queue: every GitLab activity (1.1: all but the job-status polls). */
export function gitlabTaskQueue(taskQueue: string): string {
  return `${taskQueue}-gitlab`;
}

/** 1.1's queue of job-status polls, for runs started before 2.0.0 (see above). */
export function gitlabPollTaskQueue(taskQueue: string): string {
  return `${taskQueue}-gitlab-poll`;
}

/**
 * Priority keys on the GitLab queue (Temporal: 1 is the most urgent, 5 the
 * least, 3 the default of a task without one, e.g. a 1.1 run's pause).
 */
export const GITLAB_PRIORITY = {
  /**
   * Pause check, pause, unpause: a reset (and its runner's next job) waits on
   * them. Also an idle runner's hold: a baseline refresh waits on its pause
   * (and the runner's next job on its unpause); a quarantine's pause keeps
   * GitLab from handing the runner jobs that meet 423 meanwhile.
   */
  reset: 1,
  /** The reconciler's checks and unpauses: a runner left paused, no one waiting on a reset. */
  reconcile: 3,
  /** Job-status polls: a fallback for a missed finalize, can wait. */
  poll: 5,
} as const;

/** The share of the budget the worker gives 1.1's poll queue while it keeps polling it. */
const LEGACY_POLL_SHARE = 1 / 20;

/**
 * The rates the worker sets on the GitLab queue and on 1.1's poll queue.
 * They add up to `maxRps`, so the budget holds while both have work.
 */
export function gitlabQueueRates(maxRps: number): { gitlab: number; legacyPoll: number } {
  const legacyPoll = maxRps * LEGACY_POLL_SHARE;
  return { gitlab: maxRps - legacyPoll, legacyPoll };
}

/**
 * The request rate the fleet's job-status polls are sized for: `pollShare`
 * of the budget (E2EPOOL_GITLAB_POLL_SHARE). Polls get whatever the
 * resets leave of the queue's rate; sizing the poll interval to this share
 * keeps room for resets and keeps polls from being dropped in the queue.
 */
export function gitlabPollRate(maxRps: number, pollShare: number): number {
  return maxRps * pollShare;
}

/**
 * Temporal's limiter is a token bucket per task-queue partition: rate
 * `r / P` and burst `max(1, ceil(r / P))` with P read partitions
 * (`matching.numTaskqueueReadPartitions`, default 4). So besides the steady
 * rate a queue can hand out up to `P * ceil(r / P)` tasks at once after a
 * quiet spell. This is that burst.
 */
export function temporalBurst(rate: number, partitions: number): number {
  return partitions * Math.max(1, Math.ceil(rate / partitions));
}
