import type { CheckpointWorkflowInput } from '../common/checkpoint';
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

/** The search attributes a checkpoint run starts with (the workflow adds the rest). */
export function runnerSearchAttributes(runner: RunnerConfig) {
  return [
    { key: SA_RUNNER_ID, value: runner.runner_id },
    { key: SA_BACKEND, value: runner.backend },
  ];
}
