import type { DataSource } from 'typeorm';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';

/** What activities need from the process that runs them. */
export interface ActivityDeps {
  dataSource: DataSource;
  inventory: InventoryStore;
  settings: Settings;
  log: Logger;
}

/** Builds the activity implementations bound to their dependencies. */
export function createActivities(deps: ActivityDeps) {
  return {
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
