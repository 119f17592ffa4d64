/**
 * After the job: pause the GitLab runner, reset (or clean up) the machine
 * until it is ready, and hand a reset that keeps failing to an operator;
 * finally unpause and record the terminal state, whatever ended the run.
 */
import { condition, isCancellation, log } from '@temporalio/workflow';
import { snapshotNameFor } from '../../common/checkpoint';
import { describeFailure } from '../../common/fail';
import type { CheckpointState } from '../../common/states';
import { pauser, readinessActivities, stepActivities, unpauser } from './activities';
import type { CheckpointRun } from './run';

/**
 * Pauses the runner so GitLab hands it no job during the reset. A failed
 * pause does not stop the reset (see `pauser`); it may have landed, so it is
 * undone like a successful one.
 */
export async function pauseRunner(run: CheckpointRun): Promise<void> {
  const gitlabRunnerId = run.runner.gitlabRunnerId;
  if (gitlabRunnerId !== null) {
    try {
      const paused = await pauser.pauseRunner({ ...run.step(), gitlabRunnerId });
      run.runnerPaused = paused.pausedByUs;
    } catch (err) {
      run.runnerPaused = true;
      log.warn('pausing the GitLab runner failed; resetting anyway', {
        error: describeFailure(err),
      });
    }
  }
  run.pauseSettled = true;
}

/**
 * Resets or cleans up until it works, or an operator releases the runner.
 * A round that exhausts its retries parks the checkpoint in needs_attention
 * (runner still paused) until the `retry` or `release` signal.
 */
export async function resetUntilDone(run: CheckpointRun): Promise<CheckpointState> {
  const ttlExpired = run.jobEnd === 'ttl';
  const mode =
    ttlExpired || run.finalizeStatus !== 'success' || run.runner.resetOnSuccess
      ? 'reset'
      : 'cleanup';
  const success: CheckpointState = ttlExpired ? 'gc_reset' : mode === 'reset' ? 'reset' : 'deleted';
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

async function resetRunner(run: CheckpointRun): Promise<void> {
  const { timing } = run.input;
  const steps = stepActivities(timing.resetMaxAttempts);
  const readiness = readinessActivities(timing.resetMaxAttempts);
  if (run.runner.backend === 'proxmox') {
    const snapshotName = snapshotNameFor(run.checkpoint.name);
    await steps.stopVm(run.step());
    await steps.rollbackVm({ ...run.step(), snapshotName });
    // The agent must reconnect after this instant: the VM's boot.
    const bootedAt = new Date().toISOString();
    await steps.startVm(run.step());
    await readiness.waitUntilReady({ ...run.step(), since: bootedAt });
    await steps.removeSnapshot({ ...run.step(), snapshotName });
  } else {
    await steps.runRunnerCommand({ ...run.step(), which: 'reset_cmd' });
    await readiness.waitUntilReady({ ...run.step(), since: null });
  }
}

async function cleanupRunner(run: CheckpointRun): Promise<void> {
  const { timing } = run.input;
  const steps = stepActivities(timing.resetMaxAttempts);
  await steps.runRunnerCommand({ ...run.step(), which: 'cleanup_cmd' });
  if (run.runner.backend === 'proxmox') {
    await steps.removeSnapshot({
      ...run.step(),
      snapshotName: snapshotNameFor(run.checkpoint.name),
    });
  }
  await readinessActivities(timing.resetMaxAttempts).waitUntilReady({ ...run.step(), since: null });
}

/**
 * Every pause is paired with an unpause, whatever ended the checkpoint; then
 * the terminal state, if one was decided. Runs in a non-cancellable scope.
 */
export async function releaseRunner(run: CheckpointRun): Promise<void> {
  const gitlabRunnerId = run.runner.gitlabRunnerId;
  if (run.runnerPaused && gitlabRunnerId !== null) {
    await unpauser.unpauseRunner({ ...run.step(), gitlabRunnerId });
    run.runnerPaused = false;
  }
  if (run.outcome) {
    await run.moveTo(run.outcome, ['created', 'finalize_queued', 'needs_attention'], {
      errorDetail: run.outcome === 'reset_failed' ? run.lastError : null,
    });
  }
}
