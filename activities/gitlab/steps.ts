import { createStore } from '../../store';
import { PAUSE_SENT } from '../../store/operation-log';
import type { ActivityDeps } from '../deps';
import { fail } from '../../common/fail';
import { activityKey, withOperation, writeOperation, type StepInput } from '../operation-log';
import type { GitLabClient, JobState } from './client';

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

/** GitLab steps: pause before a reset, unpause after, and job-status polls. */
export function gitlabActivities(deps: ActivityDeps) {
  const { operations } = createStore(deps.dataSource);
  const meta = (i: StepInput, operation: string) => {
    const key = activityKey(operation, `${i.checkpointName}:${operation}:${i.round}`);
    return { checkpointId: i.checkpointId, runnerId: i.runnerId, backend: null, operation, key };
  };

  return {
    /**
     * Pauses the GitLab runner so it takes no new job during the reset.
     * A runner somebody else already paused is left alone, and `pausedByUs`
     * is false so it is not unpaused later. An earlier attempt of this same
     * call that sent the pause (its log row says so) paused it: that pause
     * is ours. An attempt that could not ask GitLab fails as PauseCheckFailed:
     * nothing was paused, so nothing may be unpaused for it.
     */
    async pauseRunner(i: StepInput & { gitlabRunnerId: number }): Promise<{ pausedByUs: boolean }> {
      const gitlab = deps.gitlab;
      const m = meta(i, 'pause');
      if (!gitlab) {
        return withOperation<{ pausedByUs: boolean }>(operations, m, async () => ({
          value: { pausedByUs: false },
          detail: 'E2EPOOL_GITLAB_URL is not set: runner not paused',
          result: 'skipped' as const,
        }));
      }
      const sentBefore = (await operations.detailOf(m.key)) === PAUSE_SENT;
      return withOperation<{ pausedByUs: boolean }>(operations, m, async () => {
        if (!sentBefore && (await pausedAlready(gitlab, i.gitlabRunnerId))) {
          // An earlier run of this checkpoint (one the reconciler adopted) paused it: ours.
          if (await operations.pausedByCheckpoint(i.checkpointId)) {
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
        await writeOperation(operations, m, {
          result: 'running',
          detail: PAUSE_SENT,
          startedAt: new Date(),
        });
        await gitlab.setPaused(i.gitlabRunnerId, true);
        return { value: { pausedByUs: true }, detail: `paused GitLab runner ${i.gitlabRunnerId}` };
      });
    },

    /**
     * Whether the GitLab runner is paused now (null: no GitLab configured).
     * Writes nothing, so it works while Postgres is down; a failure to ask is
     * PauseCheckFailed: the caller must then not pause it.
     */
    async checkRunnerPaused(i: { gitlabRunnerId: number }): Promise<{ paused: boolean | null }> {
      if (!deps.gitlab) return { paused: null };
      return { paused: await pausedAlready(deps.gitlab, i.gitlabRunnerId) };
    },

    /**
     * Pauses the GitLab runner. Writes nothing: the workflow decided the pause
     * is e2epool's before sending it (its history says so) and logs it with
     * the checkpoint's next state change.
     */
    async sendPause(i: { gitlabRunnerId: number }): Promise<void> {
      if (!deps.gitlab) throw fail('PermanentFailure', 'E2EPOOL_GITLAB_URL is not set');
      await deps.gitlab.setPaused(i.gitlabRunnerId, true);
    },

    async unpauseRunner(i: StepInput & { gitlabRunnerId: number }): Promise<void> {
      const gitlab = deps.gitlab;
      await withOperation(operations, meta(i, 'unpause'), async () => {
        if (!gitlab)
          return {
            value: undefined,
            detail: 'E2EPOOL_GITLAB_URL is not set',
            result: 'skipped' as const,
          };
        await gitlab.setPaused(i.gitlabRunnerId, false);
        return { value: undefined, detail: `unpaused GitLab runner ${i.gitlabRunnerId}` };
      });
    },

    /** The job's state; `running` until GitLab reports a completed status. */
    async pollJobStatus(i: { projectId: string; jobId: string }): Promise<JobState> {
      if (!deps.gitlab) return 'running';
      return deps.gitlab.jobState(i.projectId, i.jobId);
    },
  };
}
