/**
 * Golden baseline and proof of reset, as the checkpoint workflow runs them
 * (docs/operators.md, "Golden baseline", "Proof of reset"). Everything here issues
 * commands only behind PATCH_PROOF_OF_RESET, and only for a runner plan that
 * carries the 1.1.0 fields: a run started before them takes the 1.0.0 path.
 */
import { patched } from '@temporalio/workflow';
import { snapshotNameFor, type VerifyResetMode } from '../../common/checkpoint';
import { fail } from '../../common/fail';
import { PATCH_PROOF_OF_RESET } from '../../common/patches';
import { stepActivities } from './activities';
import type { CheckpointRun } from './run';

/** What the run's plan asks of the proof, before the gate: nothing for an older input. */
function planned(run: CheckpointRun): { baseline: string | null; verify: VerifyResetMode } {
  const { baselineSnapshot, verifyReset, backend } = run.runner;
  return {
    baseline: backend === 'proxmox' && baselineSnapshot ? baselineSnapshot : null,
    verify: verifyReset ?? 'off',
  };
}

/**
 * Whether this run takes the 1.1.0 path. `patched()` is asked only when the
 * plan wants something of it, so a plan without the fields (or with nothing
 * to do: bare metal without verify_cmd) leaves no marker and no command.
 */
function gated(run: CheckpointRun): boolean {
  const p = planned(run);
  if (p.baseline === null && p.verify === 'off') return false;
  return patched(PATCH_PROOF_OF_RESET);
}

/** The golden baseline this run resets to, or null (a snapshot per checkpoint). */
export function goldenBaseline(run: CheckpointRun): string | null {
  const { baseline } = planned(run);
  return baseline !== null && gated(run) ? baseline : null;
}

/** The reset's proof mode, `off` for a run on the 1.0.0 path. */
function verifyMode(run: CheckpointRun): VerifyResetMode {
  const { verify } = planned(run);
  return verify !== 'off' && gated(run) ? verify : 'off';
}

/** The snapshot a Proxmox reset rolls back to: the baseline, or the checkpoint's own. */
export function rollbackTarget(run: CheckpointRun): { snapshotName: string; golden: boolean } {
  const golden = goldenBaseline(run);
  return golden !== null
    ? { snapshotName: golden, golden: true }
    : { snapshotName: snapshotNameFor(run.checkpoint.name), golden: false };
}

/**
 * Create, Proxmox: writes the canary once the restore point exists (the
 * checkpoint's snapshot, or the baseline). The activity records a guest
 * agent that cannot take it as "unverifiable", and fails the create only
 * when the proof is `required`.
 */
export async function writeCanary(run: CheckpointRun): Promise<void> {
  const mode = verifyMode(run);
  if (run.runner.backend !== 'proxmox' || mode === 'off' || !run.runner.canaryPath) return;
  run.doing('canary');
  await stepActivities(run.input.timing.resetMaxAttempts).writeCanary({
    ...run.step(),
    round: 0,
    mode,
    canaryPath: run.runner.canaryPath,
  });
}

/**
 * Reset, after readiness: proves the reset. A failed proof (the activity has
 * quarantined the runner), or none under `required`, fails the round: the
 * checkpoint goes to needs_attention with the proof's detail, still paused.
 */
export async function verifyReset(run: CheckpointRun, rolledBackTo: string | null): Promise<void> {
  const mode = verifyMode(run);
  if (mode === 'off') return;
  run.doing(run.resetRounds > 0 ? `verify_reset (round ${run.resetRounds + 1})` : 'verify_reset');
  const proof = await stepActivities(run.input.timing.resetMaxAttempts).verifyReset({
    ...run.step(),
    mode,
    ...(rolledBackTo !== null ? { snapshotName: rolledBackTo } : {}),
    ...(run.runner.canaryPath ? { canaryPath: run.runner.canaryPath } : {}),
  });
  run.verification = { verified: proof.verified, detail: proof.detail };
  if (proof.verified === false) throw fail('ResetNotVerified', proof.detail);
  if (proof.verified === null && mode === 'required')
    throw fail('ResetNotVerified', `not verifiable, and verify_reset is required: ${proof.detail}`);
}
