import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

// Beside this file when run from source; two levels up when compiled into dist/.
const SCRIPT =
  [
    join(__dirname, 'ensure-temporal.sh'),
    join(__dirname, '..', '..', 'temporal-dev', 'ensure-temporal.sh'),
  ].find((p) => existsSync(p)) ?? join(__dirname, 'ensure-temporal.sh');

/**
 * Path of a usable `temporal` (or `tctl`) binary, building the pinned version
 * into ~/.cache/e2epool on first use. Progress is shown on stderr.
 */
export function ensureBinary(tool: 'temporal' | 'tctl' = 'temporal'): string {
  const res = spawnSync('bash', [SCRIPT, tool], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  if (res.error) throw new Error(`cannot run ${SCRIPT}: ${res.error.message}`);
  if (res.status !== 0)
    throw new Error(`could not provide a '${tool}' binary (see the messages above)`);
  const path = res.stdout.trim().split('\n').pop();
  if (!path) throw new Error(`${SCRIPT} printed no path`);
  return path;
}
