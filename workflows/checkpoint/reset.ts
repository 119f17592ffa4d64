/**
 * After the job: pause the runner in its CI system (GitLab: pause it;
 * GitHub: remove its pause labels), reset (or clean up) the machine until it
 * is ready, and hand a reset that keeps failing to an operator; finally
 * unpause and record the terminal state, whatever ended the run.
 */
import { condition, isCancellation, log, patched, sleep } from '@temporalio/workflow';
import type { PauseLog } from '../../activities/records';
import {
  COOLDOWN_BEFORE_UNPAUSE_PATCH,
  GITHUB_LABEL_PAUSE_PATCH,
  PAUSE_CHECK_PATCH,
  PAUSE_SENT,
  READINESS_ONE_CLOCK_PATCH,
  UNPAUSE_ATTENTION_PATCH,
  describePauseTarget,
  labelsRemovedDetail,
  pauseTargetOf,
  snapshotNameFor,
  type GitHubPauseTarget,
  type PauseTarget,
} from '../../common/checkpoint';
import { describeFailure, failureTypeOf } from '../../common/fail';
import { GITLAB_BUDGET_PATCH } from '../../common/gitlab-budget';
import type { CheckpointState } from '../../common/states';
import {
  gitlabPauser,
  gitlabUnpauser,
  pauser,
  readinessActivities,
  stepActivities,
  unpauser,
} from './activities';
import type { CheckpointRun } from './run';

/**
 * What keeps jobs off this run's runner. GitHub's label pause is newer than
 * the workflow: a run an older worker started (no marker in its history)
 * went on without it, and replays so (GITHUB_LABEL_PAUSE_PATCH). GitLab
 * targets never touch the patch, so their histories are unchanged.
 */
function activePauseTarget(run: CheckpointRun): PauseTarget | null {
  const target = pauseTargetOf(run.runner);
  if (target?.kind === 'github' && !patched(GITHUB_LABEL_PAUSE_PATCH)) return null;
  return target;
}

/**
 * The runner's labels (`has`) among its pause labels (`wanted`), in the
 * runner's own spelling: GitHub matches labels without regard to case, and
 * the spelling it knows is the one to remove and to put back.
 */
function carried(wanted: string[], has: string[]): string[] {
  return has.filter((h) => wanted.some((w) => h.toLowerCase() === w.toLowerCase()));
}

/**
 * Pauses the runner so its CI system hands it no job during the reset. A
 * failed pause does not stop the reset (see `pauser`); one that may have
 * landed is undone like a successful one.
 */
export async function pauseRunner(run: CheckpointRun): Promise<void> {
  const target = activePauseTarget(run);
  if (target?.kind === 'github') {
    run.doing('pause');
    try {
      const { removed } = await pauser.pauseRunnerLabels({ ...run.step(), target });
      run.removedLabels = removed;
      run.runnerPaused = removed.length > 0;
    } catch (err) {
      // Labels it may have removed are named in the checkpoint's log: the
      // restore puts back those, and never one that is not named there.
      run.runnerPaused = failureTypeOf(err) !== 'PauseCheckFailed';
      log.warn('removing the GitHub runner labels failed; resetting anyway', {
        error: describeFailure(err),
      });
    }
  }
  const gitlabRunnerId = target?.kind === 'gitlab' ? target.gitlabRunnerId : null;
  if (gitlabRunnerId !== null) {
    run.doing('pause');
    try {
      const paused = patched(GITLAB_BUDGET_PATCH)
        ? await pauseWithinBudget(run, gitlabRunnerId)
        : await pauser.pauseRunner({ ...run.step(), gitlabRunnerId });
      run.runnerPaused = paused.pausedByUs;
    } catch (err) {
      // Undo a pause that may have landed, but never "undo" one that was
      // never sent: the runner may be paused by someone else.
      const neverSent = failureTypeOf(err) === 'PauseCheckFailed' && patched(PAUSE_CHECK_PATCH);
      run.runnerPaused = !neverSent;
      log.warn('pausing the GitLab runner failed; resetting anyway', {
        error: describeFailure(err),
      });
    }
  }
  run.pauseSettled = true;
}

/**
 * pauseRunner's GitLab pause on the GitLab queue (GITLAB_BUDGET_PATCH), one
 * request per activity: ask, then pause with the answer. A failure to ask is
 * PauseCheckFailed, as from pauseRunner itself: nothing was sent.
 */
async function pauseWithinBudget(
  run: CheckpointRun,
  gitlabRunnerId: number,
): Promise<{ pausedByUs: boolean }> {
  const gitlab = gitlabPauser();
  const { paused } = await gitlab.checkRunnerPaused({
    gitlabRunnerId,
    runnerId: run.runner.runnerId,
  });
  return gitlab.pauseRunner({
    ...run.step(),
    gitlabRunnerId,
    ...(paused !== null ? { knownPaused: paused } : {}),
  });
}

