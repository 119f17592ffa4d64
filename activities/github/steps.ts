import {
  describePauseTarget,
  labelsRemovedDetail,
  type GitHubPauseTarget,
} from '../../common/checkpoint';
import type { OperationLogStore, OperationMeta } from '../../store/operation-log';
import type { RunnerPauseStore } from '../../store/runner-pauses';
import type { ActivityDeps } from '../deps';
import { withOperation, writeOperation, type StepInput } from '../operation-log';
import { ciSteps, type CiSteps, type LateHoldWords, type ReleaseInput } from '../ci/steps';
import { checkHold, type RunnerHold } from '../ci/system';
import type { GitHubClient } from './client';

/**
 * GitHub has no pause for a self-hosted runner. What keeps the next e2e job
 * off it during a reset is removing the custom labels those jobs select it
 * by (`runs-on`), and putting them back after. The same rules as GitLab's
 * pause: ask first, decide, send; never put back a label e2epool did not
 * remove (an operator may have taken it off on purpose); every removal is
 * paired with a restore.
 */

/** The setting without which no GitHub runner's labels are removed. */
const SETTING = 'E2EPOOL_GITHUB_TOKEN';

const sameLabel = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

/**
 * The labels of `has` that are among `wanted`, spelled as `has` spells them
 * (GitHub matches labels without regard to case; the runner's own spelling
 * is what its label endpoints know and what goes back).
 */
export function carried(wanted: string[], has: string[]): string[] {
  return has.filter((h) => wanted.some((w) => sameLabel(h, w)));
}

/** `a`, then the labels of `b` that `a` lacks. */
function union(a: string[], b: string[]): string[] {
  return [...a, ...b.filter((l) => carried([l], a).length === 0)];
}

/** The labels of `ours` that `has` lacks. */
const lacking = (ours: string[], has: string[]) =>
  ours.filter((l) => carried([l], has).length === 0);

/**
 * A GitHub runner's hold is the labels taken off it. Removing is one label
 * at a time; it returns those GitHub removed. A 404 means the runner did not
 * carry the label (someone else removed it meanwhile: it is not ours to put
 * back) or that the runner is gone: reading the labels again tells which.
 */
export function githubHold(
  github: GitHubClient,
  target: GitHubPauseTarget,
): RunnerHold<string[], string[]> {
  const { scope, githubRunnerId: id } = target;
  const what = describePauseTarget(target);
  return {
    what,
    uncheckable: `cannot read the labels of ${what}, so none was removed`,
    read: async () => (await github.runnerLabels(scope, id)).map((l) => l.name),
    hold: async (labels) => {
      const removed: string[] = [];
      for (const label of labels) {
        if (await github.removeLabel(scope, id, label)) removed.push(label);
        else await github.runnerLabels(scope, id);
      }
      return removed;
    },
    release: async (labels) => {
      await github.addLabels(scope, id, labels);
    },
    heldIn: (has, ours) => {
      const missing = lacking(ours, has);
      return missing.length > 0 ? missing : null;
    },
  };
}

const holdOf = (deps: ActivityDeps, target: GitHubPauseTarget) =>
  deps.github ? githubHold(deps.github, target) : null;

/** Labels e2epool removed for this checkpoint and has not put back yet (runner_pauses). */
async function openRemovals(pauses: RunnerPauseStore, checkpointId: number): Promise<string[]> {
  return (await pauses.openOf(checkpointId))?.labels ?? [];
}

/** Records the labels e2epool has off the runner for this checkpoint: sent, or removed. */
function recordRemoval(
  pauses: RunnerPauseStore,
  i: StepInput & { target: GitHubPauseTarget },
  state: 'sent' | 'paused',
  labels: string[],
) {
  return pauses.opened({
    checkpointId: i.checkpointId,
    runnerId: i.runnerId,
    target: i.target,
    state,
    labels,
  });
}

/** The `pause` row names the labels while GitHub is asked to remove them (operators read it). */
async function recordRemovalSent(
  operations: OperationLogStore,
  m: OperationMeta,
  target: GitHubPauseTarget,
  sending: string[],
): Promise<void> {
  await writeOperation(operations, m, {
    result: 'running',
    detail: labelsRemovedDetail(target, sending, true),
    startedAt: new Date(),
  });
}

/**
 * The pause of a run that writes its log as it goes (an adopted
 * checkpoint's): labels an earlier run or attempt of this checkpoint removed
 * (runner_pauses says so) stay e2epool's to put back; of the pause labels,
 * those the runner still carries are removed now. Labels the runner lacks
 * that runner_pauses does not name were removed by someone else.
 */
