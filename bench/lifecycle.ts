/**
 * `npm run bench`: checkpoint lifecycles (create → finalize → terminal state)
 * through the REST API on bare-metal runners with a zero-delay agent, measured
 * side by side with a bare Temporal baseline of the same shape on the same
 * dev server, worker process and Postgres. Prints p50/p99 create latency,
 * lifecycles per second, and the ratios.
 *
 * Env: BENCH_RUNNERS (8), BENCH_LIFECYCLES per runner (15), BENCH_ROUNDS (3),
 * BENCH_COUNTED (5): lifecycles per side of the counting pass that follows
 * the timed rounds (see trace.ts; 0 skips it).
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection, WithStartWorkflowOperation } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import pino from 'pino';
import type { AgentGateway } from '../activities/agent-gateway';
import { WorkerMetrics } from '../activities/metrics';
import { startApiServer } from '../api/server';
import { InventoryStore } from '../config/inventory';
import { loadSettings } from '../config/settings';
import { loadTemporalSettings } from '../config/temporal';
import { connectDatabase } from '../store/connect';
import { freePort } from '../dev/ports';
import { startPostgresProcess } from '../dev/postgres-process';
import { startDevServer } from '../temporal-dev/dev-server';
import { writeFileSync } from 'node:fs';
import { createWorker } from '../worker/worker';
import { baselineCreate, baselineFinalize } from './baseline-workflows';
import * as baselineActivities from './baseline-activities';
import { quantile } from './measure';
import { report } from './report';
import {
  countPostgres,
  countsTable,
  historyCounts,
  meanOf,
  pgDiff,
  pgSnapshot,
  type HistoryCounts,
  type PgCounts,
} from './trace';

const RUNNERS = Number(process.env.BENCH_RUNNERS ?? 8);
const PER_RUNNER = Number(process.env.BENCH_LIFECYCLES ?? 15);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** Lifecycles per side in the counting pass (after the timed rounds; 0: none). */
const COUNTED = Number(process.env.BENCH_COUNTED ?? 5);

interface Result {
  createMs: number[];
  lifecycles: number;
  seconds: number;
}

async function drive(
  runners: string[],
  lifecycle: (runner: string, i: number) => Promise<number>,
): Promise<Result> {
  const createMs: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    runners.map(async (r) => {
      for (let i = 0; i < PER_RUNNER; i++) createMs.push(await lifecycle(r, i));
    }),
  );
  return {
    createMs,
    lifecycles: runners.length * PER_RUNNER,
    seconds: (performance.now() - t0) / 1000,
  };
}

