/**
 * `npm run bench`: checkpoint lifecycles (create → finalize → terminal state)
 * through the REST API on bare-metal runners with a zero-delay agent, measured
 * side by side with two bare Temporal baselines of the same message shape and
 * activity count on the same dev server, worker process and Postgres:
 * `base`, whose activities are all ordinary task-queue activities (the floor
 * the targets are set against), and `same`, whose activities are of the
 * checkpoint workflow's kinds (its bookkeeping is local activities), so
 * what e2epool spends beyond `same` is its own (API, Postgres, workflow code).
 * Prints create p50/p99, finalize → closed p50/p99, lifecycles per second,
 * CPU per lifecycle by process, and the ratios.
 *
 * Env: BENCH_RUNNERS (8), BENCH_LIFECYCLES per runner (15), BENCH_ROUNDS (3),
 * BENCH_COUNTED (5): lifecycles per side of the counting pass that follows
 * the timed rounds (see trace.ts; 0 skips it).
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WithStartWorkflowOperation } from '@temporalio/client';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import pino from 'pino';
import type { AgentGateway } from '../activities/agent-gateway';
import { WorkerMetrics } from '../activities/metrics';
import { startApiServer } from '../api/server';
import { loadTemporalSettings } from '../config/temporal';
import { freePort } from '../dev/ports';
import { startPostgresProcess } from '../dev/postgres-process';
import { startDevServer } from '../temporal-dev/dev-server';
import { writeFileSync } from 'node:fs';
import { createWorker } from '../worker/worker';
import { baselineCreate, baselineFinalize, type BaselineKinds } from './baseline-workflows';
import * as baselineActivities from './baseline-activities';
import { cpuSeconds, postgresCpuSeconds, quantile } from './measure';
import { report } from './report';
import { connectBenchStack } from './stack';
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

/** One lifecycle's times: create request → answer, finalize request → run closed. */
interface Times {
  createMs: number;
  finalizeMs: number;
}
type Lifecycle = (runner: string, i: number) => Promise<Times>;

/** CPU seconds so far: this process (bench client, API and worker), Temporal, Postgres. */
interface Cpu {
  node: number;
  temporal: number;
  postgres: number;
}
let temporalPid: number | undefined;
function cpuNow(): Cpu {
  const u = process.cpuUsage();
  return {
    node: (u.user + u.system) / 1e6,
    temporal: cpuSeconds(temporalPid),
    postgres: postgresCpuSeconds(),
  };
}

interface Result {
  times: Times[];
  lifecycles: number;
  seconds: number;
  /** CPU ms per lifecycle. */
  cpu: Cpu;
}

async function drive(runners: string[], lifecycle: Lifecycle): Promise<Result> {
  const times: Times[] = [];
  const t0 = performance.now();
  const c0 = cpuNow();
  await Promise.all(
    runners.map(async (r) => {
      for (let i = 0; i < PER_RUNNER; i++) times.push(await lifecycle(r, i));
    }),
  );
  const c1 = cpuNow();
  const n = runners.length * PER_RUNNER;
  const per = (k: keyof Cpu) => ((c1[k] - c0[k]) * 1000) / n;
  return {
    times,
    lifecycles: n,
    seconds: (performance.now() - t0) / 1000,
    cpu: { node: per('node'), temporal: per('temporal'), postgres: per('postgres') },
  };
}

function summary(r: Result) {
  const s = r.times.map((t) => t.createMs).sort((a, b) => a - b);
  const fin = r.times.map((t) => t.finalizeMs).sort((a, b) => a - b);
  return {
    p50: quantile(s, 0.5),
    p99: quantile(s, 0.99),
    finP50: quantile(fin, 0.5),
    finP99: quantile(fin, 0.99),
    perSecond: r.lifecycles / r.seconds,
    cpu: r.cpu,
  };
}

type Summary = ReturnType<typeof summary>;
/** One round: e2epool, the baseline of ordinary activities, the baseline of the same kinds. */
interface Round {
  round: number;
  e2e: Summary;
  base: Summary;
  same: Summary;
}
type Side = 'base' | 'same';

/** Targets, against `base` (the bench prints met/missed for each). */
const TARGET_CREATE_P50 = 1.15;
const TARGET_THROUGHPUT = 0.95;

const median = (xs: number[]) =>
  quantile(
    [...xs].sort((a, b) => a - b),
    0.5,
  );
const f = (n: number) => n.toFixed(1);
const pair = (e: number, b: number) => `${f(e)} / ${f(b)}`;
const out = (s: string) => process.stdout.write(s);

