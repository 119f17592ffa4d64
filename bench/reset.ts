/**
 * `npm run bench` (part 4): time to clean on Proxmox, golden baseline
 * (`baseline_snapshot`) against per-job snapshots, in the same run, on the
 * Proxmox stand-in (test/stand-ins/proxmox.ts, in this process) with Proxmox
 * task durations of a real node: half the runners golden (their baseline
 * taken in the stand-in beforehand), half per-job, all with the default
 * `verify_reset: canary` (guest agent through the Proxmox API).
 *
 * Each runner drives lifecycles one after the other, alternating failure and
 * success: create → finalize → the checkpoint run closed. No CI system is
 * configured, so pausing and unpausing cost nothing here (the same for
 * both modes). Per-job failure: snapshot at create; stop, rollback, start,
 * readiness, verify, delete the snapshot at the end. Golden failure: no
 * snapshot at create; stop, rollback to the baseline, start, readiness,
 * verify. Per-job success: cleanup and delete the snapshot; golden success:
 * the full rollback, so golden is expected to be slower there.
 * Prints p50/p99 of create and of finalize → closed per mode and ending, with
 * golden / per-job ratios.
 *
 * Task durations (ms; BENCH_RESET_TASK_MS overrides them as JSON, e.g.
 * '{"qmrollback":5000}') are ASSUMPTIONS for a small VM on local LVM-thin or
 * ZFS storage without RAM state, not measurements: snapshot 2000, rollback
 * 3000, stop 1000, start 2000, delete snapshot 1500. The worker polls tasks
 * every E2EPOOL_PROXMOX_TASK_POLL_SECONDS (its default 1 s, kept here), so
 * durations show rounded up to the poll. The agent reconnects the moment the
 * VM runs again (no guest boot time; it would add the same to every path
 * that starts the VM, i.e. all but per-job success).
 *
 * Env: BENCH_RESET_RUNNERS (8; half golden, half per-job),
 * BENCH_RESET_LIFECYCLES per runner (10: 5 failures, 5 successes), after
 * one uncounted failure lifecycle per runner; about 2 minutes in all. With
 * 20 samples per mode and ending, p99 is close to the maximum.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import pino from 'pino';
import type { AgentGateway } from '../activities/agent-gateway';
import { WorkerMetrics } from '../activities/metrics';
import { startApiServer } from '../api/server';
import { loadTemporalSettings } from '../config/temporal';
import { freePort } from '../dev/ports';
import { startPostgresProcess } from '../dev/postgres-process';
import { startDevServer } from '../temporal-dev/dev-server';
import { startProxmoxStandIn, type ProxmoxStandIn, type TaskType } from '../test/stand-ins/proxmox';
import { createWorker } from '../worker/worker';
import { quantile } from './measure';
import { report } from './report';
import { connectBenchStack } from './stack';

const RUNNERS = Math.max(2, Number(process.env.BENCH_RESET_RUNNERS ?? 8));
const PER_RUNNER = Math.max(2, Number(process.env.BENCH_RESET_LIFECYCLES ?? 10));
const TASK_MS: Partial<Record<TaskType, number>> = {
  qmsnapshot: 2000,
  qmrollback: 3000,
  qmstop: 1000,
  qmshutdown: 1000,
  qmstart: 2000,
  qmdelsnapshot: 1500,
  ...(JSON.parse(process.env.BENCH_RESET_TASK_MS ?? '{}') as Partial<Record<TaskType, number>>),
};
const BASELINE = 'bench-golden';
const NODE = 'pve1';

type Mode = 'golden' | 'perJob';
type Ending = 'failure' | 'success';
interface Sample {
  mode: Mode;
  ending: Ending;
  createMs: number;
  finalizeMs: number;
  state: string;
  verified: boolean | null;
}
interface Bench {
  client: Client;
  apiUrl: string;
}
interface BenchRunner {
  id: string;
  vmid: number;
  mode: Mode;
}

const out = (s: string) => process.stdout.write(s);

/**
 * The agents of the VMs: connected while the VM runs, a new session after
 * each start (a look while the VM is down ends the session, as the real
 * gateway's heartbeat would), which is what the readiness gate waits for.
 */
