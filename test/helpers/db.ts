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

let checkpointSeq = 0;

/**
 * Inserts a bare-metal checkpoint row of `runnerId` in `state` (a unique name,
 * job and workflow id each call), ended at `endedAt`; returns its id.
 */
export async function insertCheckpoint(
  ds: { query(sql: string, params?: unknown[]): Promise<unknown> },
  runnerId: string,
  state: string,
  endedAt: Date | null,
): Promise<number> {
  const seq = ++checkpointSeq;
  const [{ id }] = (await ds.query(
    `INSERT INTO checkpoints (name, runner_id, job_id, backend, state, workflow_id, ended_at)
     VALUES ($1, $2, $3, 'bare_metal', $4, $5, $6) RETURNING id`,
    [
      `job-${seq}-1700000000-0000000${seq % 10}`,
      runnerId,
      String(seq),
      state,
      `wf-${seq}`,
      endedAt,
    ],
  )) as [{ id: number }];
  return id;
}
