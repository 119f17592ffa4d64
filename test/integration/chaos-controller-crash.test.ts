import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { freePort } from '../../dev/ports';
import { startPostgresProcess, type PostgresProcess } from '../../dev/postgres-process';
import { startDevServer, type DevServer } from '../../temporal-dev/dev-server';
import { spawnAgent, stopProcess } from '../helpers/agent-process';
import { restClient } from '../helpers/controller';
import { bareMetalRunnerYaml, temporalEnv, testRunner, uniqueId } from '../helpers/env';
import { startCli, type RunningProcess } from '../helpers/processes';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * Chaos: every process of the controller (API, worker, Temporal dev server,
 * Postgres) is SIGKILLed while the real `e2epool agent` runs a bare-metal
 * reset_cmd, then started again. The agent, which lives on the runner host,
 * keeps running and reconnects; the command lost with the dead API's
 * connection is re-sent on the new one, so the reset finishes and the runner
 * is unpaused within a minute of the restart (not after the command timeout).
 * The agent reaches the controller through a gate the test holds shut until
 * the retried activity attempt waits: the order in which the command looks in
 * flight on the dead API's session (an agent reconnecting first was handled).
 */
const KILL_AFTER_MS = [1000, 4000, 8000];
/** Recovery (restart → `reset`) must take less than this. */
const RECOVERY_MS = 60_000;
const GITLAB_RUNNER = 77;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The network between the runner host and the controller: forwards the
 * agent's connections to the API while open; while shut, drops them.
 */
async function networkGate(port: number): Promise<{
  port: number;
  shut(): void;
  open(): void;
  close(): Promise<void>;
}> {
  let open = true;
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    if (!open) return inbound.destroy();
    const outbound = createConnection({ host: '127.0.0.1', port });
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  return {
    port: (server.address() as { port: number }).port,
    shut: () => (open = false),
    open: () => (open = true),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((res) => server.close(() => res()));
    },
  };
}

/** Kills a process's whole group (it and its children) and waits until the leader is gone. */
async function killGroup(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((res) => child.once('exit', res));
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
  await gone;
}