function summary(r: Result) {
  const s = [...r.createMs].sort((a, b) => a - b);
  return { p50: quantile(s, 0.5), p99: quantile(s, 0.99), perSecond: r.lifecycles / r.seconds };
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const log = pino({ level: 'silent' });
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-bench-'));
  chmodSync(dir, 0o755);
  const [temporalPort, pgPort] = await Promise.all([freePort(), freePort()]);
  process.stdout.write('bench: starting Temporal dev server and Postgres...\n');
  const [temporal, pg] = await Promise.all([
    startDevServer({ port: temporalPort, uiPort: null, namespace: 'default' }),
    process.env.E2EPOOL_DATABASE_URL
      ? Promise.resolve(undefined)
      : startPostgresProcess({ dataDir: join(dir, 'pg'), port: pgPort, database: 'bench' }),
  ]);
  const databaseUrl = process.env.E2EPOOL_DATABASE_URL ?? pg!.url;
  try {
    const runners = Array.from({ length: RUNNERS }, (_, i) => `bench-${i}`);
    const inventoryPath = join(dir, 'inventory.yml');
    writeFileSync(
      inventoryPath,
      `runners:\n${runners.map((r) => `  - runner_id: ${r}\n    backend: bare_metal\n    token: tok-${r}\n    reset_cmd: "true"\n`).join('')}`,
    );
    const env = {
      E2EPOOL_DATABASE_URL: databaseUrl,
      E2EPOOL_PORT: '0',
      E2EPOOL_HOST: '127.0.0.1',
      E2EPOOL_TASK_QUEUE: 'bench-e2epool',
      E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
      E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.05',
      E2EPOOL_POLLER_ENABLED: 'false',
      TEMPORAL_ADDRESS: temporal.address,
      TEMPORAL_CONFIG_FILE: join(dir, 'none.toml'),
    };
    const settings = loadSettings(env);
    const inventory = InventoryStore.load(inventoryPath, log);
    countPostgres();
    const ds = await connectDatabase({ url: databaseUrl, poolSize: settings.dbPoolSize }, log);
    const connection = await Connection.connect({ address: temporal.address });
    const client = new Client({ connection });
    const native = await NativeConnection.connect({ address: temporal.address });
    let sessions = 0;
    const agents: AgentGateway = {
      exec: async () => ({ exitCode: 0, stdout: '', stderr: '' }),
      isConnected: async () => true,
      // Every look is a new session: the agent is back at once after each boot.
      session: async () => ({ sessionId: `bench-${++sessions}`, live: true }),
    };
    const ours = await createWorker({
      connection: native,
      namespace: 'default',
      taskQueue: settings.taskQueue,
      deps: {
        dataSource: ds,
        inventory,
        settings,
        log,
        agents,
        gitlab: null,
        metrics: new WorkerMetrics(),
      },
    });
    const baseline = await Worker.create({
      connection: native,
      taskQueue: 'bench-baseline',
      workflowsPath: require.resolve('./baseline-workflows'),
      activities: baselineActivities,
    });
    const api = await startApiServer({
      settings,
      dataSource: ds,
      temporal: connection,
      temporalSettings: loadTemporalSettings(env),
      inventory,
      log,
    });
    const running = Promise.all([ours.run(), baseline.run()]);

    /** Called between the create's answer and the finalize (the counting pass). */
    let onCreated: () => void = () => undefined;
    const e2epoolLifecycle = async (runner: string, i: number) => {
      const t = performance.now();
      const res = await fetch(`${api.url}/checkpoint/create`, {
        method: 'POST',
        headers: { authorization: `Bearer tok-${runner}`, 'content-type': 'application/json' },
        body: JSON.stringify({ runner_id: runner, job_id: `${i}` }),
      });
      const created = (await res.json()) as { name: string };
      const ms = performance.now() - t;
      if (res.status !== 201) throw new Error(`create: ${res.status} ${JSON.stringify(created)}`);
      onCreated();
      const fin = await fetch(`${api.url}/checkpoint/finalize`, {
        method: 'POST',
        headers: { authorization: `Bearer tok-${runner}`, 'content-type': 'application/json' },
        body: JSON.stringify({ checkpoint_name: created.name, status: 'failure' }),
      });
      if (fin.status !== 202) throw new Error(`finalize: ${fin.status}`);
      await client.workflow.getHandle(`e2epool-runner-${runner}`).result();
      return ms;
    };
    const baselineLifecycle = async (runner: string, i: number) => {
      const t = performance.now();
      const op = new WithStartWorkflowOperation('baselineWorkflow', {
        workflowId: `baseline-${runner}`,
        taskQueue: 'bench-baseline',
        workflowIdConflictPolicy: 'USE_EXISTING',
        workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      });
      await client.workflow.executeUpdateWithStart(baselineCreate, {
        args: [`${i}`],
        startWorkflowOperation: op,
      });
      const ms = performance.now() - t;
      onCreated();
      const handle = await op.workflowHandle();
      await handle.executeUpdate(baselineFinalize, { args: [randomUUID()] });
      await handle.result();
      return ms;
    };

    // Warm up both paths (bundles, connections, JIT) before measuring.
    await drive(runners.slice(0, 2), async (r, i) => (i < 2 ? baselineLifecycle(r, i) : 0));
    await drive(runners.slice(0, 2), async (r, i) => (i < 2 ? e2epoolLifecycle(r, i) : 0));

    const rows: Array<{
      round: number;
      e2e: ReturnType<typeof summary>;
      base: ReturnType<typeof summary>;
    }> = [];
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate which goes first, so a machine that gets busier or quieter
      // during the run does not favour one side.
      if (round % 2 === 1) {
        const base = summary(await drive(runners, baselineLifecycle));
        rows.push({ round, base, e2e: summary(await drive(runners, e2epoolLifecycle)) });
      } else {
        const e2e = summary(await drive(runners, e2epoolLifecycle));
        rows.push({ round, e2e, base: summary(await drive(runners, baselineLifecycle)) });
      }
    }
    const f = (n: number) => n.toFixed(1);
    process.stdout.write(
      `\nbench: ${RUNNERS} runners × ${PER_RUNNER} lifecycles per round, ${ROUNDS} rounds (bare metal, zero-delay agent)\n`,
    );
    process.stdout.write(
      'round  create p50 ms (e2epool/base)  create p99 ms (e2epool/base)  lifecycles/s (e2epool/base)  p50 ratio  throughput ratio\n',
    );
    for (const r of rows) {
      process.stdout.write(
        `${String(r.round).padEnd(6)} ${`${f(r.e2e.p50)} / ${f(r.base.p50)}`.padEnd(30)} ${`${f(r.e2e.p99)} / ${f(r.base.p99)}`.padEnd(29)} ${`${f(r.e2e.perSecond)} / ${f(r.base.perSecond)}`.padEnd(28)} ${(r.e2e.p50 / r.base.p50).toFixed(2).padEnd(10)} ${(r.e2e.perSecond / r.base.perSecond).toFixed(2)}\n`,
      );
    }
    const median = (xs: number[]) =>
      quantile(
        [...xs].sort((a, b) => a - b),
        0.5,
      );
    const p50Ratio = median(rows.map((r) => r.e2e.p50 / r.base.p50));
    const tputRatio = median(rows.map((r) => r.e2e.perSecond / r.base.perSecond));
    const rowOf = (r: (typeof rows)[number]) => r.e2e.p50 / r.base.p50;
    report('lifecycle', {
      create: `${rows.map((r) => `${f(r.e2e.p50)} / ${f(r.base.p50)}`).join(' … ')} (**${p50Ratio.toFixed(2)}**; rounds ${rows.map((r) => rowOf(r).toFixed(2)).join(', ')})`,
      throughput: `${f(median(rows.map((r) => r.e2e.perSecond)))} / ${f(median(rows.map((r) => r.base.perSecond)))} (**${tputRatio.toFixed(2)}**; rounds ${rows.map((r) => (r.e2e.perSecond / r.base.perSecond).toFixed(2)).join(', ')})`,
    });
    process.stdout.write(
      `\nmedian over rounds: create p50 ratio ${p50Ratio.toFixed(2)} (target ≤ 1.3): ${p50Ratio <= 1.3 ? 'met' : 'MISSED'}; ` +
        `throughput ratio ${tputRatio.toFixed(2)} (target ≥ 0.85): ${tputRatio >= 0.85 ? 'met' : 'MISSED'}\n`,
    );

    if (COUNTED > 0) {
      const count = async (
        lifecycle: (runner: string, i: number) => Promise<number>,
        runner: string,
        workflowId: string,
      ) => {
        const create: PgCounts[] = [];
        const whole: PgCounts[] = [];
        const history: HistoryCounts[] = [];
        for (let i = 0; i < COUNTED; i++) {
          const start = pgSnapshot();
          onCreated = () => create.push(pgDiff(start, pgSnapshot()));
          await lifecycle(runner, 10_000 + i);
          whole.push(pgDiff(start, pgSnapshot()));
          history.push(await historyCounts(client, workflowId));
        }
        onCreated = () => undefined;
        return { create: meanOf(create), whole: meanOf(whole), history: meanOf(history) };
      };
      // One lifecycle at a time, so every query counted is this lifecycle's.
      const e = await count(e2epoolLifecycle, runners[0]!, `e2epool-runner-${runners[0]}`);
      const b = await count(baselineLifecycle, runners[0]!, `baseline-${runners[0]}`);
      process.stdout.write(
        countsTable(`counts per create (mean of ${COUNTED}; from request to answer)`, [
          { name: 'e2epool', pg: e.create },
          { name: 'baseline', pg: b.create },
        ]) +
          countsTable(`counts per lifecycle (mean of ${COUNTED}; create → finalize → terminal)`, [
            { name: 'e2epool', pg: e.whole, history: e.history },
            { name: 'baseline', pg: b.whole, history: b.history },
          ]),
      );
    }

    await api.close();
    ours.shutdown();
    baseline.shutdown();
    await running;
    await native.close();
    await connection.close();
    await ds.destroy();
  } finally {
    await Promise.all([temporal.stop(), pg?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
