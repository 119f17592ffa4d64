/**
 * Baseline refresh and fleet rollout (docs/operators.md, "Baseline refresh"): names and
 * inputs shared by the API, the worker and the workflows. Import-free, so
 * workflows may use it.
 */

export const BASELINE_REFRESH_WORKFLOW = 'baselineRefreshWorkflow';
export const BASELINE_ROLLOUT_WORKFLOW = 'baselineRolloutWorkflow';

/** How many e2epool baselines a refresh keeps by default (the new one and the one before). */
export const DEFAULT_BASELINE_KEEP = 2;

/** The name prefix of the snapshots a refresh takes; only these are ever pruned. */
export const BASELINE_PREFIX = 'e2epool-baseline-';

/** A refresh's workflow id: one refresh per runner at a time (a second start is refused). */
export function baselineWorkflowId(runnerId: string): string {
  return `${BASELINE_PREFIX}${runnerId}`;
}

/** A rollout's workflow id (`stamp`: the API's UTC time and a random suffix). */
export function rolloutWorkflowId(stamp: string): string {
  return `e2epool-baseline-rollout-${stamp}`;
}

/**
 * The snapshot name of a refresh at `at` (workflow time): `e2epool-baseline-`
 * and the UTC yyyymmddhhmmss, 31 characters (Proxmox allows 40).
 */
export function baselineSnapshotName(at: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return (
    BASELINE_PREFIX +
    p(at.getUTCFullYear(), 4) +
    p(at.getUTCMonth() + 1) +
    p(at.getUTCDate()) +
    p(at.getUTCHours()) +
    p(at.getUTCMinutes()) +
    p(at.getUTCSeconds())
  );
}

/** Whether a snapshot is one a refresh took (its name, exactly). */
export function isRefreshBaseline(name: string): boolean {
  return /^e2epool-baseline-\d{14}$/.test(name);
}

/** What a refresh is started with. */
export interface BaselineRefreshInput {
  runnerId: string;
  /** Run in the guest (`sh -c`) on the current baseline; none: the new baseline is the old one re-taken. */
  updateCmd?: string;
  /** How many e2epool baselines to keep (the new one included), at least 1. */
  keep: number;
  /** How often to look whether the runner's active checkpoint has ended. */
  pollSeconds: number;
}

/** What a refresh ended with. */
export interface BaselineRefreshResult {
  runnerId: string;
  baseline: string;
  previous: string | null;
  deleted: string[];
}

/** What a rollout is started with (the API resolved `"all"` to ids). */
export interface BaselineRolloutInput {
  runners: string[];
  maxUnavailable: number;
  canary?: string;
  updateCmd?: string;
  keep: number;
  pollSeconds: number;
}

/** What a rollout ended with: which runners were refreshed, which failed, which were not started. */
export interface BaselineRolloutResult {
  refreshed: string[];
  failed: Array<{ runnerId: string; error: string }>;
  notStarted: string[];
}
