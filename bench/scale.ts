/**
 * `npm run bench:scale` (not a test): a simulated fleet on real `e2epool api`
 * and `e2epool worker` processes, real Postgres and a real Temporal server,
 * with the GitLab stand-in answering after a realistic delay and in-process
 * agents whose reset command takes a realistic time.
 *
 * For each Temporal target (the dev server, and the production-mode server on
 * Postgres with mTLS when it can be built), in the same run:
 *  1. waiting: every runner creates a checkpoint (through its agent's
 *     WebSocket, as the CLI does) and they all wait at once: TTL timers and
 *     job-status pollers (E2EPOOL_POLLER_INTERVAL_SECONDS 20, stretched to
 *     fit the GitLab budget: ~290 s for 1,000 runners at the defaults),
 *     long enough for each of them to poll once;
 *  2. cycle: a share of the runners loops create → finalize → reset →
 *     unpaused while the others keep waiting.
 * Printed: lifecycles/s, create p50/p99, finalize → unpaused p50/p99 and the
 * same minus the stand-ins' own delays (e2epool's overhead), worker and API
 * RSS, Postgres connections, GitLab requests/s (the highest 1-second count
 * next to the budget, E2EPOOL_GITLAB_MAX_RPS).
 *
 * Env: BENCH_SCALE_RUNNERS (1000), BENCH_SCALE_WAIT_SECONDS (one poll interval + 30),
 * BENCH_SCALE_CYCLE_RUNNERS (50), BENCH_SCALE_CYCLE_SECONDS (90),
 * BENCH_SCALE_GITLAB_MS (50), BENCH_SCALE_RESET_MS (1000),
 * BENCH_SCALE_TARGETS (`dev,cluster`), BENCH_SCALE_JOB_SECONDS (20),
 * BENCH_SCALE_WORKER_NODE_OPTIONS (NODE_OPTIONS of the worker, e.g. a heap limit),
 * E2EPOOL_GITLAB_MAX_RPS and E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS (the product's
 * defaults), E2EPOOL_BENCH_DATABASE_URL (a Postgres whose user may CREATE
 * DATABASE; default: an embedded one).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { Client as PgClient } from 'pg';
import { WebSocket } from 'ws';
import { checkpointWorkflowId } from '../common/checkpoint';
import { gitlabPollRate, gitlabQueueRates, temporalBurst } from '../common/gitlab-budget';
import { eachLimited } from '../common/each-limited';
import { budgetedPollIntervalSeconds } from '../config/checkpoint-input';
import { loadSettings } from '../config/settings';
import { loadTemporalSettings } from '../config/temporal';
import { freePort } from '../dev/ports';
import { startPostgresProcess, type PostgresProcess } from '../dev/postgres-process';
import { ensureTemporalServer } from '../temporal-dev/binary';
import { startTemporalCluster } from '../temporal-dev/cluster';
import { startDevServer } from '../temporal-dev/dev-server';
import { describeResets, resetsSince, type ResetParts } from './history-breakdown';
import { cpuSeconds, postgresCpuSeconds, quantile, rssMiB, sleep, waitHealthy } from './measure';
import { startGitLabStandIn, type GitLabStandIn } from '../test/stand-ins/gitlab';

const num = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const RUNNERS = num('BENCH_SCALE_RUNNERS', 1000);
/**
 * The settings the bench gives the product: its defaults (config/settings.ts)
 * for the GitLab budget unless set here, pollers asked for every 20 s.
 */
