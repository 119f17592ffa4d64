/**
 * The `patched()` gates of workflow changes since 1.0.0 (CONTRIBUTING.md,
 * "Workflow changes"). A run whose history has no marker of a gate takes
 * the path it took before the change; each name is written into histories,
 * so it never changes.
 */

/**
 * 1.1.0, golden baseline and proof of reset (docs/operators.md, "Golden
 * baseline", "Proof of reset"). For a run whose runner plan carries them:
 * - create: a Proxmox runner with a `baselineSnapshot` takes no snapshot of
 *   its own; with a canary (`verifyReset` not `off`), `writeCanary` runs
 *   after the restore point exists and before the create answers;
 * - reset: a runner with a baseline is always reset (success too) to it,
 *   and the baseline is never deleted; after readiness, `verifyReset` runs
 *   unless `verifyReset` is `off`, and a failed proof (or none, when it is
 *   `required`) fails the round into needs_attention.
 * A plan without those fields (every run started before 1.1.0) takes the
 * 1.0.0 path whether or not the marker is there.
 */
export const PATCH_PROOF_OF_RESET = 'proof-of-reset';

/**
 * 2.0.0, one GitLab queue ordered by task priority (docs/operators.md, "GitLab rate
 * budget", common/gitlab-budget.ts): a run with the marker schedules every
 * GitLab activity on `<taskQueue>-gitlab` with a priority (pause check,
 * pause, unpause 1; the reconciler's 3; job-status polls 5). Without it
 * (replaying a 1.1 history) pauses and unpauses go to that queue without a
 * priority and polls to `<taskQueue>-gitlab-poll`. Asked where each GitLab
 * activity is scheduled, so a 1.1 run switches at its first GitLab activity
 * after the upgrade; the worker keeps polling the 1.1 poll queue for the
 * polls scheduled before it.
 */
export const PATCH_GITLAB_PRIORITY = 'gitlab-priority';

/**
 * 2.0.0, baseline refresh (docs/operators.md, "Baseline refresh"): once the runner's
 * active checkpoint has ended, the refresh pauses it in its CI system
 * (`refreshHoldRunner`; GitLab pause, GitHub labels) so no job meets the
 * drain's 423; after the new (or, on a failure, the restored) baseline is up
 * it waits for the runner's e2epool agent to reconnect (`refreshAwaitAgent`,
 * as a reset's readiness does) before undraining, then unpauses it
 * (`refreshReleaseRunner`; a quarantined runner stays paused). A run without
 * the marker takes the 1.1.0 path.
 */
export const PATCH_REFRESH_HOLD_AND_AGENT = 'refresh-hold-and-agent';

/**
 * 2.0.0, polls spread over an interval (workflows/checkpoint/waiting.ts,
 * firstPollAfterSeconds): a run that polls its job's status asks for its
 * first poll at a random moment within one poll interval after the minimum
 * age, instead of at the later of the two, so checkpoints created together
 * do not poll together. Asked once per run that polls, before its first
 * poll's timer; a run without the marker keeps the old first poll.
 */
export const PATCH_POLL_SPREAD = 'poll-spread';
