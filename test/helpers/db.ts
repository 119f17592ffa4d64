import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import type { DataSource } from 'typeorm';
import { createDataSource, runMigrations } from '../../store/data-source';
import { shared } from './shared';

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

async function admin<T>(fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: shared().adminDatabaseUrl });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** A fresh, empty database of its own for one test file. */
export async function createTestDatabase(prefix = 't'): Promise<TestDatabase> {
  const name = `e2epool_${prefix}_${randomBytes(5).toString('hex')}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  return {
    name,
    url: withDatabase(shared().adminDatabaseUrl, name),
    drop: () =>
      admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}

/** A fresh database with every migration applied, and a DataSource on it. */
export async function createMigratedDatabase(
  prefix = 't',
): Promise<{ db: TestDatabase; ds: DataSource; close(): Promise<void> }> {
  const db = await createTestDatabase(prefix);
  const ds = createDataSource({ url: db.url, poolSize: 4 });
  await ds.initialize();
  await runMigrations(ds);
  return {
    db,
    ds,
    async close() {
      await ds.destroy();
      await db.drop();
    },
  };
}
