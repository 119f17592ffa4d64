import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentBus } from '../../activities/agent-bus';
import { startAgentController, operations, type AgentController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { REPO } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

// One runner (so one workflow id), one agent process and one socket per test.
const R = testRunners(['cli', 'killed', 'badCredentials']);

/**
 * The real agent process ↔ the real gateway ↔ Temporal ↔ Postgres: CLI
 * commands through IPC and WebSocket, reset commands run by the agent's shell.
 */
describe('agent end to end', () => {
  let dir: string;
  let c: AgentController;
  let bus: AgentBus;
  const agents: ChildProcess[] = [];

  const socketOf = (r: TestRunner, name = 'agent') => join(dir, `${r.id}-${name}.sock`);
  const resetsLog = (r: TestRunner) => join(dir, `${r.id}-resets.log`);
  /** `killed` resets slowly: long enough to kill its agent while the command runs. */
  const resetCmd = (r: TestRunner) =>
    r === R.killed
      ? `sh -c 'sleep 2; echo reset >> ${resetsLog(r)}; echo reset-ok'`
      : `sh -c 'echo reset >> ${resetsLog(r)}; echo reset-ok; echo warn >&2'`;

  // Asynchronous on purpose: the API and worker run in this process and must keep serving.
  const cli = (socket: string, ...args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [
        join(REPO, 'bin', 'e2epool.js'),
        ...args,
        '--socket',
        socket,
      ]);
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.once('close', (status) => resolve({ status, stdout, stderr }));
    });

  function startAgent(
    r: TestRunner,
    o: { token?: string; socket?: string } = {},
  ): { child: ChildProcess; output: () => string } {
    const config = join(dir, `agent-${agents.length}.yml`);
    writeFileSync(
      config,
      `controller_url: ${c.api.url.replace('http', 'ws')}/ws/agent\nrunner_id: ${r.id}\ntoken: ${o.token ?? r.token}\nsocket_path: ${o.socket ?? socketOf(r)}\nheartbeat_interval: 1\nreconnect_max_delay: 5\n`,
      { mode: 0o600 },
    );
    const child = spawn(
      process.execPath,
      [join(REPO, 'bin', 'e2epool.js'), 'agent', '--config', config],
      { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    agents.push(child);
    return { child, output: () => out };
  }

  /** Stops an agent process and waits for it to be gone. */
  async function stopAgent(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM') {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((res) => child.once('exit', res));
    child.kill(signal);
    await exited;
  }

  const stateOf = async (r: TestRunner, name: string) =>
    (await cli(socketOf(r), 'status', '--checkpoint', name)).stdout;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-agent-e2e-'));
    chmodSync(dir, 0o755);
    c = await startAgentController({
      inventory: `runners:\n${Object.values(R)
        .map((r) => bareMetalRunnerYaml(r, { reset_cmd: `"${resetCmd(r)}"` }))
        .join('')}`,
      env: { E2EPOOL_WS_HEARTBEAT_INTERVAL: '1', E2EPOOL_WS_HEARTBEAT_TIMEOUT: '5' },
      bus: { staleAfterSeconds: 5, connectWaitSeconds: 20 },
    });
    bus = c.bus;
  });
  afterAll(async () => {
    for (const a of agents) if (a.exitCode === null && a.signalCode === null) a.kill('SIGKILL');
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('CLI exit codes: 2 while no agent runs, then 0, 75 (busy) and 1 through a running agent', async () => {
    const r = R.cli;
    const none = await cli(socketOf(r), 'status', '--checkpoint', 'job-1-1700000000-abcdef01');
    expect(none.status).toBe(2);
    expect(none.stderr).toContain('agent is not running');

    const agent = startAgent(r);
    await waitFor('the agent session', () => bus.isConnected(r.id), { timeoutMs: 20_000 });
    const created = await cli(socketOf(r), 'create', '--job-id', '501');
    expect([created.status, created.stderr]).toEqual([0, '']);
    const name = created.stdout.trim();
    expect(name).toMatch(/^job-501-\d+-[0-9a-f]{8}$/);

    const again = await cli(socketOf(r), 'create', '--job-id', '502');
    expect(again.status).toBe(75); // busy: a temporary refusal
    expect(again.stderr.trim()).toBe(
      `Error: Active checkpoint '${name}' already exists for runner '${r.id}'`,
    );
    expect(
      await cli(socketOf(r), 'status', '--checkpoint', 'job-1-1700000000-abcdef01'),
    ).toMatchObject({
      status: 1,
      stderr: 'Error: Checkpoint not found\n',
    });

    const fin = await cli(socketOf(r), 'finalize', '--checkpoint', name, '--status', 'failed');
    expect([fin.status, fin.stdout]).toEqual([0, 'Finalize queued\n']);
    await waitFor('the reset', async () => (await stateOf(r, name)).includes('state:  reset'), {
      timeoutMs: 30_000,
      intervalMs: 250,
    });
    expect(await stateOf(r, name)).toBe(`name:   ${name}\nstate:  reset\nresult: failure\n`);

    // The agent's shell ran reset_cmd; its exit code and output tails are in the operation log.
    expect(readFileSync(resetsLog(r), 'utf8')).toBe('reset\n');
    const row = (await operations(c.ds, name)).find((o) => o.operation === 'reset_cmd');
    expect(row).toMatchObject({ result: 'ok', detail: 'exit 0; stdout: reset-ok; stderr: warn' });
    expect(agent.output()).not.toContain(r.token);
    await stopAgent(agent.child);
  });

  it('an agent killed in the middle of a reset: the reset completes after a new agent connects', async () => {
    const r = R.killed;
    const first = startAgent(r);
    await waitFor('the agent session', () => bus.isConnected(r.id), { timeoutMs: 20_000 });
    const name = (await cli(socketOf(r), 'create', '--job-id', '503')).stdout.trim();
    expect(name).toMatch(/^job-503-/);

    expect(
      (await cli(socketOf(r), 'finalize', '--checkpoint', name, '--status', 'failure')).status,
    ).toBe(0);
    await waitFor(
      'the reset command to start',
      async () =>
        (
          await c.ds.query(
            `SELECT 1 FROM agent_commands WHERE runner_id = $1 AND state = 'sent' AND cmd = $2`,
            [r.id, resetCmd(r)],
          )
        ).length > 0,
    );
    await stopAgent(first.child, 'SIGKILL');
    await waitFor('the session to go', async () => !(await bus.isConnected(r.id)), {
      timeoutMs: 20_000,
    });
    startAgent(r);
    await waitFor(
      'the reset after the new agent connected',
      async () => (await stateOf(r, name)).includes('state:  reset'),
      { timeoutMs: 60_000, intervalMs: 300 },
    );
    // The command ran again on the new agent (the first run may also finish: reset scripts must be idempotent).
    expect(readFileSync(resetsLog(r), 'utf8').trim().split('\n').length).toBeGreaterThanOrEqual(1);
    const row = (await operations(c.ds, name)).find((o) => o.operation === 'reset_cmd');
    expect(row).toMatchObject({ result: 'ok', detail: expect.stringContaining('reset-ok') });
  }, 90_000);

  it('bad credentials: the gateway closes with 4401 and the agent backs off, logging a clear error without the token', async () => {
    const r = R.badCredentials;
    const good = startAgent(r);
    await waitFor('the good agent session', () => bus.isConnected(r.id), { timeoutMs: 20_000 });
    const bad = startAgent(r, { token: 'not-the-token', socket: socketOf(r, 'bad') });
    await waitFor(
      'the 4401 error in the log',
      () => /4401|[Ii]nvalid credentials/.test(bad.output()),
      { timeoutMs: 15_000 },
    );
    expect(bad.output()).toContain(r.id);
    expect(bad.output()).not.toContain('not-the-token');
    await stopAgent(bad.child);
    // The other agent's socket and session are untouched.
    expect(existsSync(socketOf(r))).toBe(true);
    expect(await bus.isConnected(r.id)).toBe(true);
    await stopAgent(good.child);
  }, 30_000);
});