const PRODUCT = loadSettings({
  E2EPOOL_POLLER_INTERVAL_SECONDS: '20',
  E2EPOOL_GITLAB_MAX_RPS: process.env.E2EPOOL_GITLAB_MAX_RPS,
  E2EPOOL_GITLAB_POLL_SHARE: process.env.E2EPOOL_GITLAB_POLL_SHARE,
});
const BUDGET = PRODUCT.gitlabMaxRps;
const POLL_SHARE = PRODUCT.gitlabPollShare;
/** The poll interval every waiting checkpoint gets (config/checkpoint-input.ts). */
const POLL_SECONDS = budgetedPollIntervalSeconds(PRODUCT, RUNNERS);
const WAIT_SECONDS = num('BENCH_SCALE_WAIT_SECONDS', Math.ceil(POLL_SECONDS) + 30);
const CYCLE_RUNNERS = Math.min(RUNNERS, num('BENCH_SCALE_CYCLE_RUNNERS', 30));
/** Mean job length of a cycling runner (uniform in ±50 %). */
const JOB_SECONDS = num('BENCH_SCALE_JOB_SECONDS', 20);
const CYCLE_SECONDS = num('BENCH_SCALE_CYCLE_SECONDS', 90);
const GITLAB_MS = num('BENCH_SCALE_GITLAB_MS', 50);
const RESET_MS = num('BENCH_SCALE_RESET_MS', 1000);
const TARGETS = (process.env.BENCH_SCALE_TARGETS ?? 'dev,cluster').split(',').map((t) => t.trim());
const CLI = join(__dirname, '..', '..', 'bin', 'e2epool.js');
const PROJECT = 4242;
/** A lifecycle slower than this stops the bench: the figures would be meaningless. */
const UNPAUSE_LIMIT_MS = 5 * 60_000;
/** GitLab calls from the job's end to the unpause request: pause check (GET), pause (PUT). */
const GITLAB_CALLS_BEFORE_UNPAUSE = 2;
/** e2epool's own share of finalize → unpaused, p99, on any target. */
const OVERHEAD_P99_TARGET_MS = 1000;

const sortedOf = (xs: number[]) => [...xs].sort((a, b) => a - b);

/** Busy and total CPU time of the whole machine so far (seconds, all cores). */
function machineCpu(): { busy: number; total: number } {
  const t = readFileSync('/proc/stat', 'utf8')
    .split('\n')[0]!
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const total = t.reduce((a, b) => a + b, 0) / 100;
  const idle = (t[3]! + t[4]!) / 100; // idle, iowait
  return { busy: total - idle, total };
}

/** CPU used by each part between two readings, in % of one core. */
interface CpuShare {
  api: number;
  worker: number;
  temporal: number;
  postgres: number;
  /** The whole machine, in % of all its cores. */
  machine: number;
}

function cpuMeter(pids: { api?: number; worker?: number; temporal?: number }) {
  const read = () => ({
    at: performance.now(),
    api: cpuSeconds(pids.api),
    worker: cpuSeconds(pids.worker),
    temporal: cpuSeconds(pids.temporal),
    postgres: postgresCpuSeconds(),
    machine: machineCpu(),
  });
  const start = read();
  return (): CpuShare => {
    const end = read();
    const secs = (end.at - start.at) / 1000;
    // Postgres backends that exited took their CPU time with them: never below 0.
    const pct = (a: number, b: number) => Math.max(0, (100 * (b - a)) / secs);
    return {
      api: pct(start.api, end.api),
      worker: pct(start.worker, end.worker),
      temporal: pct(start.temporal, end.temporal),
      postgres: pct(start.postgres, end.postgres),
      machine:
        (100 * (end.machine.busy - start.machine.busy)) /
        Math.max(1e-9, end.machine.total - start.machine.total),
    };
  };
}

/** A Temporal server to run against, with the environment that reaches it. */
interface TemporalTarget {
  name: string;
  env: Record<string, string>;
  /** The server's process, for its CPU time. */
  pid: number | undefined;
  stop(): Promise<void>;
}