/**
 * Pauses the runner with no Postgres write on the way (PAUSE_FIRST_PATCH):
 * ask GitLab, decide here (this history is the record that the pause is
 * e2epool's), send. Returns the pause's log row, written with the
 * `finalize_queued` transition that follows.
 */
export async function pauseBeforeBookkeeping(run: CheckpointRun): Promise<PauseLog | undefined> {
  const target = activePauseTarget(run);
  if (target === null) {
    run.pauseSettled = true;
    return undefined;
  }
  run.doing('pause');
  const startedAt = new Date().toISOString();
  const entry = (result: PauseLog['result'], detail: string, error: string | null = null) => ({
    result,
    detail,
    error,
    startedAt,
    finishedAt: new Date().toISOString(),
  });
  if (target.kind === 'github') {
    const row = await removeLabelsBeforeBookkeeping(run, target, entry);
    run.pauseSettled = true;
    return row;
  }
  const gitlabRunnerId = target.gitlabRunnerId;
  // Since GITLAB_BUDGET_PATCH both requests wait for the fleet's GitLab budget.
  const gitlab = patched(GITLAB_BUDGET_PATCH) ? gitlabPauser() : pauser;
  let row: PauseLog;
  try {
    const { paused } = await gitlab.checkRunnerPaused({
      gitlabRunnerId,
      runnerId: run.runner.runnerId,
    });
    if (paused === null) {
      row = entry('skipped', 'E2EPOOL_GITLAB_URL is not set: runner not paused');
    } else if (paused) {
      row = entry(
        'skipped',
        `GitLab runner ${gitlabRunnerId} was already paused by someone else: e2epool will not unpause it`,
      );
    } else {
      // From here the pause is ours, whether or not the request lands.
      run.runnerPaused = true;
      try {
        await gitlab.sendPause({ gitlabRunnerId, runnerId: run.runner.runnerId });
        row = entry('ok', `paused GitLab runner ${gitlabRunnerId}`);
      } catch (err) {
        row = entry('error', PAUSE_SENT, describeFailure(err));
        log.warn('pausing the GitLab runner failed; resetting anyway', {
          error: describeFailure(err),
        });
      }
    }
  } catch (err) {
    row = entry('error', 'GitLab runner not paused', describeFailure(err));
    log.warn('cannot tell whether the GitLab runner is paused; resetting without pausing it', {
      error: describeFailure(err),
    });
  }
  run.pauseSettled = true;
  return row;
}

/**
 * The GitHub "pause" before any Postgres write: read the runner's labels,
 * decide here which of its pause labels e2epool removes (only those it
 * carries: one already gone was removed by someone else, and is never put
 * back), remove them. Returns the `pause` log row; its detail names the
 * labels, so the restore and the reconciler can read them back.
 */
async function removeLabelsBeforeBookkeeping(
  run: CheckpointRun,
  target: GitHubPauseTarget,
  entry: (result: PauseLog['result'], detail: string, error?: string | null) => PauseLog,
): Promise<PauseLog> {
  const runnerId = run.runner.runnerId;
  const what = describePauseTarget(target);
  let labels: string[] | null;
  try {
    labels = (await pauser.checkRunnerLabels({ target, runnerId })).labels;
  } catch (err) {
    log.warn('cannot read the GitHub runner labels; resetting without removing any', {
      error: describeFailure(err),
    });
    return entry('error', 'GitHub runner labels not removed', describeFailure(err));
  }
  if (labels === null) {
    return entry('skipped', 'E2EPOOL_GITHUB_TOKEN is not set: runner labels not removed');
  }
  const present = carried(target.labels, labels);
  if (present.length === 0) {
    return entry(
      'skipped',
      `${what} carries none of the labels ${JSON.stringify(target.labels)}: someone else removed them; e2epool will not put them back`,
    );
  }
  // From here the removal is ours, whether or not the requests land.
  run.runnerPaused = true;
  run.removedLabels = present;
  try {
    const { removed } = await pauser.removeRunnerLabels({ target, labels: present, runnerId });
    // A label gone by the time of its request was removed by someone else: not ours.
    run.removedLabels = removed;
    run.runnerPaused = removed.length > 0;
    return removed.length > 0
      ? entry('ok', labelsRemovedDetail(target, removed))
      : entry(
          'skipped',
          `${what} lost the labels ${JSON.stringify(present)} meanwhile: e2epool will not put them back`,
        );
  } catch (err) {
    log.warn('removing the GitHub runner labels failed; resetting anyway', {
      error: describeFailure(err),
    });
    return entry('error', labelsRemovedDetail(target, present, true), describeFailure(err));
  }
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
    const snapshotName = snapshotNameFor(run.checkpoint.name);
    doingStep(run, 'stop');
    const stopped = await steps.stopVm(run.step());
    doingStep(run, 'rollback');
    await steps.rollbackVm({ ...run.step(), snapshotName });
    // Before the patch: the agent must reconnect after this instant, the VM's
    // boot (but this clock is not the one agent_sessions.connected_at uses).
    const bootedAt = new Date().toISOString();
    doingStep(run, 'start');
    await steps.startVm(run.step());
    // Since the patch: the agent's session from before the stop does not count
    // (absent when a worker without that result ran stopVm: `since` decides).
    const staleSession = patched(READINESS_ONE_CLOCK_PATCH)
      ? (stopped as Partial<typeof stopped> | undefined)?.staleSession
      : undefined;
    doingStep(run, 'readiness');
    await readiness.waitUntilReady({
      ...run.step(),
      since: bootedAt,
      ...(staleSession !== undefined ? { staleSession } : {}),
    });
    doingStep(run, 'delete_snapshot');
    await steps.removeSnapshot({ ...run.step(), snapshotName });
  } else {
    doingStep(run, 'reset_cmd');
    await steps.runRunnerCommand({ ...run.step(), which: 'reset_cmd' });
    doingStep(run, 'readiness');
    await readiness.waitUntilReady({ ...run.step(), since: null });
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
  await readinessActivities(timing.resetMaxAttempts).waitUntilReady({ ...run.step(), since: null });
}

