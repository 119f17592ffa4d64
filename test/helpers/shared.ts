import type { PostgresProcess } from '../../dev/postgres-process';
import type { ClusterTls, TemporalCluster } from '../../temporal-dev/cluster';
import type { DevServer } from '../../temporal-dev/dev-server';

/** What global setup shares with test files (through the environment). */
export interface SharedEnv {
  temporalAddress: string;
  /** The shared Temporal's namespace: `default` on the dev server, `e2epool-ci` on the cluster. */
  temporalNamespace: string;
  /** Client certificate, key and CA of the cluster's mTLS frontend; absent on the dev server. */
  temporalTls?: ClusterTls;
  temporalBin: string;
  /** A database URL whose user may CREATE DATABASE. */
  adminDatabaseUrl: string;
  workDir: string;
}

export interface SharedHandles {
  temporal: DevServer | TemporalCluster;
  pg: PostgresProcess | undefined;
  workDir: string;
}

const KEY = 'E2EPOOL_TEST_SHARED';

export function setShared(s: SharedEnv): void {
  process.env[KEY] = JSON.stringify(s);
}

export function shared(): SharedEnv {
  const raw = process.env[KEY];
  if (!raw)
    throw new Error(
      'test/global-setup.ts did not run (start tests with `npm test` or `npm run test:cluster`)',
    );
  return JSON.parse(raw) as SharedEnv;
}
