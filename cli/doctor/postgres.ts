/** The `postgres` check: reachable, and its migrations those of this e2epool. */
import type { DataSource } from 'typeorm';
import { createDataSource, MIGRATIONS_TABLE } from '../../store/data-source';
import { MIGRATIONS } from '../../store/migrations';
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
  const [t] = (await ds.query('SELECT to_regclass($1) IS NOT NULL AS present', [
    MIGRATIONS_TABLE,
  ])) as Array<{ present: boolean }>;
  const applied = t?.present
    ? ((await ds.query(`SELECT name FROM ${MIGRATIONS_TABLE}`)) as Array<{ name: string }>).map(
        (r) => r.name,
      )
    : [];
  const known = MIGRATIONS.map((M) => new M().name!);
  const pending = known.filter((n) => !applied.includes(n));
  const unknown = applied.filter((n) => !known.includes(n));
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
  return ok('postgres', null, `reachable, migrations current (${known.length} applied)`);
}
