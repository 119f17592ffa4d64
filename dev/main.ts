/**
 * `npm run dev`: everything e2epool needs on one machine, in one command:
 * the Temporal dev server (with Web UI), Postgres (embedded unless
 * E2EPOOL_DATABASE_URL is set), migrations, the API and the worker.
 * Ctrl-C stops them in order (api and worker, then Temporal, then Postgres).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InventoryStore } from '../config/inventory';
import { createLogger } from '../config/logger';
import { connectDatabase } from '../store/connect';
import { startDevServer, type DevServer } from '../temporal-dev/dev-server';
import { devDataDir } from './data-dir';
import { DEMO_RUNNER, ensureDevInventory } from './dev-inventory';
import { freePort, isPortInUse } from './ports';
import {
  assertEmbeddedPostgresInstalled,
  startPostgresProcess,
  type PostgresProcess,
} from './postgres-process';
import { ProcessRegistry } from './process-registry';
import { formatLogLine } from './pretty';

const env = process.env;
const out = (s: string) => process.stdout.write(`${s}\n`);
const CLI = join(__dirname, '..', 'cli', 'main.js');

async function requireFreePort(port: number, what: string, envVar: string): Promise<void> {
  if (await isPortInUse(port)) {
    throw new Error(
      `port ${port} (${what}) is already in use: is another \`npm run dev\` running? Set ${envVar} to use another port.`,
    );
  }
}

function spawnNode(name: string, args: string[], childEnv: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: childEnv,
    // Own process group: Ctrl-C reaches only this runner, which stops children in order.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  for (const stream of [child.stdout!, child.stderr!]) {
    let buf = '';
    stream.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        out(formatLogLine(name, buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
    });
  }
  return child;
}

function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      res();
    });
  });
}

async function waitHealthy(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null)
      throw new Error('the API exited during startup (see its log above)');
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.status === 200) return;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`the API did not become healthy within ${timeoutMs / 1000}s`);
}

/** What `npm run dev` uses instead of the embedded Postgres. */
const OWN_POSTGRES = 'set E2EPOOL_DATABASE_URL to a Postgres of your own';

