import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Connection } from '@temporalio/client';
import { searchAttributeFlags } from '../common/search-attributes';
import { ensureBinary } from './binary';

export interface DevServerOptions {
  /** Path of the `temporal` binary; provided by ensure-temporal.sh when omitted. */
  bin?: string;
  port: number;
  /** Web UI port; `null` runs headless. */
  uiPort: number | null;
  /** SQLite file that keeps state across restarts; omitted: in memory. */
  dbFile?: string;
  namespace: string;
  /** Server output goes here (appended); omitted: discarded. */
  logFile?: string;
  /** Own process group, so a terminal Ctrl-C reaches only the parent, which stops it in order. */
  detached?: boolean;
  /** Server dynamic config values, e.g. `{ 'limit.historyCount.suggestContinueAsNew': 100 }`. */
  dynamicConfig?: Record<string, unknown>;
}

/** A running `temporal server start-dev`. */
export interface DevServer {
  address: string;
  namespace: string;
  uiUrl: string | null;
  pid: number | undefined;
  process: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Dynamic config every dev server gets (a caller's values win), as
 * ops/temporal/dynamicconfig.yaml gives the production cluster (docs/operators.md,
 * "Temporal and Postgres"); Temporal Server 1.29 ships both off:
 * - task priority, which e2epool's GitLab queue relies on ("GitLab rate budget");
 * - eager activity execution: a reset step scheduled on the worker's own queue
 *   comes back with the workflow task's completion instead of through matching.
 */
export const DEV_SERVER_DYNAMIC_CONFIG: Readonly<Record<string, unknown>> = {
  'matching.useNewMatcher': true,
  'system.enableActivityEagerExecution': true,
};

/** The dev server listens on loopback only. */
const IP = '127.0.0.1';
const START_TIMEOUT_MS = 60_000;

/** The command line for `temporal server start-dev` with e2epool's search attributes. */
function devServerArgs(o: DevServerOptions): string[] {
  const args = ['server', 'start-dev', '--ip', IP, '--port', String(o.port), '--log-level', 'warn'];
  if (o.uiPort === null) args.push('--headless');
  else args.push('--ui-port', String(o.uiPort));
  if (o.dbFile) args.push('--db-filename', o.dbFile);
  if (o.namespace !== 'default') args.push('--namespace', o.namespace);
  for (const sa of searchAttributeFlags()) args.push('--search-attribute', sa);
  for (const [k, v] of Object.entries({ ...DEV_SERVER_DYNAMIC_CONFIG, ...o.dynamicConfig }))
    args.push('--dynamic-config-value', `${k}=${JSON.stringify(v)}`);
  return args;
}

/**
 * Starts the Temporal dev server and resolves once its frontend answers for
 * the namespace. Rejects (and kills the process) if it exits or times out.
 */
export async function startDevServer(o: DevServerOptions): Promise<DevServer> {
  const bin = o.bin ?? ensureBinary('temporal');
  if (o.dbFile) mkdirSync(dirname(o.dbFile), { recursive: true });
  const child = spawn(bin, devServerArgs(o), {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: o.detached ?? false,
  });
  let tail = '';
  const keepTail = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keepTail);
  child.stderr!.on('data', keepTail);
  if (o.logFile) {
    mkdirSync(dirname(o.logFile), { recursive: true });
    const out = createWriteStream(o.logFile, { flags: 'a' });
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
  }
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const address = `${IP}:${o.port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  let lastErr: unknown;
  let done = false;
  void exited.then(() => (done = true));
  while (!done && Date.now() < deadline) {
    try {
      const conn = await Connection.connect({ address, connectTimeout: 2000 });
      try {
        await conn.workflowService.describeNamespace({ namespace: o.namespace });
        return {
          address,
          namespace: o.namespace,
          uiUrl: o.uiPort === null ? null : `http://${IP}:${o.uiPort}`,
          pid: child.pid,
          process: child,
          stop,
        };
      } finally {
        await conn.close();
      }
    } catch (err) {
      lastErr = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  await stop();
  const why = done
    ? `exited with code ${child.exitCode}`
    : `did not answer within ${START_TIMEOUT_MS / 1000}s`;
  throw new Error(
    `Temporal dev server ${why} (${String((lastErr as Error | undefined)?.message ?? '')}). Output:\n${tail}`,
  );
}