/** Terminal states whose runner was reset or cleaned up and passed readiness. */
const CLEAN_STATES: readonly CheckpointState[] = ['reset', 'deleted', 'gc_reset'];

/**
 * Every pause is paired with an unpause, whatever ended the checkpoint; then
 * the terminal state, if one was decided. Runs in a non-cancellable scope.
 * `cooldown`: the reset or cleanup ended (not an operator's cancel), so the
 * cooldown runs first, with the runner still paused (see cooldownWhilePaused).
 */
export async function releaseRunner(
  run: CheckpointRun,
  o: { cooldown: boolean } = { cooldown: false },
): Promise<void> {
  if (o.cooldown && patched(COOLDOWN_BEFORE_UNPAUSE_PATCH)) await cooldownWhilePaused(run);
  // Only a run that paused calls this: a GitHub target's patch is decided by then.
  const target = run.runnerPaused ? activePauseTarget(run) : null;
  const gitlabRunnerId = target?.kind === 'gitlab' ? target.gitlabRunnerId : null;
  let leftPaused = false;
  if (run.runnerPaused && target?.kind === 'github') {
    run.doing('unpause');
    leftPaused = !(await restoreUntilDone(run, target));
    run.runnerPaused = false;
  }
  if (run.runnerPaused && gitlabRunnerId !== null) {
    run.doing('unpause');
    if (patched(UNPAUSE_ATTENTION_PATCH))
      leftPaused = !(await unpauseUntilDone(run, gitlabRunnerId));
    else await unpauser.unpauseRunner({ ...run.step(), gitlabRunnerId });
    run.runnerPaused = false;
  }
  // An unpause that needed an operator is done: creates are "closing" again, not 409.
  if (run.cooledDown && run.phase === 'needs_attention') run.phase = 'finalizing';
  if (run.outcome) {
    run.doing(`${run.outcome}: recording the end`);
    // Clean: reset or cleaned up, ready, and not left paused by an operator.
    const clean = CLEAN_STATES.includes(run.outcome) && !leftPaused;
    const jobEnd = clean ? run.jobEndSeen() : null;
    await run.moveTo(run.outcome, ['created', 'finalize_queued', 'needs_attention'], {
      errorDetail: run.outcome === 'reset_failed' || leftPaused ? run.lastError : null,
      ...(leftPaused && gitlabRunnerId !== null
        ? { leftPausedGitlabRunnerId: gitlabRunnerId }
        : {}),
      ...(leftPaused && target?.kind === 'github'
        ? { leftPausedWhat: withoutLabels(target, run.removedLabels) }
        : {}),
      ...(jobEnd ? { timeToClean: jobEnd } : {}),
    });
  }
}

/**
 * The cooldown (timing.cooldownSeconds) between the end of the reset or
 * cleanup and the unpause. While it runs the runner is still paused, so its
 * CI system hands it no job that would meet the cooldown; a create that comes
 * anyway (by hand, or a runner e2epool does not pause) gets 429 with the
 * seconds left. After it, until the run closes, creates are told to try again
 * (RunClosing, 503) rather than 409: the unpause may land before this run
 * hears of it, and the next job's create may come at that instant.
 */
