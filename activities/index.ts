import type { ActivityDeps } from './deps';
import { gitlabActivities } from './gitlab/steps';
import { proxmoxActivities } from './proxmox/steps';
import { recordActivities } from './records';
import { runnerActivities } from './runner';

export type { ActivityDeps } from './deps';

/** Builds every activity implementation, bound to its dependencies. */
export function createActivities(deps: ActivityDeps) {
  return {
    ...recordActivities(deps.dataSource),
    ...proxmoxActivities(deps),
    ...gitlabActivities(deps),
    ...runnerActivities(deps),

    /** Reads from Postgres and the inventory; used by the self-test workflow. */
    async probeDependencies() {
      const [row] = (await deps.dataSource.query(
        `SELECT current_database() AS db, now() AS now,
                (SELECT count(*)::int FROM e2epool_migrations) AS migrations`,
      )) as Array<{ db: string; now: Date; migrations: number }>;
      return {
        database: row!.db,
        serverTime: new Date(row!.now).toISOString(),
        appliedMigrations: row!.migrations,
        runners: deps.inventory.inventory.size,
      };
    },
  };
}

export type Activities = ReturnType<typeof createActivities>;
