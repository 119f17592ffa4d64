import { PAUSE_SENT } from '../../common/checkpoint';
import type { OperationLogStore, OperationMeta } from '../../store/operation-log';
import type { ActivityDeps } from '../deps';
import { withOperation, writeOperation, type StepInput } from '../operation-log';
import {
  ciSteps,
  LATE_PAUSE_UNDOS,
  type CiSteps,
  type LateHoldWords,
  type ReleaseInput,
} from '../ci/steps';
import { checkHold, type RunnerHold } from '../ci/system';
import type { GitLabClient } from './client';

export { LATE_PAUSE_UNDOS };

/** The setting without which no GitLab runner is paused. */
const SETTING = 'E2EPOOL_GITLAB_URL';

/** A GitLab runner's hold is its pause. */
export function gitlabHold(gitlab: GitLabClient, runnerId: number): RunnerHold<boolean, true> {
  return {
    what: `GitLab runner ${runnerId}`,
    uncheckable: `cannot tell whether GitLab runner ${runnerId} is paused, so it was not paused`,
    read: () => gitlab.runnerPaused(runnerId),
    hold: async () => {
      await gitlab.setPaused(runnerId, true);
      return true;
    },
    release: () => gitlab.setPaused(runnerId, false),
    heldIn: (paused) => (paused ? true : null),
  };
}

const holdOf = (deps: ActivityDeps, gitlabRunnerId: number) =>
  deps.gitlab ? gitlabHold(deps.gitlab, gitlabRunnerId) : null;

/**
 * The `pause` row says PAUSE_SENT from just before the request goes until
 * the step ends: what operators read while a pause hangs (runner_pauses is
 * the record the steps and the reconciler read).
 */
async function recordPauseSent(operations: OperationLogStore, m: OperationMeta): Promise<void> {
  await writeOperation(operations, m, {
    result: 'running',
    detail: PAUSE_SENT,
    startedAt: new Date(),
  });
}

/**
 * Pauses the GitLab runner so it takes no new job during the reset. A runner
 * somebody else already paused is left alone, and `pausedByUs` is false so
 * it is not unpaused later. A pause this checkpoint sent earlier
 * (runner_pauses says so: an attempt of this step, or a run the reconciler
 * adopted it from) that landed is ours, and stays. An attempt that could not
 * ask GitLab fails as PauseCheckFailed: nothing was paused, so nothing may
 * be unpaused for it.
 *
 * `knownPaused`: the answer of the workflow's checkRunnerPaused just
 * before, so this activity makes one GitLab request (the pause) and the
 * rate budget counts requests honestly.
 */
async function pauseRunner(
  c: CiSteps,
  i: StepInput & { gitlabRunnerId: number; knownPaused?: boolean },
): Promise<{ pausedByUs: boolean }> {
  const { operations } = c;
  const hold = holdOf(c.deps, i.gitlabRunnerId);
  const m = c.meta(i, 'pause');
  if (!hold) return c.skip(m, { pausedByUs: false }, `${SETTING} is not set: runner not paused`);
  const fact = {
    checkpointId: i.checkpointId,
    runnerId: i.runnerId,
    target: { kind: 'gitlab' as const, gitlabRunnerId: i.gitlabRunnerId },
  };
  const ours = await c.pauses.openOf(i.checkpointId);
  return withOperation<{ pausedByUs: boolean }>(c.log, m, async () => {
    if (i.knownPaused ?? (await checkHold(hold))) {
      if (ours) {
        return {
          value: { pausedByUs: true },
          detail: `${hold.what} stays paused by an earlier run of this checkpoint`,
        };
      }
      return {
        value: { pausedByUs: false },
        detail: `${hold.what} was already paused by someone else: e2epool will not unpause it`,
        result: 'skipped' as const,
      };
    }
    await c.pauses.opened({ ...fact, state: 'sent' });
    await recordPauseSent(operations, m);
    await hold.hold(true);
    await c.pauses.opened({ ...fact, state: 'paused' });
    return { value: { pausedByUs: true }, detail: `paused ${hold.what}` };
  });
}

/** What the unpause says when the runner reads paused again (see undoLateHolds). */
function lateWords(i: StepInput & { gitlabRunnerId: number }): LateHoldWords<true> {
  return {
    fields: () => ({ runnerId: i.runnerId, gitlabRunnerId: i.gitlabRunnerId }),
    unreadable: 'cannot read the GitLab runner back after the unpause',
    gaveUp:
      'the GitLab runner reads paused again after every unpause: left paused (someone else pauses it?)',
    again:
      'the GitLab runner reads paused again after the unpause (a pause of an earlier attempt that landed late): unpausing it again',
    undid: (n) =>
      `it read paused again after the unpause (a pause of an earlier attempt that landed late): unpaused it again${n > 1 ? ` (${n} times)` : ''}`,
    leftHeld: (_, undone) =>
      `it read paused again after ${undone + 1} unpauses: left paused (someone else pauses it?)`,
  };
}

/**
 * Unpauses the GitLab runner (see releaseStep: a draining runner stays
 * paused), then reads it back for a pause that landed late.
 */
async function unpauseRunner(
  c: CiSteps,
  i: ReleaseInput & { gitlabRunnerId: number },
): Promise<void> {
  const hold = holdOf(c.deps, i.gitlabRunnerId);
  await c.release(i, {
    unconfigured: `${SETTING} is not set`,
    what: `GitLab runner ${i.gitlabRunnerId}`,
    release:
      hold &&
      (async () => {
        await hold.release(true);
        const late = await c.undoLate(hold, true, lateWords(i));
        return `unpaused ${hold.what}${late ? `; ${late}` : ''}`;
      }),
  });
}

/** GitLab steps: pause before a reset, unpause after. */
export function gitlabActivities(deps: ActivityDeps) {
  const c = ciSteps(deps);
  return {
    pauseRunner: (i: StepInput & { gitlabRunnerId: number; knownPaused?: boolean }) =>
      pauseRunner(c, i),

    /**
     * Whether the GitLab runner is paused now (null: no GitLab configured);
     * see checkStep. `runnerId` labels the step metric only.
     */
    async checkRunnerPaused(i: {
      gitlabRunnerId: number;
      runnerId: string;
    }): Promise<{ paused: boolean | null }> {
      return { paused: await c.check(i.runnerId, holdOf(deps, i.gitlabRunnerId)) };
    },

    /**
     * Pauses the GitLab runner (see sendStep): the workflow decided the pause
     * is e2epool's before sending it (its memo says so).
     */
    async sendPause(i: { gitlabRunnerId: number; runnerId: string }): Promise<void> {
      await c.send(i.runnerId, holdOf(deps, i.gitlabRunnerId), true, SETTING);
    },

    unpauseRunner: (i: ReleaseInput & { gitlabRunnerId: number }) => unpauseRunner(c, i),
  };
}
