import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AgentBus } from '../../activities/agent-bus';
import { databaseUrlOf } from '../../api/server';
import {
  lateAgentGateway,
  operations,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { REPO } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

/**
 * The real agent process ↔ the real gateway ↔ Temporal ↔ Postgres: CLI
 * commands through IPC and WebSocket, reset commands run by the agent's shell.
 */
describe('agent end to end', () => {
  let dir: string;
  let c: TestController;
  let bus: AgentBus;
  const agents: ChildProcess[] = [];
  let agentOut = '';

  const socket = () => join(dir, 'agent.sock');
  // Asynchronous on purpose: the API and worker run in this process and must keep serving.
  const cli = (...args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [
        join(REPO, 'bin', 'e2epool.js'),
        ...args,
        '--socket',
        socket(),
      ]);
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.once('close', (status) => resolve({ status, stdout, stderr }));
    });

  function startAgent(token = 'tok-e2e-1', socketPath = socket()): ChildProcess {
    const config = join(dir, `agent-${agents.length}.yml`);
    writeFileSync(
      config,
      `controller_url: ${c.api.url.replace('http', 'ws')}/ws/agent\nrunner_id: e2e-1\ntoken: ${token}\nsocket_path: ${socketPath}\nheartbeat_interval: 1\nreconnect_max_delay: 5\n`,
      { mode: 0o600 },
    );
    const child = spawn(
      process.execPath,
      [join(REPO, 'bin', 'e2epool.js'), 'agent', '--config', config],
      { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout!.on('data', (d: Buffer) => (agentOut += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (agentOut += d.toString()));
    agents.push(child);
    return child;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-agent-e2e-'));
    chmodSync(dir, 0o755);
    const marker = join(dir, 'resets.log');
    const lazyBus = lateAgentGateway();
    c = await startTestController({
      agents: lazyBus,
      inventory: `runners:
  - runner_id: e2e-1
    backend: bare_metal
    token: tok-e2e-1
    reset_cmd: "sh -c 'sleep \${E2E_SLEEP:-0}; echo reset >> ${marker}; echo reset-ok; echo warn >&2'"
`,
      env: { E2EPOOL_WS_HEARTBEAT_INTERVAL: '1', E2EPOOL_WS_HEARTBEAT_TIMEOUT: '5' },
    });
    bus = new AgentBus(c.ds, databaseUrlOf(c.ds), {
      staleAfterSeconds: 5,
      connectWaitSeconds: 20,
      pollMs: 100,
      log: pino({ level: 'silent' }),
    });
    lazyBus.use(bus);
  });
  afterAll(async () => {
    for (const a of agents) if (a.exitCode === null) a.kill('SIGKILL');
    await bus?.close();
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('CLI exit codes: 2 while no agent runs, then 0 and 1 through a running agent', async () => {
    const none = await cli('status', '--checkpoint', 'job-1-1700000000-abcdef01');
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('agent is not running');

    startAgent();
    await waitFor('the agent session', () => bus.isConnected('e2e-1'), { timeoutMs: 20_000 });
    const created = await cli('create', '--job-id', '501');
    expect([created.status, created.stderr]).toEqual([0, '']);
    const name = created.stdout.trim();
    expect(name).toMatch(/^job-501-\d+-[0-9a-f]{8}$/);

    const again = await cli('create', '--job-id', '502');
    expect(again.status).toBe(1);
    expect(again.stderr.trim()).toBe(
      `Error: Active checkpoint '${name}' already exists for runner 'e2e-1'`,
    );
    expect(await cli('status', '--checkpoint', 'job-1-1700000000-abcdef01')).toMatchObject({
      status: 1,
      stderr: 'Error: Checkpoint not found\n',
    });

    const fin = await cli('finalize', '--checkpoint', name, '--status', 'failed');
    expect([fin.status, fin.stdout]).toEqual([0, 'Finalize queued\n']);
    await waitFor(
      'the reset',
      async () => (await cli('status', '--checkpoint', name)).stdout.includes('state:  reset'),
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    expect((await cli('status', '--checkpoint', name)).stdout).toBe(
      `name:   ${name}\nstate:  reset\nresult: failure\n`,
    );

    // The agent's shell ran reset_cmd; its exit code and output tails are in the operation log.
    expect(readFileSync(join(dir, 'resets.log'), 'utf8')).toBe('reset\n');
    const row = (await operations(c.ds, name)).find((o) => o.operation === 'reset_cmd');
    expect(row).toMatchObject({ result: 'ok', detail: 'exit 0; stdout: reset-ok; stderr: warn' });
    expect(agentOut).not.toContain('tok-e2e-1');
  });

  it('an agent killed in the middle of a reset: the reset completes after a new agent connects', async () => {
    const name = (await cli('create', '--job-id', '503')).stdout.trim();
    expect(name).toMatch(/^job-503-/);
    // Make the next reset slow enough to kill the agent while it runs.
    const slow = `sh -c 'sleep 2; echo reset >> ${join(dir, 'resets.log')}; echo reset-ok'`;
    writeFileSync(
      c.inventory.path,
      readFileSync(c.inventory.path, 'utf8').replace(/reset_cmd: .*/, `reset_cmd: "${slow}"`),
    );
    expect(c.inventory.reload()).toBe(true);
    expect(c.inventory.inventory.get('e2e-1')?.reset_cmd).toBe(slow);
    const before = readFileSync(join(dir, 'resets.log'), 'utf8').split('\n').length;

    expect((await cli('finalize', '--checkpoint', name, '--status', 'failure')).status).toBe(0);
    await waitFor(
      'the reset command to start',
      async () =>
        (await c.ds.query(`SELECT 1 FROM agent_commands WHERE state = 'sent' AND cmd = $1`, [slow]))
          .length > 0,
    );
    agents.at(-1)!.kill('SIGKILL');
    await waitFor('the session to go', async () => !(await bus.isConnected('e2e-1')), {
      timeoutMs: 20_000,
    });
    startAgent();
    await waitFor(
      'the reset after the new agent connected',
      async () => (await cli('status', '--checkpoint', name)).stdout.includes('state:  reset'),
      { timeoutMs: 60_000, intervalMs: 300 },
    );
    // The command ran again on the new agent (the first run may also finish: reset scripts must be idempotent).
    expect(readFileSync(join(dir, 'resets.log'), 'utf8').split('\n').length).toBeGreaterThan(
      before,
    );
  }, 90_000);

  it('bad credentials: the gateway closes with 4401 and the agent backs off, logging a clear error without the token', async () => {
    agentOut = '';
    const bad = startAgent('not-the-token', join(dir, 'bad.sock'));
    await waitFor('the 4401 error in the log', () => /4401|[Ii]nvalid credentials/.test(agentOut), {
      timeoutMs: 15_000,
    });
    expect(agentOut).toContain('e2e-1');
    expect(agentOut).not.toContain('not-the-token');
    bad.kill('SIGTERM');
    await new Promise((r) => bad.once('exit', r));
    expect(existsSync(socket())).toBe(true); // the other agent's socket is untouched
  }, 30_000);
});