async function pauseRunnerLabels(
  c: CiSteps,
  i: StepInput & { target: GitHubPauseTarget },
): Promise<{ removed: string[] }> {
  const { operations, pauses } = c;
  const hold = holdOf(c.deps, i.target);
  const m = c.meta(i, 'pause');
  if (!hold) return c.skip(m, { removed: [] }, `${SETTING} is not set: runner labels not removed`);
  const earlier = await openRemovals(pauses, i.checkpointId);
  return withOperation(c.log, m, async () => {
    const now = carried(i.target.labels, await checkHold(hold));
    if (now.length === 0) {
      return earlier.length > 0
        ? { value: { removed: earlier }, detail: labelsRemovedDetail(i.target, earlier) }
        : {
            value: { removed: [] },
            detail: `${hold.what} carries none of the labels ${JSON.stringify(i.target.labels)}: someone else removed them; e2epool will not put them back`,
            result: 'skipped' as const,
          };
    }
    const sending = union(earlier, now);
    await recordRemoval(pauses, i, 'sent', sending);
    await recordRemovalSent(operations, m, i.target, sending);
    const ours = union(earlier, await hold.hold(now));
    // Nothing came off (someone else removed them meanwhile): no pause of e2epool's.
    if (ours.length > 0) await recordRemoval(pauses, i, 'paused', ours);
    else await pauses.closed(i.checkpointId, 'unpaused');
    return { value: { removed: ours }, detail: labelsRemovedDetail(i.target, ours) };
  });
}

/** What the restore says when labels are off again (see undoLateHolds). */
function lateWords(
  i: StepInput & { target: GitHubPauseTarget },
  ours: string[],
): LateHoldWords<string[]> {
  const target = describePauseTarget(i.target);
  return {
    fields: (missing) => ({ runnerId: i.runnerId, target, ...(missing ? { missing } : {}) }),
    unreadable: 'cannot read the GitHub runner labels back after putting them back',
    gaveUp:
      'the GitHub runner loses its labels again after every restore: left without them (someone else removes them?)',
    again:
      'the GitHub runner lost its labels again after the restore (a removal of an earlier attempt that landed late): putting them back again',
    undid: (n) =>
      `labels ${JSON.stringify(ours)} were off again after being put back (a removal of an earlier attempt that landed late): put back again${n > 1 ? ` (${n} times)` : ''}`,
    leftHeld: (missing, undone) =>
      `labels ${JSON.stringify(missing)} were off again after ${undone + 1} restores: left off (someone else removes them?)`,
  };
}

/**
 * Puts back the labels e2epool removed for this checkpoint: `labels` (the
 * workflow's record) and any runner_pauses names; only those the runner lacks now
 * are added, so a retry, or a label an operator put back already, changes
 * nothing. Then reads them back for a removal that landed late. A draining
 * runner's labels stay off until it is undrained (see releaseStep).
 */
async function restoreRunnerLabels(
  c: CiSteps,
  i: ReleaseInput & { target: GitHubPauseTarget; labels: string[] },
): Promise<void> {
  const hold = holdOf(c.deps, i.target);
  const logged = await openRemovals(c.pauses, i.checkpointId);
  await c.release(i, {
    unconfigured: `${SETTING} is not set`,
    what: describePauseTarget(i.target),
    release:
      hold &&
      (async () => {
        const ours = union(i.labels, logged);
        const missing = lacking(ours, await hold.read());
        if (missing.length === 0)
          return `${hold.what} carries its labels ${JSON.stringify(ours)} already`;
        await hold.release(missing);
        const late = await c.undoLate(hold, ours, lateWords(i, ours));
        return `put back labels ${JSON.stringify(missing)} on ${hold.what}${late ? `; ${late}` : ''}`;
      }),
  });
}

/** GitHub steps: remove the pause labels before a reset, restore them after. */
export function githubActivities(deps: ActivityDeps) {
  const c = ciSteps(deps);
  return {
    /**
     * The runner's labels now (null: no GitHub token configured); see
     * checkStep: a failure to ask is PauseCheckFailed.
     */
    async checkRunnerLabels(i: {
      target: GitHubPauseTarget;
      runnerId: string;
    }): Promise<{ labels: string[] | null }> {
      return { labels: await c.check(i.runnerId, holdOf(deps, i.target)) };
    },

    /**
     * Removes the labels the workflow decided to remove (it read them on the
     * runner just before); see sendStep.
     */
    async removeRunnerLabels(i: {
      target: GitHubPauseTarget;
      labels: string[];
      runnerId: string;
    }): Promise<{ removed: string[] }> {
      return { removed: await c.send(i.runnerId, holdOf(deps, i.target), i.labels, SETTING) };
    },

    pauseRunnerLabels: (i: StepInput & { target: GitHubPauseTarget }) => pauseRunnerLabels(c, i),

    restoreRunnerLabels: (i: ReleaseInput & { target: GitHubPauseTarget; labels: string[] }) =>
      restoreRunnerLabels(c, i),
  };
}