function printRoundTable(rows: Round[]): void {
  out(
    `\nbench: ${RUNNERS} runners × ${PER_RUNNER} lifecycles per round, ${ROUNDS} rounds (bare metal, zero-delay agent)\n` +
      '  base: the baseline whose 5 activities are all ordinary (task-queue) activities: the floor the targets are set against\n' +
      "  same: the baseline with the checkpoint workflow's kinds (3 local, 2 remote): what it leaves is e2epool's own cost\n",
  );
  out(
    'round  create p50 ms e2epool / base / same  finalize → closed p50 ms e2epool / base / same  lifecycles/s e2epool / base / same  p50 ratio base, same  throughput ratio base, same\n',
  );
  for (const r of rows) {
    const t = (of: (s: Summary) => number) =>
      `${f(of(r.e2e))} / ${f(of(r.base))} / ${f(of(r.same))}`;
    const q = (of: (s: Summary) => number) =>
      [r.base, r.same].map((b) => (of(r.e2e) / of(b)).toFixed(2)).join(', ');
    out(
      `${String(r.round).padEnd(6)} ${t((x) => x.p50).padEnd(38)} ${t((x) => x.finP50).padEnd(46)} ` +
        `${t((x) => x.perSecond).padEnd(35)} ${q((x) => x.p50).padEnd(21)} ${q((x) => x.perSecond)}\n`,
    );
  }
}

/** Medians over the rounds of e2epool against one baseline side. */
function against(rows: Round[], side: Side) {
  const of = (g: (r: Round) => number) => median(rows.map(g));
  return {
    p50Ratio: of((r) => r.e2e.p50 / r[side].p50),
    tputRatio: of((r) => r.e2e.perSecond / r[side].perSecond),
    p50Rounds: rows.map((r) => (r.e2e.p50 / r[side].p50).toFixed(2)).join(', '),
    tputRounds: rows.map((r) => (r.e2e.perSecond / r[side].perSecond).toFixed(2)).join(', '),
    finP50: pair(
      of((r) => r.e2e.finP50),
      of((r) => r[side].finP50),
    ),
    finP99: pair(
      of((r) => r.e2e.finP99),
      of((r) => r[side].finP99),
    ),
    finRatios: `${of((r) => r.e2e.finP50 / r[side].finP50).toFixed(2)}, ${of((r) => r.e2e.finP99 / r[side].finP99).toFixed(2)}`,
    perSecond: pair(
      of((r) => r.e2e.perSecond),
      of((r) => r[side].perSecond),
    ),
  };
}

