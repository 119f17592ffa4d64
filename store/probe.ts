import { MIGRATIONS_TABLE } from './data-source';
import { selectRows, type Queryable } from './queryable';

/** What the database says about itself, for the self-test. */
export interface DatabaseInfo {
  database: string;
  serverTime: Date;
  appliedMigrations: number;
}

/** Checks that Postgres answers. */
export class DatabaseProbe {
  constructor(private readonly q: Queryable) {}

  /** Resolves once Postgres answered a trivial query. */
  async ping(): Promise<void> {
    await this.q.query('SELECT 1');
  }

  /** The database's name, its clock, and how many migrations it has. */
  async describe(): Promise<DatabaseInfo> {
    const [row] = await selectRows<{ db: string; now: Date; migrations: number }>(
      this.q,
      `SELECT current_database() AS db, now() AS now,
              (SELECT count(*)::int FROM ${MIGRATIONS_TABLE}) AS migrations`,
    );
    return {
      database: row!.db,
      serverTime: new Date(row!.now),
      appliedMigrations: row!.migrations,
    };
  }
}