async function cooldownWhilePaused(run: CheckpointRun): Promise<void> {
  const { cooldownSeconds } = run.input.timing;
  run.phase = 'cooldown';
  run.cooldownUntil = new Date(Date.now() + cooldownSeconds * 1000);
  run.doing(`cooldown until ${run.cooldownUntil.toISOString()} (runner still paused)`);
  if (cooldownSeconds > 0) await sleep(`${cooldownSeconds} seconds`);
  run.cooledDown = true;
  run.phase = 'finalizing';
}

/**
 * Unpauses; a refusal no retry fixes (token revoked, no permission, runner
 * gone) parks the checkpoint in needs_attention, saying what failed and how
 * to fix it, and tries again every unpauseRetrySeconds or at once on
 * `retry`. Returns false when an operator released it still paused.
 */
async function unpauseUntilDone(run: CheckpointRun, gitlabRunnerId: number): Promise<boolean> {
  const retrySeconds = run.input.timing.unpauseRetrySeconds ?? 300;
  for (;;) {
    try {
      // Asked each round: a run whose unpause kept failing across an upgrade moves to the budget.
      const gitlab = patched(GITLAB_BUDGET_PATCH) ? gitlabUnpauser() : unpauser;
      await gitlab.unpauseRunner({ ...run.step(), gitlabRunnerId });
      return true;
    } catch (err) {
      run.lastError =
        `GitLab runner ${gitlabRunnerId} is still paused: unpausing it failed (${describeFailure(err)}). ` +
        `Fix GitLab access (E2EPOOL_GITLAB_TOKEN, its permissions, the runner), then signal retry; ` +
        `release gives up and leaves it paused. Retried every ${retrySeconds}s.`;
      log.error(
        'unpause failed; the runner stays paused until it works or an operator releases it',
        {
          error: run.lastError,
        },
      );
      run.phase = 'needs_attention';
      run.doing(
        `needs_attention: the unpause failed; tried again every ${retrySeconds}s (signal retry or release)`,
      );
      run.operatorDecision = null;
      await run.moveTo('needs_attention', ['created', 'finalize_queued', 'needs_attention'], {
        errorDetail: run.lastError,
      });
      await condition(() => run.operatorDecision !== null, `${retrySeconds} seconds`);
      if (run.operatorDecision === 'release') {
        run.lastError = `released by an operator with GitLab runner ${gitlabRunnerId} still paused`;
        return false;
      }
    }
  }
}

/** `GitHub runner 7 of acme/app without its labels ["e2e"]`. */
function withoutLabels(target: GitHubPauseTarget, labels: string[]): string {
  return `${describePauseTarget(target)} without its labels ${JSON.stringify(labels)}`;
}

/**
 * Puts the removed labels back, as unpauseUntilDone unpauses: a refusal no
 * retry fixes (token without admin rights, runner gone) parks the checkpoint
 * in needs_attention, saying what failed and how to fix it, and tries again
 * every unpauseRetrySeconds or at once on `retry`. Returns false when an
 * operator released it with the labels still off.
 */
async function restoreUntilDone(run: CheckpointRun, target: GitHubPauseTarget): Promise<boolean> {
  const retrySeconds = run.input.timing.unpauseRetrySeconds ?? 300;
  const what = withoutLabels(target, run.removedLabels);
  for (;;) {
    try {
      await unpauser.restoreRunnerLabels({ ...run.step(), target, labels: run.removedLabels });
      return true;
    } catch (err) {
      run.lastError =
        `${what}: putting them back failed (${describeFailure(err)}). ` +
        `Fix GitHub access (E2EPOOL_GITHUB_TOKEN needs admin rights on the repository, or the organization's self-hosted runners permission; the runner must still exist), then signal retry; ` +
        `release gives up and leaves the labels off. Retried every ${retrySeconds}s.`;
      log.error(
        'restoring the GitHub runner labels failed; the runner gets no e2e job until it works or an operator releases it',
        { error: run.lastError },
      );
      run.phase = 'needs_attention';
      run.doing(
        `needs_attention: putting the runner labels back failed; tried again every ${retrySeconds}s (signal retry or release)`,
      );
      run.operatorDecision = null;
      await run.moveTo('needs_attention', ['created', 'finalize_queued', 'needs_attention'], {
        errorDetail: run.lastError,
      });
      await condition(() => run.operatorDecision !== null, `${retrySeconds} seconds`);
      if (run.operatorDecision === 'release') {
        run.lastError = `released by an operator with ${what}`;
        return false;
      }
    }
  }
}
