import type { CheckpointWorkflowInput, PauseTarget, RunnerPlan } from '../common/checkpoint';
import { gitlabPollRate } from '../common/gitlab-budget';
import { SA_BACKEND, SA_RUNNER_ID } from '../common/search-attributes';
import type { Inventory } from './inventory';
import { canaryPathOf, verifyModeOf, type RunnerConfig } from './runner-schema';
import type { Settings } from './settings';

/**
 * The input of a new checkpoint run (without `resume`): the runner's
 * non-secret facts and the durations the workflow reads, from the settings
 * of the process that starts it (the API for a create, the worker for an
 * adoption by the reconciler) and the size of the fleet it belongs to.
 */
export function checkpointInput(
  runner: RunnerConfig,
  s: Settings,
  fleet: Pick<Inventory, 'gitlabRunnerCount'> & Partial<Pick<Inventory, 'currentBaseline'>>,
): CheckpointWorkflowInput {
  return {
    runner: {
      runnerId: runner.runner_id,
      backend: runner.backend,
      pause: pauseTarget(runner),
      resetOnSuccess: runner.reset_on_success,
      holdOnFailureSeconds: runner.hold_on_failure_seconds,
      ...proofPlan(runner, fleet.currentBaseline?.(runner.runner_id)),
    },
    timing: {
      ttlSeconds: s.checkpointTtlSeconds,
      pollerIntervalSeconds:
        runner.ci_adapter === 'github'
          ? s.pollerIntervalSeconds
          : budgetedPollIntervalSeconds(s, fleet.gitlabRunnerCount),
      pollerMinAgeSeconds: s.pollerMinAgeSeconds,
      cooldownSeconds: s.finalizeCooldownSeconds,
      unpauseRetrySeconds: s.unpauseRetrySeconds,
      finalizeAckSeconds: s.finalizeAckSeconds,
      resetMaxAttempts: s.resetMaxAttempts,
    },
  };
}

/**
 * The runner's reset proof and baseline, defaults resolved (docs/operators.md,
 * "Proof of reset"). The baseline is the registry's current one (a refresh's,
 * docs/operators.md, "Baseline refresh") when set, else the configured
 * `baseline_snapshot`.
 */
function proofPlan(
  runner: RunnerConfig,
  current: string | undefined,
): Pick<RunnerPlan, 'baselineSnapshot' | 'verifyReset' | 'canaryPath'> {
  const verifyReset = verifyModeOf(runner);
  if (runner.backend !== 'proxmox') return { verifyReset };
  const baseline = current ?? runner.baseline_snapshot;
  return {
    verifyReset,
    canaryPath: canaryPathOf(runner),
    ...(baseline ? { baselineSnapshot: baseline } : {}),
  };
}

/**
 * A GitLab runner's job-status poll interval: E2EPOOL_POLLER_INTERVAL_SECONDS,
 * or longer when the fleet's GitLab runners, each polling that often, would
 * ask for more than the polls' share of the GitLab budget. Polling faster
 * than the budget gains nothing (a poll past what the resets leave waits in
 * the GitLab queue, behind them, and is dropped), but every wake of a waiting checkpoint is a workflow task
 * on the worker: at 1,000 runners and the default budget, 200 s instead of
 * 20 s is a tenth of the wakes, which is what lets a worker keep a bounded
 * workflow cache (E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS) without replaying
 * all the time. Fixed per run (it is in the input, so replay sees the same).
 */
export function budgetedPollIntervalSeconds(s: Settings, gitlabRunners: number): number {
  return Math.max(
    s.pollerIntervalSeconds,
    gitlabRunners / gitlabPollRate(s.gitlabMaxRps, s.gitlabPollShare),
  );
}

/** What keeps jobs off the runner during a reset, from its inventory entry (validated together there). */
export function pauseTarget(runner: RunnerConfig): PauseTarget | null {
  if (runner.ci_adapter === 'github') {
    const scope = runner.github_repo
      ? { repo: runner.github_repo }
      : runner.github_org
        ? { org: runner.github_org }
        : null;
    if (runner.github_runner_id === undefined || !scope) return null;
    return {
      kind: 'github',
      githubRunnerId: runner.github_runner_id,
      scope,
      labels: [...(runner.github_pause_labels ?? [])],
    };
  }
  return runner.gitlab_runner_id !== undefined
    ? { kind: 'gitlab', gitlabRunnerId: runner.gitlab_runner_id }
    : null;
}

/** The search attributes a checkpoint run starts with (the workflow adds the rest). */
export function runnerSearchAttributes(runner: RunnerConfig) {
  return [
    { key: SA_RUNNER_ID, value: runner.runner_id },
    { key: SA_BACKEND, value: runner.backend },
  ];
}
