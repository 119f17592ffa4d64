import { rmSync } from 'node:fs';
import type { SharedHandles } from './helpers/shared';

export default async function clusterGlobalTeardown(): Promise<void> {
  const h = (globalThis as { __e2epool?: SharedHandles }).__e2epool;
  if (!h) return;
  // The cluster drops its databases on stop: Postgres must still run then.
  await h.temporal.stop();
  await h.pg?.stop();
  rmSync(h.workDir, { recursive: true, force: true });
}
