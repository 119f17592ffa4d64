import type { DataSource } from 'typeorm';
import type { Logger } from '../config/logger';
import { createDataSource, runMigrations, type DataSourceOptions } from './data-source';

/**
 * Connects to Postgres, waiting up to `waitMs` for it to come up (processes may
 * start before the database), then applies pending migrations under the lock.
 */
export async function connectDatabase(
  opts: DataSourceOptions,
  log: Logger,
  waitMs = 60_000,
): Promise<DataSource> {
  const deadline = Date.now() + waitMs;
  let attempt = 0;
  for (;;) {
    const ds = createDataSource(opts);
    try {
      await ds.initialize();
      await runMigrations(ds, log);
      return ds;
    } catch (err) {
      if (ds.isInitialized) await ds.destroy().catch(() => undefined);
      attempt += 1;
      if (Date.now() >= deadline) {
        throw new Error(`cannot use Postgres: ${(err as Error).message}`);
      }
      if (attempt === 1 || attempt % 10 === 0) {
        log.warn({ err: (err as Error).message }, 'waiting for Postgres');
      }
      await new Promise((r) => setTimeout(r, Math.min(500 * attempt, 3000)));
    }
  }
}
