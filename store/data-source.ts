import { DataSource, MigrationExecutor, type QueryRunner } from 'typeorm';
import type { Logger } from '../config/logger';
import { MIGRATIONS } from './migrations';

/** Where TypeORM records the migrations it applied. */
export const MIGRATIONS_TABLE = 'e2epool_migrations';

export interface DataSourceOptions {
  url: string;
  poolSize?: number;
  applicationName?: string;
}

/**
 * A TypeORM DataSource for e2epool's tables. The migrations are the only
 * definition of the schema (no entities, never `synchronize`); the stores in
 * this folder hold every query.
 */
export function createDataSource(opts: DataSourceOptions): DataSource {
  return new DataSource({
    type: 'postgres',
    url: opts.url,
    entities: [],
    migrations: MIGRATIONS,
    migrationsTableName: MIGRATIONS_TABLE,
    migrationsTransactionMode: 'each',
    synchronize: false,
    migrationsRun: false,
    logging: false,
    applicationName: opts.applicationName ?? 'e2epool',
    extra: {
      max: opts.poolSize ?? 10,
      // Fail fast while Postgres is down instead of queueing for ever.
      connectionTimeoutMillis: 5000,
      idleTimeoutMillis: 30000,
    },
  });
}

// Any fixed 64-bit key works; it only has to be the same for every e2epool process.
const MIGRATION_LOCK_KEY = '7311202611220001';

/**
 * Runs `fn` while holding a session-level advisory lock. The lock and the
 * migrations share one connection, so this works with a pool of size 1.
 */
async function withMigrationLock<T>(
  ds: DataSource,
  fn: (qr: QueryRunner) => Promise<T>,
): Promise<T> {
  const qr = ds.createQueryRunner();
  await qr.connect();
  try {
    await qr.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
    try {
      return await fn(qr);
    } finally {
      await qr.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    await qr.release();
  }
}

/**
 * Applies pending migrations under an advisory lock, so several processes
 * starting at once migrate exactly once. Each migration runs in its own transaction.
 */
export async function runMigrations(ds: DataSource, log?: Logger): Promise<string[]> {
  return withMigrationLock(ds, async (qr) => {
    const executor = new MigrationExecutor(ds, qr);
    executor.transaction = 'each';
    const applied = await executor.executePendingMigrations();
    const names = applied.map((m) => m.name);
    if (names.length) log?.info({ migrations: names }, 'database migrated');
    return names;
  });
}

/** Reverts the latest migration, under the same lock. */
export async function revertLastMigration(ds: DataSource, log?: Logger): Promise<void> {
  await withMigrationLock(ds, async (qr) => {
    const executor = new MigrationExecutor(ds, qr);
    executor.transaction = 'each';
    await executor.undoLastMigration();
    log?.info('latest migration reverted');
  });
}