async function startTarget(name: string, dir: string, pgAdminUrl: string): Promise<TemporalTarget> {
  if (name === 'dev') {
    const dev = await startDevServer({
      port: await freePort(),
      uiPort: null,
      namespace: 'default',
      logFile: join(dir, 'temporal-dev.log'),
      // One partition per task queue, as ops/temporal gives the GitLab queues (the dev
      // server's flag cannot single queues out): the same GitLab burst on both targets.
      dynamicConfig: {
        'matching.numTaskqueueReadPartitions': 1,
        'matching.numTaskqueueWritePartitions': 1,
      },
    });
    return {
      name: 'dev server (SQLite, one process)',
      env: { TEMPORAL_ADDRESS: dev.address, TEMPORAL_NAMESPACE: 'default' },
      pid: dev.pid,
      stop: () => dev.stop(),
    };
  }
  if (name === 'cluster') return startClusterTarget(dir, pgAdminUrl);
  throw new Error(`unknown BENCH_SCALE_TARGETS entry '${name}' (dev, cluster)`);
}

/** Temporal Server in production mode: Postgres persistence and visibility, mTLS, its own namespace. */
async function startClusterTarget(dir: string, pgAdminUrl: string): Promise<TemporalTarget> {
  const server = ensureTemporalServer();
  process.stdout.write(`  cluster: temporal-server from ${server.server}\n`);
  const cluster = await startTemporalCluster({
    adminDatabaseUrl: pgAdminUrl,
    workDir: join(dir, 'cluster'),
    namespace: 'e2epool-bench',
  });
  return {
    name: `Temporal Server (${basename(dirname(server.server))}; Postgres, mTLS)`,
    env: cluster.clientEnv(),
    pid: cluster.pid,
    stop: () => cluster.stop(),
  };
}

/** One simulated runner: its agent's WebSocket, answering reset commands after RESET_MS. */
class SimAgent {
  private ws!: WebSocket;
  private seq = 0;
  private readonly waiting = new Map<string, (m: Record<string, unknown>) => void>();
  constructor(
    readonly runnerId: string,
    private readonly token: string,
  ) {}

