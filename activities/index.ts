import { createStore } from '../store';
import type { ActivityDeps } from './deps';
import { gitlabActivities } from './gitlab/steps';
import { proxmoxActivities } from './proxmox/steps';
import { reconcileActivities } from './reconcile';
import { recordActivities } from './records';
import { runnerActivities } from './runner';

export type { ActivityDeps } from './deps';

/** Builds every activity implementation, bound to its dependencies. */
export function createActivities(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);
  return {
    // Whether the worker polls GitLab for a job's end: only with a GitLab client to ask.
    ...recordActivities(store, {
      pollJobs: deps.gitlab !== null && deps.settings.pollerEnabled,
      metrics: deps.metrics,
    }),
    ...proxmoxActivities(deps),
    ...gitlabActivities(deps),
    ...runnerActivities(deps),
    ...reconcileActivities(deps),

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
