/**
 * After the job and its pause: reset (or clean up) the machine until it is
 * ready, and hand a reset that keeps failing to an operator.
 */
import { condition, isCancellation, log } from '@temporalio/workflow';
import { snapshotNameFor } from '../../common/checkpoint';
import { describeFailure } from '../../common/fail';
import type { CheckpointState } from '../../common/states';
import { readinessActivities, stepActivities } from './activities';
import { goldenBaseline, rollbackTarget, verifyReset } from './proof';
import type { CheckpointRun } from './run';

/**
 * Resets or cleans up until it works, or an operator releases the runner.
 * A round that exhausts its retries parks the checkpoint in needs_attention
 * (runner still paused) until the `retry` or `release` signal.
 */
export async function resetUntilDone(run: CheckpointRun): Promise<CheckpointState> {
  const ttlExpired = run.jobEnd === 'ttl';
  // A golden baseline is the only clean state there is: every job end resets
  // to it, a TTL's too, and each ends `reset` (finalize_status keeps how).
  const golden = goldenBaseline(run) !== null;
  const mode =
    ttlExpired || run.finalizeStatus !== 'success' || run.runner.resetOnSuccess || golden
      ? 'reset'
      : 'cleanup';
  const success: CheckpointState =
    ttlExpired && !golden ? 'gc_reset' : mode === 'reset' ? 'reset' : 'deleted';
  for (;;) {
    try {
      await (mode === 'reset' ? resetRunner(run) : cleanupRunner(run));
      return success;
    } catch (err) {
      if (isCancellation(err)) throw err;
      run.lastError = describeFailure(err);
      log.error('reset failed after its retries; waiting for an operator', {
        error: run.lastError,
      });
      run.phase = 'needs_attention';
      run.doing(
        'needs_attention: the reset failed; waiting for an operator (signal retry or release)',
      );
      run.operatorDecision = null;
      await run.moveTo('needs_attention', ['finalize_queued'], {
        errorDetail: run.lastError,
        resetRounds: run.resetRounds + 1,
      });
      await condition(() => run.operatorDecision !== null);
      run.resetRounds += 1;
      if (run.operatorDecision === 'release') return 'reset_failed';
      run.phase = 'finalizing';
      await run.moveTo('finalize_queued', ['needs_attention']);
    }
  }
}

/** Says which reset step runs now; a round after an operator's `retry` says so. */
function doingStep(run: CheckpointRun, step: string): void {
  run.doing(run.resetRounds > 0 ? `${step} (round ${run.resetRounds + 1})` : step);
}

async function resetRunner(run: CheckpointRun): Promise<void> {
  const { timing } = run.input;
  const steps = stepActivities(timing.resetMaxAttempts);
  const readiness = readinessActivities(timing.resetMaxAttempts);
  if (run.runner.backend === 'proxmox') {
    const { snapshotName, golden } = rollbackTarget(run);
    doingStep(run, 'stop');
    const stopped = await steps.stopVm(run.step());
    doingStep(run, 'rollback');
    await steps.rollbackVm({ ...run.step(), snapshotName });
    doingStep(run, 'start');
    await steps.startVm(run.step());
    // The agent's session from before the stop does not count: the VM is
    // ready when a new session of its agent is (one clock: agent_sessions').
    doingStep(run, 'readiness');
    await readiness.waitUntilReady({ ...run.step(), staleSession: stopped.staleSession });
    // Before the snapshot goes: the proof reads which snapshot the VM descends from.
    await verifyReset(run, snapshotName);
    if (golden) return; // the baseline is never deleted by a reset
    doingStep(run, 'delete_snapshot');
    await steps.removeSnapshot({ ...run.step(), snapshotName });
  } else {
    doingStep(run, 'reset_cmd');
    await steps.runRunnerCommand({ ...run.step(), which: 'reset_cmd' });
    doingStep(run, 'readiness');
    await readiness.waitUntilReady(run.step());
    await verifyReset(run, null);
  }
}

async function cleanupRunner(run: CheckpointRun): Promise<void> {
  const { timing } = run.input;
  const steps = stepActivities(timing.resetMaxAttempts);
  doingStep(run, 'cleanup_cmd');
  await steps.runRunnerCommand({ ...run.step(), which: 'cleanup_cmd' });
  if (run.runner.backend === 'proxmox') {
    doingStep(run, 'delete_snapshot');
    await steps.removeSnapshot({
      ...run.step(),
      snapshotName: snapshotNameFor(run.checkpoint.name),
    });
  }
  doingStep(run, 'readiness');
  await readinessActivities(timing.resetMaxAttempts).waitUntilReady(run.step());
}