/** Prints each round, the medians against their targets, and reports the figures for the record. */
function printRounds(rows: Round[]): void {
  printRoundTable(rows);
  const base = against(rows, 'base');
  const same = against(rows, 'same');
  const med = (g: (r: Round) => number) => f(median(rows.map(g)));
  const cpu = (k: 'e2e' | Side) =>
    `${med((r) => r[k].cpu.node)} / ${med((r) => r[k].cpu.temporal)} / ${med((r) => r[k].cpu.postgres)}`;
  out(
    `\nCPU ms per lifecycle (median of rounds), bench+API+worker process / Temporal / Postgres: ` +
      `e2epool ${cpu('e2e')}, base ${cpu('base')}, same ${cpu('same')}\n`,
  );
  const met = (ok: boolean) => (ok ? 'met' : 'MISSED');
  out(
    `\nmedian over rounds, against base: create p50 ratio ${base.p50Ratio.toFixed(2)} (target ≤ ${TARGET_CREATE_P50}): ${met(base.p50Ratio <= TARGET_CREATE_P50)}; ` +
      `throughput ratio ${base.tputRatio.toFixed(2)} (target ≥ ${TARGET_THROUGHPUT}): ${met(base.tputRatio >= TARGET_THROUGHPUT)}\n` +
      `  against same (no target; e2epool's own cost): create p50 ratio ${same.p50Ratio.toFixed(2)}, throughput ratio ${same.tputRatio.toFixed(2)}\n` +
      `finalize → closed, e2epool / baseline ms (reset path: finalize_queued, reset command, readiness, terminal state; both baselines run as many activities):\n` +
      `  base: p50 ${base.finP50}, p99 ${base.finP99} (ratios ${base.finRatios}); same: p50 ${same.finP50}, p99 ${same.finP99} (ratios ${same.finRatios})\n`,
  );
  report('lifecycle', {
    create: `${rows.map((r) => pair(r.e2e.p50, r.base.p50)).join(' … ')} (**${base.p50Ratio.toFixed(2)}**; rounds ${base.p50Rounds}; same kinds ${same.p50Ratio.toFixed(2)})`,
    throughput: `${base.perSecond} (**${base.tputRatio.toFixed(2)}**; rounds ${base.tputRounds}; same kinds ${same.tputRatio.toFixed(2)})`,
    finalize: `p50 ${base.finP50}, p99 ${base.finP99}; same kinds p50 ${same.finP50}, p99 ${same.finP99}`,
  });
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
  temporalPid = temporal.pid;
  try {
    const runners = Array.from({ length: RUNNERS }, (_, i) => `bench-${i}`);
    const inventoryPath = join(dir, 'inventory.yml');
    writeFileSync(
      inventoryPath,
      `runners:\n${runners.map((r) => `  - runner_id: ${r}\n    backend: bare_metal\n    token: tok-${r}\n    reset_cmd: "true"\n`).join('')}`,
    );
    const { env, settings, inventory, ds, connection, client, native } = await connectBenchStack({
      databaseUrl,
      temporalAddress: temporal.address,
      taskQueue: 'bench-e2epool',
      inventoryPath,
      dir,
      log,
    });
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
    const e2epoolLifecycle: Lifecycle = async (runner, i) => {
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
      const f0 = performance.now();
      const fin = await fetch(`${api.url}/checkpoint/finalize`, {
        method: 'POST',
        headers: { authorization: `Bearer tok-${runner}`, 'content-type': 'application/json' },
        body: JSON.stringify({ checkpoint_name: created.name, status: 'failure' }),
      });
      if (fin.status !== 202) throw new Error(`finalize: ${fin.status}`);
      await client.workflow.getHandle(`e2epool-runner-${runner}`).result();
      return { createMs: ms, finalizeMs: performance.now() - f0 };
    };
    const baselineLifecycle =
      (kinds: BaselineKinds): Lifecycle =>
      async (runner, i) => {
        const t = performance.now();
        const op = new WithStartWorkflowOperation('baselineWorkflow', {
          workflowId: `baseline-${kinds}-${runner}`,
          taskQueue: 'bench-baseline',
          args: [kinds],
          workflowIdConflictPolicy: 'USE_EXISTING',
          workflowIdReusePolicy: 'ALLOW_DUPLICATE',
        });
        await client.workflow.executeUpdateWithStart(baselineCreate, {
          args: [`${i}`],
          startWorkflowOperation: op,
        });
        const ms = performance.now() - t;
        onCreated();
        const f0 = performance.now();
        const handle = await op.workflowHandle();
        await handle.executeUpdate(baselineFinalize, { args: [randomUUID()] });
        await handle.result();
        return { createMs: ms, finalizeMs: performance.now() - f0 };
      };
    const sides: Record<'e2e' | Side, Lifecycle> = {
      e2e: e2epoolLifecycle,
      base: baselineLifecycle('remote'),
      same: baselineLifecycle('same'),
    };

    // Warm up every path (bundles, connections, JIT) before measuring.
    const none: Times = { createMs: 0, finalizeMs: 0 };
    for (const lc of Object.values(sides))
      await drive(runners.slice(0, 2), async (r, i) => (i < 2 ? lc(r, i) : none));

    const rows: Round[] = [];
    const order = ['base', 'e2e', 'same'] as const;
    for (let round = 1; round <= ROUNDS; round++) {
      // Rotate which goes first, so a machine that gets busier or quieter
      // during the run does not favour one side.
      const got: Partial<Record<'e2e' | Side, Summary>> = {};
      for (let k = 0; k < order.length; k++) {
        const side = order[(round - 1 + k) % order.length]!;
        got[side] = summary(await drive(runners, sides[side]));
      }
      rows.push({ round, e2e: got.e2e!, base: got.base!, same: got.same! });
    }
    printRounds(rows);

    if (COUNTED > 0) {
      const count = async (lifecycle: Lifecycle, runner: string, workflowId: string) => {
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
      countPostgres();
      const e = await count(e2epoolLifecycle, runners[0]!, `e2epool-runner-${runners[0]}`);
      const b = await count(sides.same, runners[0]!, `baseline-same-${runners[0]}`);
      process.stdout.write(
        countsTable(`counts per create (mean of ${COUNTED}; from request to answer)`, [
          { name: 'e2epool', pg: e.create },
          { name: 'same', pg: b.create },
        ]) +
          countsTable(`counts per lifecycle (mean of ${COUNTED}; create → finalize → terminal)`, [
            { name: 'e2epool', pg: e.whole, history: e.history },
            { name: 'same', pg: b.whole, history: b.history },
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
