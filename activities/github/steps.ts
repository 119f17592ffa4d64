import {
  describePauseTarget,
  keptPausedForDrain,
  labelsRemovedDetail,
  type GitHubPauseTarget,
} from '../../common/checkpoint';
import { fail } from '../../common/fail';
import { createStore } from '../../store';
import type { ActivityDeps } from '../deps';
import { activityKey, withOperation, writeOperation, type StepInput } from '../operation-log';
import { LATE_PAUSE_UNDOS } from '../gitlab/steps';
import type { GitHubClient } from './client';

/**
 * GitHub has no pause for a self-hosted runner. What keeps the next e2e job
 * off it during a reset is removing the custom labels those jobs select it
 * by (`runs-on`), and putting them back after. The same rules as GitLab's
 * pause: ask first, decide, send; never put back a label e2epool did not
 * remove (an operator may have taken it off on purpose); every removal is
 * paired with a restore.
 */

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

/** The runner's label names now; a failure to ask says that nothing was removed. */
async function labelsNow(github: GitHubClient, target: GitHubPauseTarget): Promise<string[]> {
  try {
    return (await github.runnerLabels(target.scope, target.githubRunnerId)).map((l) => l.name);
  } catch (err) {
    throw fail(
      'PauseCheckFailed',
      `cannot read the labels of ${describePauseTarget(target)}, so none was removed: ${(err as Error).message}`,
    );
  }
}

/**
 * Removes `labels` one by one; returns those GitHub removed. A 404 means the
 * runner did not carry the label (someone else removed it meanwhile: it is
 * not ours to put back) or that the runner is gone: reading the labels
 * again tells which.
 */
async function removeLabels(
  github: GitHubClient,
  target: GitHubPauseTarget,
  labels: string[],
): Promise<string[]> {
  const removed: string[] = [];
  for (const label of labels) {
    if (await github.removeLabel(target.scope, target.githubRunnerId, label)) removed.push(label);
    else await github.runnerLabels(target.scope, target.githubRunnerId);
  }
  return removed;
}