  async connect(wsUrl: string): Promise<void> {
    const url = new URL(wsUrl);
    url.searchParams.set('runner_id', this.runnerId);
    this.ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.token}` } });
    this.ws.on('message', (data) => {
      const msg = JSON.parse(data.toString()) as Record<string, unknown>;
      if (msg.type === 'exec') {
        setTimeout(() => {
          if (this.ws.readyState !== WebSocket.OPEN) return;
          this.ws.send(
            JSON.stringify({
              id: msg.id,
              status: 'ok',
              data: { exit_code: 0, stdout: 'reset done\n', stderr: '' },
            }),
          );
        }, RESET_MS);
        return;
      }
      const w = this.waiting.get(msg.id as string);
      if (w) {
        this.waiting.delete(msg.id as string);
        w(msg);
      }
    });
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
  }

  request(type: string, payload: unknown): Promise<Record<string, unknown>> {
    const id = `${this.runnerId}-${++this.seq}`;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.ws.send(JSON.stringify({ id, type, payload }));
    });
  }

  close(): void {
    this.ws.terminate();
  }
}

interface Sample {
  apiRss: number;
  workerRss: number;
  pgConnections: number;
}

/**
 * finalize → unpaused in three parts, ms, as GitLab saw them: to the pause
 * check's GET (the finalize, a workflow task, the GitLab queue); from it to
 * the pause's PUT (GitLab's answer, the memo's workflow task, the queue
 * again); from the pause to the unpause's PUT minus the reset command's own
 * time (bookkeeping, the reset command's dispatch, readiness, the queue).
 */
interface Phases {
  check: number[];
  pause: number[];
  unpause: number[];
}

interface TargetResult {
  target: string;
  createMs: number[];
  waitingPeak: Sample;
  cycle: {
    lifecycles: number;
    seconds: number;
    createMs: number[];
    toUnpausedMs: number[];
    phases: Phases;
    peak: Sample;
    /** Median duration of each logged step while cycling (operation_logs). */
    steps: Array<{ operation: string; p50: number; n: number }>;
    /** Where each reset's time went, from its history (bench/history-breakdown.ts). */
    resets: ResetParts[];
  };
  gitlab: Record<'waiting' | 'cycle', ReturnType<typeof gitlabRate>>;
  cpu: Record<'waiting' | 'cycle', CpuShare>;
}

/** Requests per second at GitLab between `from` and `to`: the highest 1-second count and the mean. */
function gitlabRate(gl: GitLabStandIn, from: number, to: number) {
  const inWindow = gl.calls.filter((c) => c.at >= from && c.at < to).map((c) => c.at);
  /** The most requests in any `ms` window. */
  const busiest = (ms: number) => {
    let most = 0;
    for (let i = 0, j = 0; i < inWindow.length; i++) {
      while (inWindow[i]! - inWindow[j]! >= ms) j++;
      most = Math.max(most, i - j + 1);
    }
    return most;
  };
  return {
    peak: busiest(1000),
    peak10: busiest(10_000) / 10,
    // GitLab counts its rate limits per minute (RateLimit-Limit is a quota per minute).
    peak60: busiest(60_000) / 60,
    mean: inWindow.length / Math.max(1, (to - from) / 1000),
  };
}

async function runTarget(
  targetName: string,
  dir: string,
  pgAdminUrl: string,
  gl: GitLabStandIn,
): Promise<TargetResult> {
  const target = await startTarget(targetName, dir, pgAdminUrl);
  const db = `bench_scale_${targetName}_${Date.now()}`;
  const admin = new PgClient({ connectionString: pgAdminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${db}`);
  const dbUrl = new URL(pgAdminUrl);
  dbUrl.pathname = `/${db}`;
  // The default queue: ops/temporal gives its GitLab queues one partition.
  const taskQueue = 'e2epool';
  const runners = Array.from({ length: RUNNERS }, (_, i) => ({
    id: `scale-${targetName}-${i}`,
    token: `tok-scale-${targetName}-${i}`,
    gitlabRunnerId: 100000 + i,
  }));
  for (const r of runners) gl.addRunner(r.gitlabRunnerId);
  const inventory = join(dir, `inventory-${targetName}.yml`);
  writeFileSync(
    inventory,
    `runners:\n${runners
      .map(
        (r) =>
          `  - runner_id: ${r.id}\n    backend: bare_metal\n    token: ${r.token}\n    reset_cmd: /opt/reset.sh\n    gitlab_runner_id: ${r.gitlabRunnerId}\n`,
      )
      .join('')}`,
  );
  const apiPort = await freePort();
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    ...target.env,
    TEMPORAL_CONFIG_FILE: join(dir, 'no-temporal-profile.toml'),
    E2EPOOL_DATABASE_URL: dbUrl.toString(),
    E2EPOOL_INVENTORY_PATH: inventory,
    E2EPOOL_TASK_QUEUE: taskQueue,
    E2EPOOL_HOST: '127.0.0.1',
    E2EPOOL_PORT: String(apiPort),
    E2EPOOL_WORKER_METRICS_PORT: '0',
    E2EPOOL_LOG_LEVEL: 'warn',
    E2EPOOL_GITLAB_URL: gl.url,
    E2EPOOL_GITLAB_TOKEN: gl.token,
    E2EPOOL_CHECKPOINT_TTL_SECONDS: '3600',
    E2EPOOL_POLLER_INTERVAL_SECONDS: String(PRODUCT.pollerIntervalSeconds),
    E2EPOOL_POLLER_MIN_AGE_SECONDS: '0',
    E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
    E2EPOOL_GITLAB_MAX_RPS: String(BUDGET),
    E2EPOOL_GITLAB_POLL_SHARE: String(POLL_SHARE),
    ...(process.env.E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS
      ? { E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS: process.env.E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS }
      : {}),
  };
  const started: ChildProcess[] = [];
  const spawnCli = (command: string) => {
    const nodeOptions = command === 'worker' ? process.env.BENCH_SCALE_WORKER_NODE_OPTIONS : '';
    const child = spawn(process.execPath, [CLI, command], {
      env: nodeOptions ? { ...env, NODE_OPTIONS: nodeOptions } : env,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    started.push(child);
    return child;
  };
  const agents = runners.map((r) => new SimAgent(r.id, r.token));
  try {
    const api = spawnCli('api');
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    await waitHealthy(apiUrl, api);
    const worker = spawnCli('worker');
    const sample = async (): Promise<Sample> => {
      const { rows } = await admin.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1',
        [db],
      );
      return {
        apiRss: rssMiB(api.pid),
        workerRss: rssMiB(worker.pid),
        pgConnections: rows[0]!.n,
      };
    };
    const peakOf = (xs: Sample[]): Sample => ({
      apiRss: Math.max(...xs.map((s) => s.apiRss)),
      workerRss: Math.max(...xs.map((s) => s.workerRss)),
      pgConnections: Math.max(...xs.map((s) => s.pgConnections)),
    });
    /** Samples every 2 s until stopped. */
    const sampler = () => {
      const samples: Sample[] = [];
      let on = true;
      const done = (async () => {
        while (on) {
          samples.push(await sample());
          await sleep(2000);
        }
      })();
      return {
        stop: async () => {
          on = false;
          await done;
          return peakOf(samples);
        },
      };
    };

    const wsUrl = `${apiUrl.replace('http', 'ws')}/ws/agent`;
    await eachLimited(agents, 50, (a) => a.connect(wsUrl));
    process.stdout.write(`  ${targetName}: ${RUNNERS} agents connected\n`);

    let job = 0;
    const names = new Map<string, string>();
    const create = async (a: SimAgent, into: number[]) => {
      const jobId = `${++job}`;
      gl.setJob(PROJECT, jobId, 'running');
      for (;;) {
        const t = performance.now();
        const reply = await a.request('create', { job_id: jobId, project_id: String(PROJECT) });
        if (reply.status === 'ok') {
          into.push(performance.now() - t);
          names.set(a.runnerId, (reply.data as { name: string }).name);
          return;
        }
        // 503 while the worker starts, 409/429 while the previous one ends: try again.
        await sleep(200);
      }
    };

    // The worker is up once a first checkpoint goes through (not measured).
    const warm = agents[0]!;
    await create(warm, []);
    await warm.request('finalize', {
      checkpoint_name: names.get(warm.runnerId),
      status: 'failure',
    });
    const unpausedOnce = () => gl.runner(runners[0]!.gitlabRunnerId).pausedHistory.includes(false);
    while (!unpausedOnce()) await sleep(50);

    const pids = { api: api.pid, worker: worker.pid, temporal: target.pid };
    // 1. Everyone waits at once.
    const waitingStart = Date.now();
    const s1 = sampler();
    const createMs: number[] = [];
    await eachLimited(agents, 50, (a) => create(a, createMs));
    process.stdout.write(
      `  ${targetName}: ${RUNNERS} checkpoints waiting (${((Date.now() - waitingStart) / 1000).toFixed(0)} s to create them); holding ${WAIT_SECONDS} s\n`,
    );
    const waitingCpu = cpuMeter(pids);
    await sleep(WAIT_SECONDS * 1000);
    const waitingCpuShare = waitingCpu();
    const waitingPeak = await s1.stop();
    const waitingEnd = Date.now();

    // 2. A share of the runners cycles; the others keep waiting.
    const s2 = sampler();
    const cycleCpu = cpuMeter(pids);
    const cycleCreateMs: number[] = [];
    const toUnpausedMs: number[] = [];
    /** Where finalize → unpaused goes, from the times GitLab saw each request (see Phases). */
    const phases: Phases = { check: [], pause: [], unpause: [] };
    let lifecycles = 0;
    const cycleStart = Date.now();
    const deadline = cycleStart + CYCLE_SECONDS * 1000;
    await Promise.all(
      agents.slice(0, CYCLE_RUNNERS).map(async (a, i) => {
        const gitlabId = runners[i]!.gitlabRunnerId;
        const job = () => sleep(JOB_SECONDS * 1000 * (0.5 + Math.random()));
        await sleep(JOB_SECONDS * 1000 * Math.random());
        while (Date.now() < deadline) {
          const unpausesBefore = gl
            .runner(gitlabId)
            .pausedHistory.filter((p) => p === false).length;
          const sent = Date.now();
          const fin = await a.request('finalize', {
            checkpoint_name: names.get(a.runnerId),
            status: 'failure',
          });
          if (fin.status !== 'ok') throw new Error(`finalize: ${JSON.stringify(fin.error)}`);
          // Unpaused: the stand-in received this lifecycle's unpause.
          for (;;) {
            const h = gl.runner(gitlabId).pausedHistory;
            if (h.filter((p) => p === false).length > unpausesBefore) break;
            if (Date.now() - sent > UNPAUSE_LIMIT_MS)
              throw new Error(
                `${a.runnerId}: not unpaused ${UNPAUSE_LIMIT_MS / 1000} s after its finalize (the stack is overloaded or stuck)`,
              );
            await sleep(20);
          }
          const unpause = [...gl.calls]
            .reverse()
            .find(
              (c) =>
                c.method === 'PUT' &&
                c.path === `/api/v4/runners/${gitlabId}` &&
                String(c.body.paused) === 'false',
            );
          toUnpausedMs.push((unpause?.at ?? Date.now()) - sent);
          const mine = gl.calls.filter(
            (c) => c.path === `/api/v4/runners/${gitlabId}` && c.at >= sent,
          );
          const check = mine.find((c) => c.method === 'GET');
          const pause = mine.find((c) => c.method === 'PUT' && String(c.body.paused) === 'true');
          if (check && pause && unpause) {
            phases.check.push(check.at - sent);
            phases.pause.push(pause.at - check.at);
            phases.unpause.push(unpause.at - pause.at - RESET_MS);
          }
          lifecycles++;
          await create(a, cycleCreateMs);
          await job();
        }
      }),
    );
    const cycleEnd = Date.now();
    const cycleCpuShare = cycleCpu();
    const cyclePeak = await s2.stop();
    const steps = new PgClient({ connectionString: dbUrl.toString() });
    await steps.connect();
    const { rows: stepRows } = await steps.query<{ operation: string; p50: number; n: number }>(
      `SELECT operation, count(*)::int AS n,
              percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - started_at) * 1000)::float8 AS p50
         FROM operation_logs WHERE finished_at IS NOT NULL AND started_at >= to_timestamp($1 / 1000.0)
        GROUP BY operation ORDER BY operation`,
      [cycleStart],
    );
    await steps.end();
    const resets = await resetBreakdown(
      target,
      runners.slice(0, CYCLE_RUNNERS).map((r) => checkpointWorkflowId(r.id)),
      new Date(cycleStart),
      taskQueue,
    );
    const w = gitlabRate(gl, waitingStart, waitingEnd);
    const c = gitlabRate(gl, cycleStart, cycleEnd);
    return {
      target: target.name,
      createMs,
      waitingPeak,
      cycle: {
        lifecycles,
        seconds: (cycleEnd - cycleStart) / 1000,
        createMs: cycleCreateMs,
        toUnpausedMs,
        phases,
        peak: cyclePeak,
        steps: stepRows,
        resets,
      },
      gitlab: { waiting: w, cycle: c },
      cpu: { waiting: waitingCpuShare, cycle: cycleCpuShare },
    };
  } finally {
    for (const a of agents) a.close();
    for (const child of started) child.kill('SIGTERM');
    await Promise.all(
      started.map((ch) =>
        ch.exitCode === null ? new Promise((r) => ch.once('exit', r)) : undefined,
      ),
    );
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await target.stop();
  }
}

