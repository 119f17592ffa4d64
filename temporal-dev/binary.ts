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

const SERVER_SCRIPT = SCRIPT.replace(/ensure-temporal\.sh$/, 'ensure-temporal-server.sh');

/** Where ensure-temporal-server.sh put the production-mode server of the pinned version. */
export interface TemporalServerInstall {
  server: string;
  sqlTool: string;
  /** schema/postgresql/v12 of that version (temporal/ and visibility/ below it). */
  schemaDir: string;
}

/**
 * temporal-server, temporal-sql-tool and their Postgres schemas, building the
 * pinned version into ~/.cache/e2epool on first use (progress on stderr).
 */
export function ensureTemporalServer(): TemporalServerInstall {
  const res = spawnSync('bash', [SERVER_SCRIPT], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  if (res.error) throw new Error(`cannot run ${SERVER_SCRIPT}: ${res.error.message}`);
  if (res.status !== 0)
    throw new Error('could not provide temporal-server (see the messages above)');
  const kv = Object.fromEntries(
    res.stdout
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string | undefined>;
  if (!kv.server || !kv.sql_tool || !kv.schema_dir)
    throw new Error(`${SERVER_SCRIPT} printed no server/sql_tool/schema_dir`);
  return { server: kv.server, sqlTool: kv.sql_tool, schemaDir: kv.schema_dir };
}
