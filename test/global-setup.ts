/**
 * Starts what every integration test shares: a real Temporal dev server on
 * free ports and a real Postgres (embedded, or E2EPOOL_TEST_DATABASE_URL).
 * Tests isolate themselves: own database, own task queue, own ids.
 */
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../dev/ports';
import { startPostgresProcess } from '../dev/postgres-process';
import { ensureBinary } from '../temporal-dev/binary';
import { startDevServer } from '../temporal-dev/dev-server';
import { setShared, type SharedHandles } from './helpers/shared';

export default async function globalSetup(): Promise<void> {
  const temporalBin = ensureBinary('temporal');
  const workDir = mkdtempSync(join(tmpdir(), 'e2epool-test-'));
  // As root, embedded Postgres runs as the `postgres` user, which must reach its data directory.
  chmodSync(workDir, 0o755);
  const [temporalPort, pgPort] = await Promise.all([freePort(), freePort()]);

  const temporalP = startDevServer({
    bin: temporalBin,
    port: temporalPort,
    uiPort: null,
    namespace: 'default',
    logFile: join(workDir, 'temporal.log'),
  });
  let adminUrl = process.env.E2EPOOL_TEST_DATABASE_URL;
  const pgP = adminUrl
    ? Promise.resolve(undefined)
    : startPostgresProcess({
        dataDir: join(workDir, 'pg'),
        port: pgPort,
        database: 'e2epool_test',
        logFile: join(workDir, 'postgres.log'),
        instead: 'set E2EPOOL_TEST_DATABASE_URL to a Postgres of your own',
      });
  const [temporal, pg] = await Promise.all([temporalP, pgP]);
  if (pg) adminUrl = pg.url;

  const handles: SharedHandles = { temporal, pg, workDir };
  (globalThis as { __e2epool?: SharedHandles }).__e2epool = handles;
  setShared({
    temporalAddress: temporal.address,
    temporalNamespace: 'default',
    temporalBin,
    adminDatabaseUrl: adminUrl!,
    workDir,
  });
}
