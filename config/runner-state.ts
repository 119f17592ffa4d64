/**
 * What e2epool sets on a runner at run time, wherever the runner is defined
 * (the `runner_state` table, see store/runner-state.ts): its quarantine, the
 * baseline a refresh made current, and a refresh's drain of an
 * inventory-file runner.
 */

/** Who quarantined a runner: a failed reset verification, a failure streak, an operator, or a refresh that could not restore. */
export type QuarantineSource = 'verification' | 'failure_streak' | 'operator' | 'refresh';

/** Why and since when a runner is quarantined (see docs/protocol.md#runner-registry). */
export interface Quarantine {
  reason: string;
  source: QuarantineSource;
  at: Date;
}

/** One runner's row of `runner_state`; a runner without one has the defaults (RunnerState.none). */
export interface RunnerState {
  runnerId: string;
  /** Null unless quarantined. */
  quarantine: Quarantine | null;
  /** The snapshot a refresh made the baseline; current only while `baselineFrom` is still configured. */
  refreshedBaseline: string | null;
  /** The configured `baseline_snapshot` the refresh replaced (null: none was configured). */
  baselineFrom: string | null;
  /** A refresh drains an inventory-file runner here (a registry runner's drain is `runners.draining`). */
  draining: boolean;
}

/** A runner's state when it has no row. */
export function noState(runnerId: string): RunnerState {
  return {
    runnerId,
    quarantine: null,
    refreshedBaseline: null,
    baselineFrom: null,
    draining: false,
  };
}

/**
 * The snapshot the runner's resets roll back to now: the refresh's while the
 * configured `baseline_snapshot` is the one it replaced, else the configured
 * one. So an operator who changes `baseline_snapshot` (a PATCH, or the
 * inventory file) makes that value current again.
 */
export function currentBaselineOf(
  state: Pick<RunnerState, 'refreshedBaseline' | 'baselineFrom'> | undefined,
  configured: string | undefined | null,
): string | null {
  const conf = configured ?? null;
  if (state?.refreshedBaseline && state.baselineFrom === conf) return state.refreshedBaseline;
  return conf;
}
