/**
 * The pause before a reset: keep the runner's CI system from handing it a
 * job (GitLab: pause the runner; GitHub: remove its pause labels). A run
 * pauses before its first Postgres write (pauseBeforeBookkeeping); a run the
 * reconciler adopted pauses after it (pauseRunner).
 */
import { log, upsertMemo } from '@temporalio/workflow';
import type { PauseLog } from '../../activities/records';
import {
  PAUSE_SENT,
  describePauseTarget,
  labelsRemovedDetail,
  type CheckpointMemo,
  type GitHubPauseTarget,
  type PauseTarget,
} from '../../common/checkpoint';
import { describeFailure, failureTypeOf } from '../../common/fail';
import { gitlabPauser, pauser } from './activities';
import type { CheckpointRun } from './run';

/**
 * The runner's labels (`has`) among its pause labels (`wanted`), in the
 * runner's own spelling: GitHub matches labels without regard to case, and
 * the spelling it knows is the one to remove and to put back.
 */
function carried(wanted: string[], has: string[]): string[] {
  return has.filter((h) => wanted.some((w) => h.toLowerCase() === w.toLowerCase()));
}

/**
 * Pauses the runner of an adopted checkpoint, whose earlier run may have
 * paused it already (the pause activities read what Postgres recorded). A
 * failed pause does not stop the reset (see `pauser`); one that may have
 * landed is undone like a successful one.
 */
export async function pauseRunner(run: CheckpointRun): Promise<void> {
  const target = run.runner.pause;
  if (target?.kind === 'github') {
    run.doing('pause');
    try {
      const { removed } = await pauser.pauseRunnerLabels({ ...run.step(), target });
      run.removedLabels = removed;
      run.runnerPaused = removed.length > 0;
    } catch (err) {
      // Labels it may have removed are recorded in runner_pauses: the
      // restore puts back those, and never one that is not recorded there.
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
      run.runnerPaused = (await pauseWithinBudget(run, gitlabRunnerId)).pausedByUs;
    } catch (err) {
      // Undo a pause that may have landed, but never "undo" one that was
      // never sent: the runner may be paused by someone else.
      run.runnerPaused = failureTypeOf(err) !== 'PauseCheckFailed';
      log.warn('pausing the GitLab runner failed; resetting anyway', {
        error: describeFailure(err),
      });
    }
  }
  run.pauseSettled = true;
}

/**
 * pauseRunner's GitLab pause on the GitLab queue, one request per activity: ask, then pause with the answer. A failure to ask is
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
 * Pauses the runner with no Postgres write on the way: ask GitLab, decide
 * here, note the pause in the run's memo (rememberPause), send. Returns the pause's log row, written with the
 * `finalize_queued` transition that follows.
 */
export async function pauseBeforeBookkeeping(run: CheckpointRun): Promise<PauseLog | undefined> {
  const target = run.runner.pause;
  if (target === null) {
    run.pauseSettled = true;
    return undefined;
  }
  run.doing('pause');
  const startedAt = new Date().toISOString();
  const entry: Entry = (result, detail, error = null, fact) => ({
    result,
    detail,
    error,
    startedAt,
    finishedAt: new Date().toISOString(),
    ...(fact ? { fact } : {}),
  });
  if (target.kind === 'github') {
    const row = await removeLabelsBeforeBookkeeping(run, target, entry);
    run.pauseSettled = true;
    return row;
  }
  const gitlabRunnerId = target.gitlabRunnerId;
  // Both requests wait for the fleet's GitLab budget.
  const gitlab = gitlabPauser();
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
      rememberPause(run, target, []);
      try {
        await gitlab.sendPause({ gitlabRunnerId, runnerId: run.runner.runnerId });
        row = entry('ok', `paused GitLab runner ${gitlabRunnerId}`, null, {
          target,
          state: 'paused',
        });
      } catch (err) {
        row = entry('error', PAUSE_SENT, describeFailure(err), { target, state: 'sent' });
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

/** Builds the pause's log row; `fact` when the pause is e2epool's (see PauseLog). */
type Entry = (
  result: PauseLog['result'],
  detail: string,
  error?: string | null,
  fact?: PauseLog['fact'],
) => PauseLog;

/**
 * Keeps the pause in the run's memo before it is sent: until the
 * `finalize_queued` transition records it, the memo is where the reconciler
 * finds it if this run ends first.
 */
function rememberPause(run: CheckpointRun, target: PauseTarget, labels: string[]): void {
  const memo: CheckpointMemo = { pause: { checkpoint: run.checkpoint.name, target, labels } };
  upsertMemo(memo as Record<string, unknown>);
}

/**
 * The GitHub "pause" before any Postgres write: read the runner's labels,
 * decide here which of its pause labels e2epool removes (only those it
 * carries: one already gone was removed by someone else, and is never put
 * back), remove them. Returns the `pause` log row, with the labels as data
 * (its `fact`) for the restore and the reconciler.
 */
async function removeLabelsBeforeBookkeeping(
  run: CheckpointRun,
  target: GitHubPauseTarget,
  entry: Entry,
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
  rememberPause(run, target, present);
  try {
    const { removed } = await pauser.removeRunnerLabels({ target, labels: present, runnerId });
    // A label gone by the time of its request was removed by someone else: not ours.
    run.removedLabels = removed;
    run.runnerPaused = removed.length > 0;
    return removed.length > 0
      ? entry('ok', labelsRemovedDetail(target, removed), null, {
          target,
          state: 'paused',
          labels: removed,
        })
      : entry(
          'skipped',
          `${what} lost the labels ${JSON.stringify(present)} meanwhile: e2epool will not put them back`,
        );
  } catch (err) {
    log.warn('removing the GitHub runner labels failed; resetting anyway', {
      error: describeFailure(err),
    });
    return entry('error', labelsRemovedDetail(target, present, true), describeFailure(err), {
      target,
      state: 'sent',
      labels: present,
    });
  }
}
