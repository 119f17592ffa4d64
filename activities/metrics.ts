import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { registerBuildInfoMetric } from '../common/build-info-metric';

/** How the job's end was detected: a finalize call (hook, agent), the GitLab poller, or the TTL. */
export type JobEndPath = 'finalize' | 'poller' | 'ttl';

/** The GitLab calls e2epool makes, as counted in `e2epool_gitlab_requests_total{op}`. */
export type GitLabOp =
  'job_status' | 'runner_get' | 'runner_pause' | 'runner_unpause' | 'token_self';

/** The GitHub calls e2epool makes, as counted in `e2epool_github_requests_total{op}`. */
export type GitHubOp = 'job_status' | 'runner_labels' | 'label_remove' | 'label_add';

/** Steps take from a GitLab call (0.05 s) to a Proxmox task or reset script (15 min). */
const STEP_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900];

/** Job end → clean: a few seconds for a quick script, an hour or more past an operator. */
const CLEAN_BUCKETS = [1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];

/**
 * What the worker process measures, in a registry of its own (not the global
 * one: tests run several workers in one process). Served by the worker's
 * metrics endpoint (E2EPOOL_WORKER_METRICS_PORT).
 */
export class WorkerMetrics {
  readonly registry = new Registry();

  /** One observation per attempt of a side-effect step, as it ends. */
  readonly stepDuration = new Histogram({
    name: 'e2epool_step_duration_seconds',
    help: "Duration of each attempt of a side-effect step (snapshot, stop, rollback, start, reset_cmd, cleanup_cmd, readiness, delete_snapshot, pause_check, pause, unpause), by the runner's backend and the attempt's result (ok, skipped, error).",
    labelNames: ['backend', 'step', 'result'] as const,
    buckets: STEP_BUCKETS,
    registers: [this.registry],
  });

  readonly timeToClean = new Histogram({
    name: 'e2epool_time_to_clean_seconds',
    help: "From the job's end to its checkpoint's terminal state with the runner reset (or cleaned up), ready and unpaused; path: how the job's end was detected (finalize, poller, ttl: from the TTL's expiry).",
    labelNames: ['backend', 'path'] as const,
    buckets: CLEAN_BUCKETS,
    registers: [this.registry],
  });

  readonly runnerPausedSeconds = new Counter({
    name: 'e2epool_runner_paused_seconds_total',
    help: 'Seconds each runner spent paused in GitLab (in GitHub: without its pause labels) by e2epool, added when e2epool unpauses it (its checkpoint, or the reconciler).',
    labelNames: ['runner_id'] as const,
    registers: [this.registry],
  });

  readonly gitlabRequests = new Counter({
    name: 'e2epool_gitlab_requests_total',
    help: 'GitLab API requests by operation and HTTP status (code="error": no response, e.g. a timeout or a refused connection).',
    labelNames: ['op', 'code'] as const,
    registers: [this.registry],
  });

  readonly githubRequests = new Counter({
    name: 'e2epool_github_requests_total',
    help: 'GitHub API requests by operation (job_status, runner_labels, label_remove, label_add) and HTTP status (code="error": no response).',
    labelNames: ['op', 'code'] as const,
    registers: [this.registry],
  });

  /**
   * One per checkpoint round that reset a runner and reached its proof
   * (docs/operators.md, "Proof of reset"): counted by the verifyReset activity when it
   * records the round's first answer (checkpoints.verify_round), so a retried
   * attempt does not count twice. Resets with verify_reset off are not counted.
   */
  readonly resets = new Counter({
    name: 'e2epool_resets_total',
    help: 'Resets whose proof ran (verify_reset not off), by the runner\'s backend and the answer: verified="true" (verified), "false" (the check failed: needs_attention, runner quarantined), "unverified" (not verifiable, e.g. no guest agent).',
    labelNames: ['backend', 'verified'] as const,
    registers: [this.registry],
  });

  /** Set by the failure-streak rule (activities/quarantine.ts). */
  readonly quarantineCapReached = new Gauge({
    name: 'e2epool_quarantine_cap_reached',
    help: '1 when the last failure streak this worker saw did not quarantine its runner because E2EPOOL_QUARANTINE_MAX_PERCENT of the fleet (at least one runner) is quarantined for failure streaks already; 0 once a streak quarantine fits again.',
    registers: [this.registry],
  });

  constructor() {
    this.registry.setDefaultLabels({ service: 'e2epool-worker' });
    collectDefaultMetrics({ register: this.registry });
    registerBuildInfoMetric(this.registry);
  }

  /** Records one step attempt; `backend` is the runner's (`unknown` once it left the inventory). */
  observeStep(backend: string | null | undefined, step: string, result: string, seconds: number) {
    this.stepDuration.observe({ backend: backend ?? 'unknown', step, result }, seconds);
  }

  /**
   * Runs a step that writes no operation-log row (withOperation observes the
   * others) and records its attempt: `ok`, or `error` when it throws.
   */
  async timeStep<T>(
    backend: string | null | undefined,
    step: string,
    fn: () => Promise<T>,
  ): Promise<T> {
    const start = performance.now();
    try {
      const value = await fn();
      this.observeStep(backend, step, 'ok', secondsSince(start));
      return value;
    } catch (err) {
      this.observeStep(backend, step, 'error', secondsSince(start));
      throw err;
    }
  }
}

/** Seconds since a `performance.now()` reading: monotonic, unlike Date. */
export function secondsSince(start: number): number {
  return (performance.now() - start) / 1000;
}
