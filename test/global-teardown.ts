import { rmSync } from 'node:fs';
import type { SharedHandles } from './helpers/shared';

export default async function globalTeardown(): Promise<void> {
  const h = (globalThis as { __e2epool?: SharedHandles }).__e2epool;
  if (!h) return;
  await Promise.all([h.temporal.stop(), h.pg?.stop()]);
  rmSync(h.workDir, { recursive: true, force: true });
}