function vmAgents(pve: ProxmoxStandIn, vmidOf: Map<string, number>): AgentGateway {
  const sessions = new Map<string, string>();
  let count = 0;
  const running = (runnerId: string) => {
    const vmid = vmidOf.get(runnerId);
    return vmid !== undefined && pve.vm(NODE, vmid).status === 'running';
  };
  return {
    exec: async () => ({ exitCode: 0, stdout: '', stderr: '' }),
    isConnected: async (runnerId) => running(runnerId),
    session: async (runnerId) => {
      if (!running(runnerId)) {
        sessions.delete(runnerId);
        return null;
      }
      if (!sessions.has(runnerId)) sessions.set(runnerId, `bench-${++count}`);
      return { sessionId: sessions.get(runnerId)!, live: true };
    },
  };
}

async function call(b: Bench, r: BenchRunner, method: string, path: string, body?: unknown) {
  const res = await fetch(`${b.apiUrl}${path}`, {
    method,
    headers: { authorization: `Bearer tok-${r.id}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function lifecycle(b: Bench, r: BenchRunner, i: number, job = `${i}`): Promise<Sample> {
  const ending: Ending = i % 2 === 0 ? 'failure' : 'success';
  const t0 = performance.now();
  const created = await call(b, r, 'POST', '/checkpoint/create', { runner_id: r.id, job_id: job });
  const createMs = performance.now() - t0;
  if (created.status !== 201)
    throw new Error(`create ${r.id}: ${created.status} ${JSON.stringify(created.body)}`);
  const name = created.body.name as string;
  const f0 = performance.now();
  const fin = await call(b, r, 'POST', '/checkpoint/finalize', {
    checkpoint_name: name,
    status: ending,
  });
  if (fin.status !== 202)
    throw new Error(`finalize ${r.id}: ${fin.status} ${JSON.stringify(fin.body)}`);
  await b.client.workflow.getHandle(`e2epool-runner-${r.id}`).result();
  const finalizeMs = performance.now() - f0;
  const st = await call(b, r, 'GET', `/checkpoint/status/${encodeURIComponent(name)}`);
  const state = String(st.body.state);
  const verified = (st.body.verified ?? null) as boolean | null;
  if (state === 'needs_attention' || state === 'reset_failed' || verified === false)
    throw new Error(`${r.id} ${name}: ended ${state} (${String(st.body.verify_detail)})`);
  return { mode: r.mode, ending, createMs, finalizeMs, state, verified };
}

const f = (ms: number) => (ms / 1000).toFixed(2);
const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);

function stats(samples: Sample[], mode: Mode, ending: Ending) {
  const of = samples.filter((s) => s.mode === mode && s.ending === ending);
  const c = sorted(of.map((s) => s.createMs));
  const z = sorted(of.map((s) => s.finalizeMs));
  const states = [...new Set(of.map((s) => `${s.state}/verified=${String(s.verified)}`))].join(
    ', ',
  );
  return {
    n: of.length,
    createP50: quantile(c, 0.5),
    createP99: quantile(c, 0.99),
    finP50: quantile(z, 0.5),
    finP99: quantile(z, 0.99),
    states,
  };
}

function printFigures(samples: Sample[], seconds: number, load: number): void {
  const tasks = Object.entries(TASK_MS)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  out(
    `\nbench reset: ${RUNNERS} Proxmox runners (${Math.ceil(RUNNERS / 2)} golden, ${Math.floor(RUNNERS / 2)} per-job) × ${PER_RUNNER} lifecycles ` +
      `(failure and success alternating), ${seconds.toFixed(0)} s, load average at start ${load.toFixed(1)}\n  stand-in task ms (assumed): ${tasks}; task poll 1 s; canary on\n`,
  );
  out(
    'seconds, golden / per-job (ratio)     create p50          create p99          finalize → closed p50   finalize → closed p99   n\n',
  );
  const figures: Record<string, string> = {};
  for (const ending of ['failure', 'success'] as const) {
    const g = stats(samples, 'golden', ending);
    const p = stats(samples, 'perJob', ending);
    const cell = (k: 'createP50' | 'createP99' | 'finP50' | 'finP99') =>
      `${f(g[k])} / ${f(p[k])} (${(g[k] / p[k]).toFixed(2)})`;
    out(
      `  ${ending.padEnd(35)} ${cell('createP50').padEnd(19)} ${cell('createP99').padEnd(19)} ` +
        `${cell('finP50').padEnd(23)} ${cell('finP99').padEnd(23)} ${g.n} / ${p.n}\n`,
    );
    out(`    ended: golden ${g.states}; per-job ${p.states}\n`);
    figures[ending] =
      `create p50 ${cell('createP50')}, finalize → closed p50 ${cell('finP50')}, p99 ${cell('finP99')}`;
  }
  report('reset', {
    goldenVsPerJob: `failure: ${figures.failure}; success: ${figures.success}`,
  });
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const log = pino({ level: 'silent' });
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-bench-reset-'));
  chmodSync(dir, 0o755);
  const [temporalPort, pgPort] = await Promise.all([freePort(), freePort()]);
  out('bench reset: starting Temporal dev server, Postgres and the Proxmox stand-in...\n');
  const [temporal, pg, pve] = await Promise.all([
    startDevServer({ port: temporalPort, uiPort: null, namespace: 'default' }),
    process.env.E2EPOOL_DATABASE_URL
      ? Promise.resolve(undefined)
      : startPostgresProcess({ dataDir: join(dir, 'pg'), port: pgPort, database: 'bench' }),
    startProxmoxStandIn({ taskDurationsMs: TASK_MS }),
  ]);
  const databaseUrl = process.env.E2EPOOL_DATABASE_URL ?? pg!.url;
  try {
    const runners: BenchRunner[] = Array.from({ length: RUNNERS }, (_, i) => ({
      id: `bench-reset-${i}`,
      vmid: 501 + i,
      mode: i % 2 === 0 ? 'golden' : 'perJob',
    }));
    const [user, tokenName] = pve.tokenId.split('!');
    const yaml = ['runners:\n'];
    for (const r of runners) {
      const golden = r.mode === 'golden';
      pve.addVm(NODE, r.vmid, {
        status: 'running',
        snapshots: golden ? [{ name: BASELINE, description: 'golden baseline' }] : [],
      });
      yaml.push(
        `  - runner_id: ${r.id}\n    backend: proxmox\n    token: tok-${r.id}\n` +
          `    proxmox_host: ${pve.url}\n    proxmox_user: ${user}\n    proxmox_token_name: ${tokenName}\n` +
          `    proxmox_token_value: ${pve.tokenSecret}\n    proxmox_node: ${NODE}\n    proxmox_vmid: ${r.vmid}\n` +
          (golden ? `    baseline_snapshot: ${BASELINE}\n` : ''),
      );
    }
    const inventoryPath = join(dir, 'inventory.yml');
    writeFileSync(inventoryPath, yaml.join(''));
    const { env, settings, inventory, ds, connection, client, native } = await connectBenchStack({
      databaseUrl,
      temporalAddress: temporal.address,
      taskQueue: 'bench-reset',
      inventoryPath,
      dir,
      log,
    });
    const agents = vmAgents(pve, new Map(runners.map((r) => [r.id, r.vmid])));
    const worker = await createWorker({
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
    const api = await startApiServer({
      settings,
      dataSource: ds,
      temporal: connection,
      temporalSettings: loadTemporalSettings(env),
      inventory,
      log,
    });
    const bench: Bench = { client, apiUrl: api.url };
    const running = worker.run();

    // One failure lifecycle per runner first (bundles, connections, JIT), not counted.
    out('bench reset: warming up (one lifecycle per runner)...\n');
    await Promise.all(runners.map((r) => lifecycle(bench, r, 0, 'warm-up')));
    const samples: Sample[] = [];
    const load = loadavg()[0]!;
    const t0 = performance.now();
    await Promise.all(
      runners.map(async (r) => {
        for (let i = 0; i < PER_RUNNER; i++) samples.push(await lifecycle(bench, r, i));
      }),
    );
    printFigures(samples, (performance.now() - t0) / 1000, load);

    await api.close();
    worker.shutdown();
    await running;
    await native.close();
    await connection.close();
    await ds.destroy();
  } finally {
    await Promise.all([temporal.stop(), pg?.stop(), pve.close()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench reset failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
