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

/** How the database's applied migrations compare with this e2epool's. */
export interface SchemaStatus {
  /** Ours that the database has not applied (all of them on an empty database). */
  pending: string[];
  /** Applied ones this e2epool does not know: a newer version migrated the database. */
  unknown: string[];
  /** How many migrations this e2epool has. */
  known: number;
}

/**
 * Compares the applied migrations with ours, reading only: never
 * `runMigrations` nor TypeORM's pending-migration helpers here, both create
 * the migrations table.
 */
export async function schemaStatus(ds: DataSource): Promise<SchemaStatus> {
  const [t] = (await ds.query('SELECT to_regclass($1) IS NOT NULL AS present', [
    MIGRATIONS_TABLE,
  ])) as Array<{ present: boolean }>;
  const applied = t?.present
    ? ((await ds.query(`SELECT name FROM ${MIGRATIONS_TABLE}`)) as Array<{ name: string }>).map(
        (r) => r.name,
      )
    : [];
  const known = MIGRATIONS.map((M) => new M().name!);
  return {
    pending: known.filter((n) => !applied.includes(n)),
    unknown: applied.filter((n) => !known.includes(n)),
    known: known.length,
  };
}

/** The database schema is not the one this e2epool reads: a command that only reads refuses. */
export class SchemaNotCurrent extends Error {
  override name = 'SchemaNotCurrent';
}

/** Throws SchemaNotCurrent, saying what to do, unless every migration of ours is applied. */
export async function assertSchemaCurrent(ds: DataSource): Promise<void> {
  const { pending } = await schemaStatus(ds);
  if (pending.length) {
    throw new SchemaNotCurrent(
      `the database schema is behind this e2epool (${pending.length} migration(s) pending: ` +
        `${pending.join(', ')}); run \`e2epool migrate\` first (nothing was written)`,
    );
  }
}
