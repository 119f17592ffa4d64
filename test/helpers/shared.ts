import type { PostgresProcess } from '../../dev/postgres-process';
import type { DevServer } from '../../temporal-dev/dev-server';

/** What global setup shares with test files (through the environment). */
export interface SharedEnv {
  temporalAddress: string;
  temporalBin: string;
  /** A database URL whose user may CREATE DATABASE. */
  adminDatabaseUrl: string;
  workDir: string;
}

export interface SharedHandles {
  temporal: DevServer;
  pg: PostgresProcess | undefined;
  workDir: string;
}

const KEY = 'E2EPOOL_TEST_SHARED';

export function setShared(s: SharedEnv): void {
  process.env[KEY] = JSON.stringify(s);
}

export function shared(): SharedEnv {
  const raw = process.env[KEY];
  if (!raw) throw new Error('test/global-setup.ts did not run (start tests with `npm test`)');
  return JSON.parse(raw) as SharedEnv;
}
