/**
 * The end of every run that paused: the cooldown (runner still paused), the
 * unpause (GitLab) or label restore (GitHub), and the terminal state.
 */
import { condition, log, sleep } from '@temporalio/workflow';
import { describePauseTarget, type PauseTarget } from '../../common/checkpoint';
import { describeFailure } from '../../common/fail';
import type { CheckpointState } from '../../common/states';
import { gitlabUnpauser, unpauser } from './activities';
import type { CheckpointRun } from './run';

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
  if (o.cooldown) await cooldownWhilePaused(run);
  const target = run.runnerPaused ? run.runner.pause : null;
  let leftPaused = false;
  if (target) {
    run.doing('unpause');
    leftPaused = !(await unpauseUntilDone(run, target));
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
      ...(leftPaused && target?.kind === 'gitlab'
        ? { leftPausedGitlabRunnerId: target.gitlabRunnerId }
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

/** What an unpause of one kind of pause target does, says and asks of an operator. */
interface Unpause {
  /** One attempt (the activity retries transient failures itself). */
  send(): Promise<unknown>;
  /** What stays true while it fails: `GitLab runner 42 is still paused`. */
  stuck: string;
  /** The operator's fix. */
  fix: string;
  /** What `release` leaves behind. */
  leaves: string;
  /** The worker's log line while it fails. */
  logLine: string;
  /** The current details while it fails. */
  waiting: string;
  /** run.lastError once an operator released it. */
  released: string;
}

function unpauseOf(run: CheckpointRun, target: PauseTarget): Unpause {
  // A run ending reset_failed (released, or canceled mid-reset) says so: the
  // unpause checks the failure streak first, so a runner it quarantines stays
  // paused. Only the activity's input grows; the commands stay the same.
  const ending = run.outcome === 'reset_failed' ? { endsResetFailed: true } : {};
  if (target.kind === 'gitlab') {
    const { gitlabRunnerId } = target;
    return {
      send: () => gitlabUnpauser().unpauseRunner({ ...run.step(), gitlabRunnerId, ...ending }),
      stuck: `GitLab runner ${gitlabRunnerId} is still paused: unpausing it failed`,
      fix: 'Fix GitLab access (E2EPOOL_GITLAB_TOKEN, its permissions, the runner)',
      leaves: 'leaves it paused',
      logLine: 'unpause failed; the runner stays paused until it works or an operator releases it',
      waiting: 'the unpause failed',
      released: `released by an operator with GitLab runner ${gitlabRunnerId} still paused`,
    };
  }
  const what = withoutLabels(target, run.removedLabels);
  return {
    send: () =>
      unpauser.restoreRunnerLabels({
        ...run.step(),
        target,
        labels: run.removedLabels,
        ...ending,
      }),
    stuck: `${what}: putting them back failed`,
    fix: "Fix GitHub access (E2EPOOL_GITHUB_TOKEN needs admin rights on the repository, or the organization's self-hosted runners permission; the runner must still exist)",
    leaves: 'leaves the labels off',
    logLine:
      'restoring the GitHub runner labels failed; the runner gets no e2e job until it works or an operator releases it',
    waiting: 'putting the runner labels back failed',
    released: `released by an operator with ${what}`,
  };
}

/**
 * Unpauses (GitLab) or puts the removed labels back (GitHub); a refusal no
 * retry fixes (token revoked, no permission, runner gone) parks the
 * checkpoint in needs_attention, saying what failed and how to fix it, and
 * tries again every unpauseRetrySeconds or at once on `retry`. Returns false
 * when an operator released it still paused.
 */
async function unpauseUntilDone(run: CheckpointRun, target: PauseTarget): Promise<boolean> {
  const retrySeconds = run.input.timing.unpauseRetrySeconds;
  const u = unpauseOf(run, target);
  for (;;) {
    try {
      await u.send();
      return true;
    } catch (err) {
      run.lastError =
        `${u.stuck} (${describeFailure(err)}). ${u.fix}, then signal retry; ` +
        `release gives up and ${u.leaves}. Retried every ${retrySeconds}s.`;
      log.error(u.logLine, { error: run.lastError });
      run.phase = 'needs_attention';
      run.doing(
        `needs_attention: ${u.waiting}; tried again every ${retrySeconds}s (signal retry or release)`,
      );
      run.operatorDecision = null;
      await run.moveTo('needs_attention', ['created', 'finalize_queued', 'needs_attention'], {
        errorDetail: run.lastError,
      });
      await condition(() => run.operatorDecision !== null, `${retrySeconds} seconds`);
      if (run.operatorDecision === 'release') {
        run.lastError = u.released;
        return false;
      }
    }
  }
}

/** `GitHub runner 7 of acme/app without its labels ["e2e"]`. */
function withoutLabels(target: PauseTarget & { kind: 'github' }, labels: string[]): string {
  return `${describePauseTarget(target)} without its labels ${JSON.stringify(labels)}`;
}