/** GitHub steps: remove the pause labels before a reset, restore them after. */
export function githubActivities(deps: ActivityDeps) {
  const { operations, pauses } = createStore(deps.dataSource);
  /**
   * Reads the labels back after putting them back, as GitLab's unpause reads
   * the runner back (see undoLatePauses there): a removal of an earlier,
   * crashed attempt that lands late takes them off again with nobody to put
   * them back; they are put back again (idempotent), at most LATE_PAUSE_UNDOS
   * times, and that is logged. Returns what was found for the step's detail,
   * null when the runner carries them all; a failed read-back leaves the
   * restore as done.
   */
  async function undoLateRemovals(
    github: GitHubClient,
    i: StepInput & { target: GitHubPauseTarget },
    ours: string[],
  ): Promise<string | null> {
    const what = describePauseTarget(i.target);
    const found = (n: number) =>
      `labels ${JSON.stringify(ours)} were off again after being put back (a removal of an earlier attempt that landed late): put back again${n > 1 ? ` (${n} times)` : ''}`;
    let undone = 0;
    for (;;) {
      let has: string[];
      try {
        has = (await github.runnerLabels(i.target.scope, i.target.githubRunnerId)).map(
          (l) => l.name,
        );
      } catch (err) {
        deps.log.warn(
          { runnerId: i.runnerId, target: what, err: (err as Error).message },
          'cannot read the GitHub runner labels back after putting them back',
        );
        return undone > 0 ? found(undone) : null;
      }
      const missing = ours.filter((l) => carried([l], has).length === 0);
      if (missing.length === 0) return undone > 0 ? found(undone) : null;
      if (undone >= LATE_PAUSE_UNDOS) {
        deps.log.error(
          { runnerId: i.runnerId, target: what, missing, undone },
          'the GitHub runner loses its labels again after every restore: left without them (someone else removes them?)',
        );
        return `labels ${JSON.stringify(missing)} were off again after ${undone + 1} restores: left off (someone else removes them?)`;
      }
      deps.log.warn(
        { runnerId: i.runnerId, target: what, missing },
        'the GitHub runner lost its labels again after the restore (a removal of an earlier attempt that landed late): putting them back again',
      );
      await github.addLabels(i.target.scope, i.target.githubRunnerId, missing);
      undone += 1;
    }
  }
  const steps = { operations, metrics: deps.metrics };
  const backendOf = (runnerId: string | undefined) =>
    runnerId === undefined ? null : (deps.inventory.inventory.get(runnerId)?.backend ?? null);
  const meta = (i: StepInput, operation: string) => ({
    checkpointId: i.checkpointId,
    runnerId: i.runnerId,
    backend: null,
    runnerBackend: backendOf(i.runnerId),
    operation,
    key: activityKey(operation, `${i.checkpointName}:${operation}:${i.round}`),
  });
  /** Times a step that writes no log row (see pauseBeforeBookkeeping). */
  const timed = <T>(step: string, runnerId: string | undefined, fn: () => Promise<T>) =>
    deps.metrics.timeStep(backendOf(runnerId), step, fn);
  /** Labels e2epool removed for this checkpoint and has not put back yet (runner_pauses). */
  const openRemovals = async (checkpointId: number): Promise<string[]> =>
    (await pauses.openOf(checkpointId))?.labels ?? [];
  /** Records the labels e2epool has off the runner for this checkpoint: sent, or removed. */
  const recordRemoval = (
    i: StepInput & { target: GitHubPauseTarget },
    state: 'sent' | 'paused',
    labels: string[],
  ) =>
    pauses.opened({
      checkpointId: i.checkpointId,
      runnerId: i.runnerId,
      target: i.target,
      state,
      labels,
    });

  return {
    /**
     * The runner's labels now (null: no GitHub token configured). Writes
     * nothing, so it works while Postgres is down; a failure to ask is
     * PauseCheckFailed: the caller must then remove nothing.
     */
    async checkRunnerLabels(i: {
      target: GitHubPauseTarget;
      runnerId?: string;
    }): Promise<{ labels: string[] | null }> {
      const github = deps.github;
      if (!github) return { labels: null };
      return { labels: await timed('pause_check', i.runnerId, () => labelsNow(github, i.target)) };
    },

    /**
     * Removes the labels the workflow decided to remove (it read them on the
     * runner just before). Writes nothing: the workflow's history is the
     * record, logged with the checkpoint's next state change.
     */
    async removeRunnerLabels(i: {
      target: GitHubPauseTarget;
      labels: string[];
      runnerId?: string;
    }): Promise<{ removed: string[] }> {
      const github = deps.github;
      if (!github) throw fail('PermanentFailure', 'E2EPOOL_GITHUB_TOKEN is not set');
      return {
        removed: await timed('pause', i.runnerId, () => removeLabels(github, i.target, i.labels)),
      };
    },

    /**
     * The pause of a run that writes its log as it goes (an adopted
     * checkpoint's): labels an earlier run or attempt of this checkpoint
     * removed (runner_pauses says so) stay e2epool's to put back; of the
     * pause labels, those the runner still carries are removed now. Labels
     * the runner lacks that runner_pauses does not name were removed by
     * someone else.
     */
    async pauseRunnerLabels(
      i: StepInput & { target: GitHubPauseTarget },
    ): Promise<{ removed: string[] }> {
      const github = deps.github;
      const m = meta(i, 'pause');
      if (!github) {
        return withOperation(steps, m, async () => ({
          value: { removed: [] as string[] },
          detail: 'E2EPOOL_GITHUB_TOKEN is not set: runner labels not removed',
          result: 'skipped' as const,
        }));
      }
      // Read before this attempt writes its own row: it names only what earlier ones sent.
      const earlier = await openRemovals(i.checkpointId);
      return withOperation(steps, m, async () => {
        const now = carried(i.target.labels, await labelsNow(github, i.target));
        if (now.length === 0) {
          return earlier.length > 0
            ? {
                value: { removed: earlier },
                detail: labelsRemovedDetail(i.target, earlier),
              }
            : {
                value: { removed: [] },
                detail: `${describePauseTarget(i.target)} carries none of the labels ${JSON.stringify(i.target.labels)}: someone else removed them; e2epool will not put them back`,
                result: 'skipped' as const,
              };
        }
        const sending = union(earlier, now);
        await recordRemoval(i, 'sent', sending);
        await writeOperation(operations, m, {
          result: 'running',
          detail: labelsRemovedDetail(i.target, sending, true),
          startedAt: new Date(),
        });
        const removed = await removeLabels(github, i.target, now);
        const ours = union(earlier, removed);
        // Nothing came off (someone else removed them meanwhile): no pause of e2epool's.
        if (ours.length > 0) await recordRemoval(i, 'paused', ours);
        else await pauses.closed(i.checkpointId, 'unpaused');
        return { value: { removed: ours }, detail: labelsRemovedDetail(i.target, ours) };
      });
    },

    /**
     * Puts back the labels e2epool removed for this checkpoint: `labels` (the
     * workflow's record) and any runner_pauses names; only those the runner lacks
     * now are added, so a retry, or a label an operator put back already,
     * changes nothing. Adds how long they were off to
     * e2epool_runner_paused_seconds_total. A draining runner's labels stay
     * off until it is undrained (see unpauseRunner of GitLab).
     */
    async restoreRunnerLabels(
      i: StepInput & { target: GitHubPauseTarget; labels: string[] },
    ): Promise<void> {
      const github = deps.github;
      // Read before this attempt marks its row `running` (see unpauseRunner).
      const open = await pauses.openOf(i.checkpointId);
      const pausedSince = github ? (open?.pausedAt ?? null) : null;
      const logged = open?.labels ?? [];
      await withOperation(steps, meta(i, 'unpause'), async () => {
        if (!github) {
          return {
            value: undefined,
            detail: 'E2EPOOL_GITHUB_TOKEN is not set',
            result: 'skipped' as const,
          };
        }
        if (deps.inventory.inventory.isDraining(i.runnerId)) {
          await pauses.closed(i.checkpointId, 'kept_for_drain');
          return {
            value: undefined,
            detail: keptPausedForDrain(i.runnerId, describePauseTarget(i.target)),
            result: 'skipped' as const,
          };
        }
        const ours = union(i.labels, logged);
        const has = (await github.runnerLabels(i.target.scope, i.target.githubRunnerId)).map(
          (l) => l.name,
        );
        const missing = ours.filter((l) => carried([l], has).length === 0);
        let late: string | null = null;
        if (missing.length > 0) {
          await github.addLabels(i.target.scope, i.target.githubRunnerId, missing);
          late = await undoLateRemovals(github, i, ours);
        }
        await pauses.closed(i.checkpointId, 'unpaused');
        if (pausedSince) {
          const seconds = Math.max(0, (Date.now() - pausedSince.getTime()) / 1000);
          deps.metrics.runnerPausedSeconds.inc({ runner_id: i.runnerId }, seconds);
        }
        return {
          value: undefined,
          detail:
            missing.length > 0
              ? `put back labels ${JSON.stringify(missing)} on ${describePauseTarget(i.target)}${late ? `; ${late}` : ''}`
              : `${describePauseTarget(i.target)} carries its labels ${JSON.stringify(ours)} already`,
        };
      });
    },
  };
}
