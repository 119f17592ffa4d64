/** The `postgres` check: reachable, and its migrations those of this e2epool. */
import type { DataSource } from 'typeorm';
import { createDataSource, schemaStatus } from '../../store/data-source';
import { withTimeout } from '../../worker/search-attributes';
import { bad, guarded, message, ok, plural, type Context, type DoctorCheck } from './check';

export interface Database {
  check: DoctorCheck;
  ds: DataSource | null;
  /** Whether the tables are all there (the registry and sessions can be read). */
  current: boolean;
}

const FIX_REACH = 'start Postgres, or set E2EPOOL_DATABASE_URL to reach it';

/** Connects (the caller destroys `ds`) and compares the applied migrations with ours. */
export async function databaseCheck(c: Context): Promise<Database> {
  const ds = createDataSource({
    url: c.settings.databaseUrl,
    poolSize: 2,
    applicationName: 'e2epool-doctor',
  });
  try {
    // Never `runMigrations` nor TypeORM's pending-migration helpers: both create the migrations table.
    await withTimeout('connecting to Postgres', c.ms, ds.initialize());
  } catch (err) {
    if (ds.isInitialized) await ds.destroy().catch(() => undefined);
    return {
      check: bad('postgres', null, `cannot reach Postgres: ${message(err)}`, FIX_REACH),
      ds: null,
      current: false,
    };
  }
  const check = await guarded('postgres', null, c.ms, FIX_REACH, () => migrationsCheck(ds));
  return { check, ds, current: check.ok };
}

async function migrationsCheck(ds: DataSource): Promise<DoctorCheck> {
  const { pending, unknown, known } = await schemaStatus(ds);
  if (pending.length) {
    return bad(
      'postgres',
      null,
      `reachable, ${plural(pending.length, 'migration')} pending: ${pending.join(', ')}`,
      'run `e2epool migrate` (the API and the worker also apply them at start)',
    );
  }
  if (unknown.length) {
    return bad(
      'postgres',
      null,
      `reachable, but it has migrations this e2epool does not know (${unknown.join(', ')}): a newer version migrated it`,
      'run the same e2epool version everywhere',
    );
  }
  return ok('postgres', null, `reachable, migrations current (${known} applied)`);
}
