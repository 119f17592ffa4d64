/**
 * One GitLab rate budget for the whole fleet. Every GitLab request a worker
 * makes runs in an activity of its own on one of two task queues beside the
 * main one, and each activity attempt makes at most one request (except the
 * unpause, which reads the runner back: two, more only to undo a pause that
 * landed late, see unpauseRunner); Temporal's
 * matching service hands out those queues' activity tasks no faster than
 * their `maxTaskQueueActivitiesPerSecond`, however many workers poll them.
 *
 * - `<taskQueue>-gitlab`: pause checks, pauses, unpauses, the reconciler's
 *   checks and unpauses. A reset waits on these.
 * - `<taskQueue>-gitlab-poll`: job-status polls, a fallback for a missed
 *   finalize. A backlog of them must never hold up a reset, hence a queue
 *   (and a share of the budget) of their own.
 *
 * Workflow-safe: the workflows name the queues, the worker polls them.
 */

/** The queue of pause checks, pauses and unpauses. */
export function gitlabTaskQueue(taskQueue: string): string {
  return `${taskQueue}-gitlab`;
}

/** The queue of job-status polls. */
export function gitlabPollTaskQueue(taskQueue: string): string {
  return `${taskQueue}-gitlab-poll`;
}

/**
 * The rates of the two queues: polls get `pollShare` of the budget, the
 * rest goes to pauses and unpauses. They add up to `maxRps`.
 */
export function gitlabQueueRates(
  maxRps: number,
  pollShare: number,
): { urgent: number; poll: number } {
  const poll = maxRps * pollShare;
  return { urgent: maxRps - poll, poll };
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