/** The cycling runs' resets, read back from Temporal (a failure to read says so, the rest stands). */
async function resetBreakdown(
  target: TemporalTarget,
  workflowIds: string[],
  since: Date,
  taskQueue: string,
): Promise<ResetParts[]> {
  const t = loadTemporalSettings(target.env);
  const connection = await Connection.connect(t.connectionOptions);
  try {
    const client = new Client({ connection, namespace: t.namespace });
    return await resetsSince(client, workflowIds, since, taskQueue);
  } catch (err) {
    process.stdout.write(`  reset breakdown not read: ${(err as Error).message}\n`);
    return [];
  } finally {
    await connection.close();
  }
}

function gitlabCell(g: ReturnType<typeof gitlabRate>): string {
  return `${g.peak} / ${g.peak10.toFixed(1)} / ${g.peak60.toFixed(2)} / ${g.mean.toFixed(1)}`;
}

function report(results: TargetResult[], budget: number): void {
  const ms = (x: number) => (Number.isNaN(x) ? '-' : `${x.toFixed(0)} ms`);
  const mib = (x: number) => (Number.isNaN(x) ? '-' : `${x.toFixed(0)} MiB`);
  const standInDelay = GITLAB_CALLS_BEFORE_UNPAUSE * GITLAB_MS + RESET_MS;
  const rows: Array<[string, ...string[]]> = [
    ['', ...results.map((r) => r.target)],
    [
      `create p50 / p99 (${RUNNERS} at once, 50 in flight)`,
      ...results.map((r) => {
        const s = sortedOf(r.createMs);
        return `${ms(quantile(s, 0.5))} / ${ms(quantile(s, 0.99))}`;
      }),
    ],
    [
      `worker RSS, ${RUNNERS} waiting (target ≤ 512 MB)`,
      ...results.map((r) => mib(r.waitingPeak.workerRss)),
    ],
    [
      `API RSS, ${RUNNERS} waiting (target ≤ 300 MB)`,
      ...results.map((r) => mib(r.waitingPeak.apiRss)),
    ],
    ['Postgres connections (peak)', ...results.map((r) => String(r.waitingPeak.pgConnections))],
    [
      `GitLab while waiting: busiest 1 s / 10 s / 60 s (per s) / mean per s`,
      ...results.map((r) => gitlabCell(r.gitlab.waiting)),
    ],
    [
      `lifecycles/s (${CYCLE_RUNNERS} runners cycling, jobs of ${JOB_SECONDS} s ± 50 %)`,
      ...results.map((r) => (r.cycle.lifecycles / r.cycle.seconds).toFixed(2)),
    ],
    [
      'create p50 / p99 (cycling)',
      ...results.map((r) => {
        const s = sortedOf(r.cycle.createMs);
        return `${ms(quantile(s, 0.5))} / ${ms(quantile(s, 0.99))}`;
      }),
    ],
    [
      'finalize → unpaused p50 / p99',
      ...results.map((r) => {
        const s = sortedOf(r.cycle.toUnpausedMs);
        return `${ms(quantile(s, 0.5))} / ${ms(quantile(s, 0.99))}`;
      }),
    ],
    [
      `  e2epool's overhead (minus ${standInDelay} ms of stand-ins; target p99 ≤ ${OVERHEAD_P99_TARGET_MS / 1000} s)`,
      ...results.map((r) => {
        const s = sortedOf(r.cycle.toUnpausedMs.map((x) => x - standInDelay));
        const p99 = quantile(s, 0.99);
        return `${ms(quantile(s, 0.5))} / ${ms(p99)} (${p99 <= OVERHEAD_P99_TARGET_MS ? 'met' : 'MISSED'})`;
      }),
    ],
    ...(['check', 'pause', 'unpause'] as const).map((k): [string, ...string[]] => [
      `    ${{ check: 'finalize → pause check GET', pause: 'pause check → pause PUT', unpause: `pause PUT → unpause PUT, minus the ${RESET_MS} ms reset` }[k]}: p50 / p99`,
      ...results.map((r) => {
        const s = sortedOf(r.cycle.phases[k]);
        return `${ms(quantile(s, 0.5))} / ${ms(quantile(s, 0.99))}`;
      }),
    ]),
    [
      `GitLab while cycling: busiest 1 s / 10 s / 60 s (per s) / mean per s`,
      ...results.map((r) => gitlabCell(r.gitlab.cycle)),
    ],
    [
      'worker / API RSS while cycling',
      ...results.map((r) => `${mib(r.cycle.peak.workerRss)} / ${mib(r.cycle.peak.apiRss)}`),
    ],
  ];
  const cpuCell = (c: CpuShare) =>
    `${c.api.toFixed(0)} / ${c.worker.toFixed(0)} / ${c.temporal.toFixed(0)} / ${c.postgres.toFixed(0)} (machine ${c.machine.toFixed(0)} %)`;
  rows.push(
    [
      'CPU % of a core while waiting: API / worker / Temporal / Postgres',
      ...results.map((r) => cpuCell(r.cpu.waiting)),
    ],
    [
      'CPU % of a core while cycling: API / worker / Temporal / Postgres',
      ...results.map((r) => cpuCell(r.cpu.cycle)),
    ],
  );
  const ops = [...new Set(results.flatMap((r) => r.cycle.steps.map((st) => st.operation)))];
  for (const op of ops)
    rows.push([
      `  step ${op}: p50 (count)`,
      ...results.map((r) => {
        const st = r.cycle.steps.find((x) => x.operation === op);
        return st ? `${ms(st.p50)} (${st.n})` : '-';
      }),
    ]);
  const { gitlab, legacyPoll } = gitlabQueueRates(budget);
  const breakdowns = results.map((r) => [`  ${r.target}:`, ...describeResets(r.cycle.resets)]);
  const burst = temporalBurst(gitlab, 1) + temporalBurst(legacyPoll, 1);

  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  process.stdout.write(
    `\nbench scale: ${RUNNERS} runners (bare metal, in-process agents; reset ${RESET_MS} ms, GitLab answers after ${GITLAB_MS} ms), pollers every ${POLL_SECONDS.toFixed(0)} s\n`,
  );
  for (const row of rows)
    process.stdout.write(`  ${row.map((cell, i) => (cell ?? '').padEnd(widths[i]!)).join('  ')}\n`);
  process.stdout.write(
    `  GitLab budget ${budget}/s (${gitlab}/s GitLab queue, polls sized for ${gitlabPollRate(budget, POLL_SHARE)}/s; ${legacyPoll}/s 1.1 poll queue; one partition each): ` +
      `any 1 s ≤ ${budget + burst} requests (rate + token-bucket burst), any 10 s ≤ ${(budget + burst / 10).toFixed(1)}/s, any 60 s ≤ ${(budget + burst / 60).toFixed(2)}/s\n`,
  );
  for (const lines of breakdowns) process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-bench-scale-'));
  chmodSync(dir, 0o755);
  let pg: PostgresProcess | undefined;
  const gl = await startGitLabStandIn({ latencyMs: GITLAB_MS });
  try {
    let pgAdminUrl = process.env.E2EPOOL_BENCH_DATABASE_URL;
    if (!pgAdminUrl) {
      process.stdout.write('bench scale: starting Postgres...\n');
      pg = await startPostgresProcess({
        dataDir: join(dir, 'pg'),
        port: await freePort(),
        database: 'bench',
      });
      pgAdminUrl = pg.url;
    }
    const results: TargetResult[] = [];
    for (const t of TARGETS) {
      process.stdout.write(`bench scale: ${t}...\n`);
      try {
        results.push(await runTarget(t, dir, pgAdminUrl, gl));
      } catch (err) {
        process.stdout.write(`  ${t}: not measured: ${(err as Error).message}\n`);
      }
    }
    report(results, BUDGET);
  } finally {
    await gl.close();
    await pg?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench scale failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