async function main(): Promise<void> {
  // Before anything starts: a production-style install (no dev dependencies)
  // gets one line saying what to do, not a stack trace after Temporal is up.
  if (!env.E2EPOOL_DATABASE_URL) {
    try {
      assertEmbeddedPostgresInstalled(OWN_POSTGRES);
    } catch (err) {
      process.stderr.write(`dev: ${(err as Error).message}\n`);
      process.exit(1);
    }
  }
  const log = createLogger(env.E2EPOOL_LOG_LEVEL || 'info').child({ component: 'dev' });
  const dataDir = devDataDir();
  mkdirSync(join(dataDir, 'logs'), { recursive: true });
  const registry = new ProcessRegistry(join(dataDir, 'dev.pids.json'));
  const reaped = registry.reapStale();
  if (reaped.length) {
    out(`dev: stopped processes left by an earlier run: ${reaped.join(', ')}`);
    await new Promise((r) => setTimeout(r, 2000));
  }

  const apiPort = Number(env.E2EPOOL_PORT || 8080);
  const temporalPort = Number(env.TEMPORAL_DEV_PORT || 7233);
  const uiPort = Number(env.TEMPORAL_DEV_UI_PORT || 8233);
  const workerMetricsPort = Number(env.E2EPOOL_WORKER_METRICS_PORT || 9464);
  const namespace = env.TEMPORAL_NAMESPACE || 'default';
  await requireFreePort(apiPort, 'API', 'E2EPOOL_PORT');
  await requireFreePort(temporalPort, 'Temporal', 'TEMPORAL_DEV_PORT');
  await requireFreePort(uiPort, 'Temporal Web UI', 'TEMPORAL_DEV_UI_PORT');
  if (workerMetricsPort > 0)
    await requireFreePort(workerMetricsPort, 'worker metrics', 'E2EPOOL_WORKER_METRICS_PORT');

  let temporal: DevServer | undefined;
  let pg: PostgresProcess | undefined;
  const children: Array<[string, ChildProcess]> = [];
  let stopping = false;

  const shutdown = async (code: number, reason: string) => {
    if (stopping) return;
    stopping = true;
    out(`\ndev: stopping (${reason})...`);
    for (const [, c] of children) c.kill('SIGTERM');
    await Promise.all(children.map(([, c]) => waitExit(c, 25_000)));
    await temporal?.stop();
    await pg?.stop();
    registry.clear();
    out('dev: stopped.');
    process.exit(code);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => void shutdown(0, sig));
  }

  try {
    out(`dev: data directory ${dataDir}`);
    out('dev: starting Temporal dev server...');
    temporal = await startDevServer({
      port: temporalPort,
      uiPort,
      namespace,
      dbFile: join(dataDir, 'temporal.sqlite'),
      logFile: join(dataDir, 'logs', 'temporal.log'),
      detached: true,
    });
    registry.add('temporal', temporal.pid);
    temporal.process.once('exit', () => void shutdown(1, 'the Temporal dev server exited'));

    let databaseUrl = env.E2EPOOL_DATABASE_URL;
    if (!databaseUrl) {
      out('dev: starting embedded Postgres (set E2EPOOL_DATABASE_URL to use your own)...');
      let pgPort = Number(env.E2EPOOL_DEV_PG_PORT || 54329);
      if (await isPortInUse(pgPort)) pgPort = await freePort();
      pg = await startPostgresProcess({
        dataDir: join(dataDir, 'postgres'),
        port: pgPort,
        database: 'e2epool',
        logFile: join(dataDir, 'logs', 'postgres.log'),
        instead: OWN_POSTGRES,
      });
      registry.add('postgres', pg.pid);
      pg.child.once('exit', () => void shutdown(1, 'embedded Postgres exited'));
      databaseUrl = pg.url;
    }

    const ds = await connectDatabase(
      { url: databaseUrl, poolSize: 1, applicationName: 'e2epool-dev' },
      log,
      30_000,
    );
    await ds.destroy();

    let inventoryPath = env.E2EPOOL_INVENTORY_PATH;
    if (!inventoryPath) {
      inventoryPath = existsSync('inventory.yml')
        ? resolve('inventory.yml')
        : ensureDevInventory(dataDir).path;
    }
    // Fails here, with one line, if it is invalid.
    const demo = InventoryStore.load(inventoryPath, log).inventory.get(DEMO_RUNNER);

    // The fleet page needs an admin token: one of the data directory's own,
    // kept across restarts, unless E2EPOOL_ADMIN_TOKEN is set.
    const adminTokenFile = join(dataDir, 'admin-token');
    if (!env.E2EPOOL_ADMIN_TOKEN && !existsSync(adminTokenFile))
      writeFileSync(adminTokenFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const adminToken = env.E2EPOOL_ADMIN_TOKEN ?? readFileSync(adminTokenFile, 'utf8').trim();

    const childEnv: NodeJS.ProcessEnv = {
      ...env,
      E2EPOOL_ADMIN_TOKEN: adminToken,
      E2EPOOL_DATABASE_URL: databaseUrl,
      E2EPOOL_INVENTORY_PATH: inventoryPath,
      E2EPOOL_PORT: String(apiPort),
      E2EPOOL_WORKER_METRICS_PORT: String(workerMetricsPort),
      TEMPORAL_ADDRESS: temporal.address,
      TEMPORAL_NAMESPACE: namespace,
    };
    const worker = spawnNode('worker', ['worker'], childEnv);
    children.push(['worker', worker]);
    registry.add('worker', worker.pid);
    const api = spawnNode('api', ['api'], childEnv);
    children.push(['api', api]);
    registry.add('api', api.pid);
    for (const [name, c] of children) {
      c.once('exit', (code) => void shutdown(1, `${name} exited with code ${code}`));
    }
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    await waitHealthy(apiUrl, api, 120_000);

    // A local agent for the demo bare-metal runner, so a checkpoint can go all the way round.
    const socket = join(dataDir, 'agent.sock');
    if (demo) {
      const agentConfig = join(dataDir, 'agent.dev.yml');
      writeFileSync(
        agentConfig,
        [
          '# Written by `npm run dev` for the demo runner; rewritten at every start.',
          `controller_url: ws://127.0.0.1:${apiPort}/ws/agent`,
          `runner_id: ${demo.runner_id}`,
          `token: ${demo.token}`,
          ...(demo.agent_token === undefined ? [] : [`agent_token: ${demo.agent_token}`]),
          `socket_path: ${socket}`,
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      const agent = spawnNode('agent', ['agent', '--config', agentConfig], env);
      children.unshift(['agent', agent]);
      registry.add('agent', agent.pid);
      agent.once('exit', (code) => void shutdown(1, `agent exited with code ${code}`));
    }

    out('');
    out('e2epool is running:');
    out(`  API            ${apiUrl}   (try: curl ${apiUrl}/healthz)`);
    out(`  Temporal UI    ${temporal.uiUrl}`);
    out(
      `  Fleet page     ${apiUrl}/ui   (admin token: ${env.E2EPOOL_ADMIN_TOKEN ? 'E2EPOOL_ADMIN_TOKEN' : adminTokenFile})`,
    );
    out(`  API reference  ${apiUrl}/docs`);
    out(
      `  Metrics        ${apiUrl}/metrics (API), ${
        workerMetricsPort > 0
          ? `http://127.0.0.1:${workerMetricsPort}/metrics (worker)`
          : 'worker: a free port, in its "worker running" log line'
      }`,
    );
    out(`  Temporal       ${temporal.address}  namespace ${namespace}`);
    out(`  Postgres       ${pg ? databaseUrl : '(E2EPOOL_DATABASE_URL)'}`);
    out(`  Inventory      ${inventoryPath}`);
    out(`  Logs           ${join(dataDir, 'logs')}`);
    if (demo) {
      const cli = `node ${join(__dirname, '..', '..', 'bin', 'e2epool.js')}`;
      out(`  Agent          runner ${demo.runner_id}, socket ${socket}`);
      out('');
      out('Watch a checkpoint go round (then look it up in the Temporal UI by E2eRunnerId):');
      out(`  NAME=$(${cli} create --job-id 1 --socket ${socket})`);
      out(`  ${cli} finalize --checkpoint "$NAME" --status failed --socket ${socket}`);
      out(`  ${cli} status --checkpoint "$NAME" --socket ${socket}`);
    }
    out('Press Ctrl-C to stop everything.');
  } catch (err) {
    process.stderr.write(`dev: ${err instanceof Error ? err.message : String(err)}\n`);
    await shutdown(1, 'startup failed');
  }
}

void main();
