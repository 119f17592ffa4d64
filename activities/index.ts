import { createStore } from '../store';
import { baselineActivities } from './baseline';
import { ciSystemOf, pollsJobsOf, type ActivityDeps } from './deps';
import type { JobState } from './ci/system';
import { githubActivities } from './github/steps';
import { gitlabActivities } from './gitlab/steps';
import { proxmoxActivities } from './proxmox/steps';
import { reconcileActivities } from './reconcile';
import { streakRule } from './quarantine';
import { recordActivities } from './records';
import { runnerActivities } from './runner';
import { runnerHoldActivities } from './runner-hold';
import { verifyActivities } from './verify';

export type { ActivityDeps } from './deps';

/** Builds every activity implementation, bound to its dependencies. */
export function createActivities(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);
  return {
    // Whether the worker polls the job's end: only with a client of the runner's CI system.
    ...recordActivities(store, {
      pollJobs: (runnerId) => pollsJobsOf(deps, runnerId),
      metrics: deps.metrics,
      streak: streakRule(deps),
    }),
    ...proxmoxActivities(deps),
    ...gitlabActivities(deps),
    ...githubActivities(deps),
    ...runnerActivities(deps),
    ...verifyActivities(deps),
    ...reconcileActivities(deps),
    ...baselineActivities(deps),
    ...runnerHoldActivities(deps),

    /**
     * The job's state; `running` until its CI system reports it finished.
     * GitLab: `projectId` is the project; GitHub: the repository (owner/name).
     * `runnerId` picks the CI system by the runner's `ci_adapter`.
     */
    async pollJobStatus(i: {
      projectId: string;
      jobId: string;
      runnerId: string;
    }): Promise<JobState> {
      const ci = ciSystemOf(deps, i.runnerId);
      return ci ? ci.jobState(i.projectId, i.jobId) : 'running';
    },

    /** Reads from Postgres and the inventory; used by the self-test workflow. */
    async probeDependencies() {
      const db = await store.database.describe();
      return {
        database: db.database,
        serverTime: db.serverTime.toISOString(),
        appliedMigrations: db.appliedMigrations,
        runners: deps.inventory.inventory.size,
      };
    },
  };
}

export type Activities = ReturnType<typeof createActivities>;
