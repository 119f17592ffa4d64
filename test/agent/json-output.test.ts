import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startAgent, type AgentHandle } from '../../agent/daemon';
import { uniqueId } from '../helpers/env';
import { runCli } from '../helpers/processes';
import { FakeController, memoryLogger, requireBuiltCli, tempDir, testAgentConfig } from './helpers';

/**
 * The agent commands' machine-readable output and exit codes, from the real
 * CLI process through a real agent to a controller speaking the protocol:
 * `--json` on status, ping and logs (shapes in the docs/reference.md, "Command line: output and exit codes"), `finalize --status cancelled`, 75 for a busy runner.
 */
describe('the agent commands for scripts', () => {
  let runnerId: string;
  let ctl: FakeController;
  let tmp: ReturnType<typeof tempDir>;
  let agent: AgentHandle | null;
  let socketPath: string;

  const cli = (...args: string[]) =>
    runCli([...args, '--socket', socketPath], {
      E2EPOOL_AGENT_CONFIG: join(tmp.dir, 'none.yml'),
    });

  beforeAll(() => requireBuiltCli());
  beforeEach(async () => {
    runnerId = uniqueId('json');
    const token = `tok-${randomBytes(8).toString('hex')}`;
    tmp = tempDir();
    socketPath = join(tmp.dir, 'agent.sock');
    ctl = await new FakeController({ [runnerId]: token }).start();
    agent = await startAgent(
      testAgentConfig(ctl, { runnerId, token, socketPath }),
      // Without a controller, a request waits this long for one, then gets 503.
      { log: memoryLogger().log, connectWaitMs: 500 },
    );
    expect(await agent.waitConnected(5000)).toBe(true);
  });
  afterEach(async () => {
    await agent?.stop();
    await ctl.close();
    tmp.cleanup();
  });

  it('status --json: one object {name, state, result, verified, verify_detail}, nothing else on stdout', async () => {
    const created = await cli('create', '--job-id', '31');
    expect(created.code).toBe(0);
    const name = created.stdout.trim();

    const before = await cli('status', '--checkpoint', name, '--json');
    expect([before.code, before.stderr]).toEqual([0, '']);
    expect(before.stdout.endsWith('\n')).toBe(true);
    expect(before.stdout.trimEnd().split('\n')).toHaveLength(1);
    expect(JSON.parse(before.stdout)).toEqual({
      name,
      state: 'created',
      result: null,
      verified: null,
      verify_detail: null,
    });

    // GitHub's spelling `cancelled` is accepted and sent (so stored) as `canceled`.
    const fin = await cli('finalize', '--checkpoint', name, '--status', 'cancelled');
    expect(fin).toMatchObject({ code: 0, stdout: 'Finalize queued\n', stderr: '' });
    expect(ctl.requestsOf('finalize')[0]!.payload).toMatchObject({ status: 'canceled' });

    const cp = ctl.checkpoints.get(name)!;
    Object.assign(cp, { verified: false, verify_detail: 'marker still there' });
    const after = await cli('status', '--json', '--checkpoint', name);
    expect(JSON.parse(after.stdout)).toEqual({
      name,
      state: 'finalize_queued',
      result: 'canceled',
      verified: false,
      verify_detail: 'marker still there',
    });
  });

  it('ping --json: {pong, controller_url, ms}', async () => {
    const r = await cli('ping', '--json');
    expect([r.code, r.stderr]).toEqual([0, '']);
    const doc = JSON.parse(r.stdout) as { pong: boolean; controller_url: unknown; ms: number };
    expect(Object.keys(doc)).toEqual(['pong', 'controller_url', 'ms']);
    expect(doc.pong).toBe(true);
    expect(Number.isInteger(doc.ms) && doc.ms >= 0).toBe(true);
  });

  it('logs --json: one object per entry (JSON Lines), in order, only the fields set', async () => {
    const name = ctl.addCheckpoint(runnerId, 'reset');
    ctl.appendLog(
      name,
      { kind: 'step', step: 'reset_cmd', result: 'running' },
      { kind: 'stdout', text: 'wiping {"not": "json"}' },
      { kind: 'stderr', text: 'warning' },
      { kind: 'step', step: 'reset_cmd', result: 'ok', duration_ms: 12, text: 'exit 0\nmore' },
    );
    const r = await cli('logs', '--checkpoint', name, '--json', '--follow');
    expect([r.code, r.stderr]).toEqual([0, '']);
    const lines = r.stdout.trimEnd().split('\n');
    const at = expect.any(String);
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual([
      { seq: 1, at, kind: 'step', step: 'reset_cmd', result: 'running' },
      { seq: 2, at, kind: 'stdout', text: 'wiping {"not": "json"}' },
      { seq: 3, at, kind: 'stderr', text: 'warning' },
      {
        seq: 4,
        at,
        kind: 'step',
        step: 'reset_cmd',
        result: 'ok',
        duration_ms: 12,
        text: 'exit 0\nmore',
      },
    ]);
  });

  it('errors stay text on stderr with --json: stdout is empty, the exit code tells them apart', async () => {
    const missing = await cli('status', '--checkpoint', 'job-1-1700000000-a1b2c3d4', '--json');
    expect(missing).toEqual({ code: 1, stdout: '', stderr: 'Error: Checkpoint not found\n' });

    // A busy runner (409 on create) is a temporary refusal: 75, not 1.
    expect((await cli('create', '--job-id', '1')).code).toBe(0);
    const busy = await cli('create', '--job-id', '2', '--wait', '0');
    expect(busy.code).toBe(75);
    expect(busy.stdout).toBe('');

    // The agent's link to the controller down: 503, also temporary.
    await ctl.close();
    const down = await cli('ping', '--json');
    expect(down.code).toBe(75);
    expect(down.stdout).toBe('');
    expect(down.stderr).toMatch(/^Error: (Not connected to controller|Connection lost)\n$/);
  });
});
