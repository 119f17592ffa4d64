import { createStore } from '../../store';
import type { ActivityDeps } from '../deps';
import { fail } from '../../common/fail';
import { keptPausedForDrain, PAUSE_SENT } from '../../common/checkpoint';
import { activityKey, withOperation, writeOperation, type StepInput } from '../operation-log';
import type { GitLabClient } from './client';

/** Whether the runner is paused already; a failure to ask says that nothing was paused. */
async function pausedAlready(gitlab: GitLabClient, runnerId: number): Promise<boolean> {
  try {
    return await gitlab.runnerPaused(runnerId);
  } catch (err) {
    throw fail(
      'PauseCheckFailed',
      `cannot tell whether GitLab runner ${runnerId} is paused, so it was not paused: ${(err as Error).message}`,
    );
  }
}

/** How many late pauses one unpause undoes before it leaves the runner to whoever keeps pausing it. */
export const LATE_PAUSE_UNDOS = 3;

/** GitLab steps: pause before a reset, unpause after. */
export function gitlabActivities(deps: ActivityDeps) {
  /**
   * Reads the runner back after the unpause. A pause request of an earlier
   * attempt (one whose worker crashed, or that timed out, with its request
   * still on the way) can land after the unpause and leave the runner paused
   * for good with nobody to undo it: a runner that reads paused again is
   * unpaused again (idempotent), and that is logged. Bounded, so an operator
   * who pauses it at this moment is not fought forever. Returns what was
   * found, for the step's detail; null when the runner reads unpaused. A
   * failed read-back leaves the unpause as done (the reconciler still checks).
   */
  async function undoLatePauses(
    gitlab: GitLabClient,
    i: StepInput & { gitlabRunnerId: number },
  ): Promise<string | null> {
    let undone = 0;
    for (;;) {
      let paused: boolean;
      try {
        paused = await gitlab.runnerPaused(i.gitlabRunnerId);
      } catch (err) {
        deps.log.warn(
          { runnerId: i.runnerId, gitlabRunnerId: i.gitlabRunnerId, err: (err as Error).message },
          'cannot read the GitLab runner back after the unpause',
        );
        return undone > 0 ? lateDetail(undone) : null;
      }
      if (!paused) return undone > 0 ? lateDetail(undone) : null;
      if (undone >= LATE_PAUSE_UNDOS) {
        deps.log.error(
          { runnerId: i.runnerId, gitlabRunnerId: i.gitlabRunnerId, undone },
          'the GitLab runner reads paused again after every unpause: left paused (someone else pauses it?)',
        );
        return `it read paused again after ${undone + 1} unpauses: left paused (someone else pauses it?)`;
      }
      deps.log.warn(
        { runnerId: i.runnerId, gitlabRunnerId: i.gitlabRunnerId },
        'the GitLab runner reads paused again after the unpause (a pause of an earlier attempt that landed late): unpausing it again',
      );
      await gitlab.setPaused(i.gitlabRunnerId, false);
      undone += 1;
    }
  }
  const lateDetail = (n: number) =>
    `it read paused again after the unpause (a pause of an earlier attempt that landed late): unpaused it again${n > 1 ? ` (${n} times)` : ''}`;

  const { operations, pauses } = createStore(deps.dataSource);
  const steps = { operations, metrics: deps.metrics };
  /** The runner's backend for the step metrics; GitLab steps log none (not a backend's step). */
  const backendOf = (runnerId: string | undefined) =>
    runnerId === undefined ? null : (deps.inventory.inventory.forReset(runnerId)?.backend ?? null);
  const meta = (i: StepInput, operation: string) => {
    const key = activityKey(operation, `${i.checkpointName}:${operation}:${i.round}`);
    return {
      checkpointId: i.checkpointId,
      runnerId: i.runnerId,
      backend: null,
      runnerBackend: backendOf(i.runnerId),
      operation,
      key,
    };
  };
  const pausedSinceOf = async (checkpointId: number) =>
    (await pauses.openOf(checkpointId))?.pausedAt ?? null;
  /** Times a step that writes no log row (see pauseBeforeBookkeeping). */
  const timed = <T>(step: string, runnerId: string | undefined, fn: () => Promise<T>) =>
    deps.metrics.timeStep(backendOf(runnerId), step, fn);

  return {
    /**
     * Pauses the GitLab runner so it takes no new job during the reset.
     * A runner somebody else already paused is left alone, and `pausedByUs`
     * is false so it is not unpaused later. A pause this checkpoint sent
     * earlier (runner_pauses says so) that landed is ours, and stays. An
     * attempt that could not ask GitLab fails as PauseCheckFailed: nothing
     * was paused, so nothing may be unpaused for it.
     *
     * `knownPaused` (GITLAB_BUDGET_PATCH): the answer of the workflow's
     * checkRunnerPaused just before, so this activity makes one GitLab
     * request (the pause) and the rate budget counts requests honestly.
     */
    async pauseRunner(
      i: StepInput & { gitlabRunnerId: number; knownPaused?: boolean },
    ): Promise<{ pausedByUs: boolean }> {
      const gitlab = deps.gitlab;
      const m = meta(i, 'pause');
      if (!gitlab) {
        return withOperation<{ pausedByUs: boolean }>(steps, m, async () => ({
          value: { pausedByUs: false },
          detail: 'E2EPOOL_GITLAB_URL is not set: runner not paused',
          result: 'skipped' as const,
        }));
      }
      const target = { kind: 'gitlab' as const, gitlabRunnerId: i.gitlabRunnerId };
      const fact = { checkpointId: i.checkpointId, runnerId: i.runnerId, target };
      const ours = await pauses.openOf(i.checkpointId);
      return withOperation<{ pausedByUs: boolean }>(steps, m, async () => {
        if (i.knownPaused ?? (await pausedAlready(gitlab, i.gitlabRunnerId))) {
          // A pause this checkpoint sent earlier (an attempt of this step, or
          // a run the reconciler adopted it from) landed: ours.
          if (ours) {
            return {
              value: { pausedByUs: true },
              detail: `GitLab runner ${i.gitlabRunnerId} stays paused by an earlier run of this checkpoint`,
            };
          }
          return {
            value: { pausedByUs: false },
            detail: `GitLab runner ${i.gitlabRunnerId} was already paused by someone else: e2epool will not unpause it`,
            result: 'skipped' as const,
          };
        }
        await pauses.opened({ ...fact, state: 'sent' });
        await writeOperation(operations, m, {
          result: 'running',
          detail: PAUSE_SENT,
          startedAt: new Date(),
        });
        await gitlab.setPaused(i.gitlabRunnerId, true);
        await pauses.opened({ ...fact, state: 'paused' });
        return { value: { pausedByUs: true }, detail: `paused GitLab runner ${i.gitlabRunnerId}` };
      });
    },

    /**
     * Whether the GitLab runner is paused now (null: no GitLab configured).
     * Writes nothing, so it works while Postgres is down; a failure to ask is
     * PauseCheckFailed: the caller must then not pause it. `runnerId` (absent
     * in calls of older workflow code) labels the step metric only.
     */
    async checkRunnerPaused(i: {
      gitlabRunnerId: number;
      runnerId?: string;
    }): Promise<{ paused: boolean | null }> {
      const gitlab = deps.gitlab;
      if (!gitlab) return { paused: null };
      return {
        paused: await timed('pause_check', i.runnerId, () =>
          pausedAlready(gitlab, i.gitlabRunnerId),
        ),
      };
    },

    /**
     * Pauses the GitLab runner. Writes nothing: the workflow decided the pause
     * is e2epool's before sending it (its history says so) and logs it with
     * the checkpoint's next state change.
     */
    async sendPause(i: { gitlabRunnerId: number; runnerId?: string }): Promise<void> {
      const gitlab = deps.gitlab;
      if (!gitlab) throw fail('PermanentFailure', 'E2EPOOL_GITLAB_URL is not set');
      await timed('pause', i.runnerId, () => gitlab.setPaused(i.gitlabRunnerId, true));
    },

    /**
     * Unpauses the GitLab runner, adding how long it was paused (since its
     * runner_pauses row opened) to e2epool_runner_paused_seconds_total. A
     * draining runner stays paused: its pause stays open (kept_for_drain),
     * and the reconciler unpauses it once it is undrained.
     */
    async unpauseRunner(i: StepInput & { gitlabRunnerId: number }): Promise<void> {
      const gitlab = deps.gitlab;
      // After an earlier attempt that unpaused (its completion lost) no
      // pause is open, so nothing is counted twice.
      const pausedSince = gitlab
        ? await pausedSinceOf(i.checkpointId).catch((err: unknown) => {
            deps.log.warn(
              { err: (err as Error).message, runnerId: i.runnerId },
              'metrics: cannot read when the runner was paused',
            );
            return null;
          })
        : null;
      await withOperation(steps, meta(i, 'unpause'), async () => {
        if (!gitlab)
          return {
            value: undefined,
            detail: 'E2EPOOL_GITLAB_URL is not set',
            result: 'skipped' as const,
          };
        if (deps.inventory.inventory.isDraining(i.runnerId)) {
          await pauses.closed(i.checkpointId, 'kept_for_drain');
          return {
            value: undefined,
            detail: keptPausedForDrain(i.runnerId, `GitLab runner ${i.gitlabRunnerId}`),
            result: 'skipped' as const,
          };
        }
        await gitlab.setPaused(i.gitlabRunnerId, false);
        const late = await undoLatePauses(gitlab, i);
        await pauses.closed(i.checkpointId, 'unpaused');
        if (pausedSince) {
          const seconds = Math.max(0, (Date.now() - pausedSince.getTime()) / 1000);
          deps.metrics.runnerPausedSeconds.inc({ runner_id: i.runnerId }, seconds);
        }
        return {
          value: undefined,
          detail: `unpaused GitLab runner ${i.gitlabRunnerId}${late ? `; ${late}` : ''}`,
        };
      });
    },
  };
}
