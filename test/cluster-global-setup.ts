/**
 * Global setup of `npm run test:cluster`: a real Postgres (embedded, or
 * E2EPOOL_TEST_DATABASE_URL) and on it a production-mode Temporal Server
 * (temporal-dev/cluster.ts: Postgres persistence and visibility, mTLS
 * frontend, namespace `e2epool-ci`). Tests read its address, namespace and
 * client certificate through test/helpers/shared.ts, as under `npm test`.
 */
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../dev/ports';
import { startPostgresProcess } from '../dev/postgres-process';
import { ensureBinary } from '../temporal-dev/binary';
import { startTemporalCluster } from '../temporal-dev/cluster';
import { setShared, type SharedHandles } from './helpers/shared';

export default async function clusterGlobalSetup(): Promise<void> {
  const temporalBin = ensureBinary('temporal');
  const workDir = mkdtempSync(join(tmpdir(), 'e2epool-cluster-test-'));
  // As root, embedded Postgres runs as the `postgres` user, which must reach its data directory.
  chmodSync(workDir, 0o755);
  let adminUrl = process.env.E2EPOOL_TEST_DATABASE_URL;
  const pg = adminUrl
    ? undefined
    : await startPostgresProcess({
        dataDir: join(workDir, 'pg'),
        port: await freePort(),
        database: 'e2epool_test',
        logFile: join(workDir, 'postgres.log'),
        instead: 'set E2EPOOL_TEST_DATABASE_URL to a Postgres of your own',
      });
  if (pg) adminUrl = pg.url;
  const temporal = await startTemporalCluster({
    adminDatabaseUrl: adminUrl!,
    workDir,
    temporalBin,
  }).catch(async (err: unknown) => {
    await pg?.stop();
    throw err;
  });

  const handles: SharedHandles = { temporal, pg, workDir };
  (globalThis as { __e2epool?: SharedHandles }).__e2epool = handles;
  setShared({
    temporalAddress: temporal.address,
    temporalNamespace: temporal.namespace,
    temporalTls: temporal.tls,
    temporalBin,
    adminDatabaseUrl: adminUrl!,
    workDir,
  });
}