describe('chaos: the whole controller killed during a bare-metal reset_cmd', () => {
  const r = testRunner('ctl-crash');
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-ctl-crash-'));
  const marker = join(dir, 'reset.log');
  let gitlab: GitLabStandIn;
  let pg: PostgresProcess | undefined;
  let temporal: DevServer | undefined;
  let api: RunningProcess | undefined;
  let worker: RunningProcess | undefined;
  let agent: ChildProcess | undefined;
  let agentOutput = () => '';
  let apiUrl: string;
  let pgPort: number;
  let temporalPort: number;
  let env: Record<string, string>;
  let gate: Awaited<ReturnType<typeof networkGate>> | undefined;

  /** Postgres, Temporal, the API and the worker, each its own process; resolves once all serve. */
  const startController = async () => {
    // Both assigned as they come, so that afterAll stops one whose sibling failed to start.
    const started = await Promise.allSettled([
      startPostgresProcess({
        dataDir: join(dir, 'pg'),
        port: pgPort,
        database: 'e2epool_crash',
      }).then((p) => (pg = p)),
      startDevServer({
        bin: shared().temporalBin,
        port: temporalPort,
        uiPort: null,
        dbFile: join(dir, 'temporal.sqlite'),
        namespace: 'default',
      }).then((t) => (temporal = t)),
    ]);
    for (const s of started) if (s.status === 'rejected') throw s.reason;
    if (!pg) throw new Error('unreachable: Postgres did not start');
    const procEnv = { ...env, E2EPOOL_DATABASE_URL: pg.url };
    api = startCli(['api'], procEnv);
    await api.waitForOutput(/api listening/, 60_000);
    worker = startCli(['worker'], procEnv);
    await worker.waitForOutput(/worker running/, 60_000);
  };

  /** SIGKILLs every process of the controller at once; the agent is left running. */
  const killController = async () => {
    const pidFile = join(dir, 'pg', 'cluster', 'postmaster.pid');
    const postmaster = existsSync(pidFile)
      ? Number(readFileSync(pidFile, 'utf8').split('\n')[0])
      : undefined;
    const all: Array<ChildProcess | undefined> = [
      api?.child,
      worker?.child,
      temporal?.process,
      pg?.child,
    ];
    for (const p of all) {
      if (p && p.exitCode === null && p.signalCode === null) {
        // Postgres runs in its own process group (its helper and the server's processes).
        if (p === pg?.child) process.kill(-p.pid!, 'SIGKILL');
        else p.kill('SIGKILL');
      }
    }
    await Promise.all(all.map((p) => (p ? killGroup(p) : undefined)));
    // A new postmaster refuses the data directory while the old one's pid is alive (or unreaped).
    if (postmaster !== undefined)
      await waitFor('the killed postmaster to be gone', () => !alive(postmaster!), {
        timeoutMs: 20_000,
        intervalMs: 50,
      });
  };

  const starts = () =>
    existsSync(marker)
      ? readFileSync(marker, 'utf8')
          .split('\n')
          .filter((l) => l === 'start').length
      : 0;

  /** Whether the worker's agent bus listens for command results (it does once an exec waits). */
  const retriedAttemptWaits = async () => {
    const client = new Client({ connectionString: pg!.url });
    await client.connect();
    try {
      const { rowCount } = await client.query(
        `SELECT 1 FROM pg_stat_activity WHERE application_name = 'e2epool-agent-bus'`,
      );
      return (rowCount ?? 0) > 0;
    } finally {
      await client.end();
    }
  };

  const diagnostics = () =>
    `\napi:\n${api?.stderr().slice(-3000)}${api?.stdout().slice(-3000)}\nworker:\n${worker
      ?.stderr()
      .slice(-3000)}${worker?.stdout().slice(-3000)}\nagent:\n${agentOutput().slice(-3000)}`;

  beforeAll(async () => {
    chmodSync(dir, 0o755); // embedded Postgres runs as the postgres user when we are root
    const script = join(dir, 'reset.sh');
    // Long enough to be killed in; appends one line as it starts, one as it ends.
    writeFileSync(script, `echo start >> ${marker}\nsleep 10\necho end >> ${marker}\n`);
    [pgPort, temporalPort] = await Promise.all([freePort(), freePort()]);
    const apiPort = await freePort();
    apiUrl = `http://127.0.0.1:${apiPort}`;
    gitlab = await startGitLabStandIn();
    gitlab.addRunner(GITLAB_RUNNER);
    const inventory = join(dir, 'inventory.yml');
    writeFileSync(
      inventory,
      `runners:\n${bareMetalRunnerYaml(r, { reset_cmd: `"sh ${script}"`, gitlab_runner_id: GITLAB_RUNNER })}`,
      { mode: 0o600 },
    );
    env = {
      ...temporalEnv(`127.0.0.1:${temporalPort}`),
      E2EPOOL_INVENTORY_PATH: inventory,
      E2EPOOL_TASK_QUEUE: uniqueId('tq-ctl-crash'),
      E2EPOOL_HOST: '127.0.0.1',
      E2EPOOL_PORT: String(apiPort),
      E2EPOOL_WORKER_METRICS_PORT: '0',
      E2EPOOL_GITLAB_URL: gitlab.url,
      E2EPOOL_GITLAB_TOKEN: gitlab.token,
      E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.2',
      E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
      E2EPOOL_FINALIZE_ACK_SECONDS: '1',
    };
    await startController();
    gate = await networkGate(apiPort);
    const a = spawnAgent(dir, `http://127.0.0.1:${gate.port}`, r);
    agent = a.child;
    agentOutput = a.output;
  }, 180_000);

  afterAll(async () => {
    if (agent) await stopProcess(agent, 'SIGKILL');
    await Promise.all([api?.stop('SIGKILL'), worker?.stop('SIGKILL')]);
    await temporal?.stop();
    await pg?.stop();
    await gitlab?.close();
    await gate?.close();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it(`finishes each reset and unpauses within ${RECOVERY_MS / 1000}s of the restart, killed at ${KILL_AFTER_MS.join(', ')} ms into reset_cmd`, async () => {
    const rest = restClient(() => apiUrl, r.token);
    const recoveries: number[] = [];
    for (const [i, killAfter] of KILL_AFTER_MS.entries()) {
      const created = await waitFor(
        'a checkpoint (the agent connected, the runner idle)',
        async () => {
          const res = await rest.create(r.id, `55${i}`);
          return res.status === 201 ? (res.body.name as string) : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 250 },
      );
      const before = starts();
      expect((await rest.finalize(created, 'failure')).status).toBe(202);
      await waitFor('reset_cmd to start on the agent', () => starts() > before, {
        timeoutMs: 30_000,
        intervalMs: 50,
      });
      const inCommand = Date.now();
      await new Promise((res) => setTimeout(res, Math.max(0, inCommand + killAfter - Date.now())));
      expect(gitlab.runner(GITLAB_RUNNER).paused).toBe(true);

      // The agent cannot reach the controller until the retried reset_cmd attempt waits for
      // it, as when its reconnect backs off (reconnect_max_delay, 60 s by default) past the
      // activity's retry: the command then looks in flight on the dead API's session.
      gate!.shut();
      await killController();
      const restartedAt = Date.now();
      await startController();
      await waitFor('the retried reset_cmd attempt to wait for its command', retriedAttemptWaits, {
        timeoutMs: RECOVERY_MS,
        intervalMs: 250,
      });
      gate!.open();
      try {
        await waitFor(
          `${created} to reach reset after the crash at ${killAfter} ms`,
          async () => (await rest.status(created)).body?.state === 'reset',
          { timeoutMs: RECOVERY_MS + 15_000, intervalMs: 250 },
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}${diagnostics()}`);
      }
      const recovery = Date.now() - restartedAt;
      recoveries.push(recovery);
      expect({ killAfter, recovered: recovery < RECOVERY_MS }).toEqual({
        killAfter,
        recovered: true,
      });
      expect(gitlab.runner(GITLAB_RUNNER).paused).toBe(false);
    }
    expect(recoveries).toHaveLength(KILL_AFTER_MS.length);
  }, 330_000);
});
