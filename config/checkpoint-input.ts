import type { CheckpointWorkflowInput, PauseTarget } from '../common/checkpoint';
import { SA_BACKEND, SA_RUNNER_ID } from '../common/search-attributes';
import type { RunnerConfig } from './inventory';
import type { Settings } from './settings';

/**
 * The input of a new checkpoint run (without `resume`): the runner's
 * non-secret facts and the durations the workflow reads, from the settings
 * of the process that starts it (the API for a create, the worker for an
 * adoption by the reconciler).
 */
export function checkpointInput(runner: RunnerConfig, s: Settings): CheckpointWorkflowInput {
  return {
    runner: {
      runnerId: runner.runner_id,
      backend: runner.backend,
      gitlabRunnerId: runner.gitlab_runner_id ?? null,
      pause: pauseTarget(runner),
      resetOnSuccess: runner.reset_on_success,
      holdOnFailureSeconds: runner.hold_on_failure_seconds,
    },
    timing: {
      ttlSeconds: s.checkpointTtlSeconds,
      pollerIntervalSeconds: s.pollerIntervalSeconds,
      pollerMinAgeSeconds: s.pollerMinAgeSeconds,
      cooldownSeconds: s.finalizeCooldownSeconds,
      unpauseRetrySeconds: s.unpauseRetrySeconds,
      finalizeAckSeconds: s.finalizeAckSeconds,
      resetMaxAttempts: s.resetMaxAttempts,
    },
  };
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
