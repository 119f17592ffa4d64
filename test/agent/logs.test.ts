import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { formatLogEntry, logsAction, type CliIo } from '../../agent/cli';
import type { AgentConfig } from '../../agent/config';
import { startAgent, type AgentHandle, type AgentOptions } from '../../agent/daemon';
import { ipcRequest, startIpcServer } from '../../agent/ipc';
import { errorReply } from '../../agent/messages';
import { LOGS_PAGE_BYTES, type LogsEntry } from '../../common/agent-protocol';
import { fitLogsPage } from '../../gateway/messages';
import { uniqueId } from '../helpers/env';
import { runCli, startCli } from '../helpers/processes';
import { waitFor } from '../helpers/wait';
import { FakeController, memoryLogger, requireBuiltCli, tempDir, testAgentConfig } from './helpers';

const entry = (seq: number, e: Omit<LogsEntry, 'seq' | 'at'>): LogsEntry => ({
  seq,
  at: '2026-11-27T14:00:01.123Z',
  ...e,
});

describe('e2epool logs: one line per entry', () => {
  it.each([
    [
      { kind: 'step', step: 'reset_cmd', result: 'running' },
      '2026-11-27T14:00:01.123Z step reset_cmd running',
    ],
    [
      {
        kind: 'step',
        step: 'reset_cmd',
        result: 'ok',
        duration_ms: 5224,
        text: 'exit 0; stdout: done; stderr: ',
      },
      '2026-11-27T14:00:01.123Z step reset_cmd ok 5224ms exit 0; stdout: done; stderr: ',
    ],
    [
      { kind: 'step', step: 'pause', result: 'error', duration_ms: 0, text: 'GitLab said\nno' },
      '2026-11-27T14:00:01.123Z step pause error 0ms GitLab said\\nno',
    ],
    [{ kind: 'stdout', text: '  indented, as printed\t' }, '  indented, as printed\t'],
    [{ kind: 'stdout', text: '' }, ''],
    [{ kind: 'stderr', text: 'warning: x' }, '[stderr] warning: x'],
    [
      { kind: 'audit', text: 'from a newer controller' },
      '2026-11-27T14:00:01.123Z audit from a newer controller',
    ],
  ] as Array<[Omit<LogsEntry, 'seq' | 'at'>, string]>)('%j → %j', (e, line) => {
    expect(formatLogEntry(entry(1, e))).toBe(line);
  });
});

describe('the controller cuts a logs page to fit one IPC frame', () => {
  const lines = (n: number, chars: number) =>
    Array.from({ length: n }, (_, i) => entry(i + 1, { kind: 'stdout', text: 'x'.repeat(chars) }));

  it('keeps a page within the limits whole', () => {
    const page = { entries: lines(3, 10), next: 3, done: true };
    expect(fitLogsPage(page)).toBe(page);
  });

  it('cuts at the entry limit and at the byte limit, is then not done, and always sends one entry', () => {
    expect(
      fitLogsPage({ entries: lines(5, 10), next: 5, done: true }, { entries: 2, bytes: 1e6 }),
    ).toEqual({
      entries: lines(2, 10),
      next: 2,
      done: false,
    });
    const big = lines(100, 16_384);
    const cut = fitLogsPage({ entries: big, next: 100, done: true });
    expect(cut.done).toBe(false);
    expect(cut.entries).toEqual(big.slice(0, cut.entries.length));
    expect(cut.next).toBe(cut.entries.length);
    const bytes = Buffer.byteLength(JSON.stringify(cut.entries));
    expect(bytes).toBeLessThanOrEqual(LOGS_PAGE_BYTES);
    expect(bytes).toBeGreaterThan(LOGS_PAGE_BYTES / 2); // so that the CLI asks again at once
    expect(
      fitLogsPage({ entries: big, next: 100, done: false }, { entries: 10, bytes: 5 }).entries,
    ).toEqual(big.slice(0, 1));
  });
});

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('e2epool logs through the agent', () => {
  let runnerId: string;
  let token: string;
  let ctl: FakeController;
  let tmp: ReturnType<typeof tempDir>;
  let agents: AgentHandle[];
  let socketPath: string;
  let noConfig: Record<string, string>;

  const start = async (
    over: Partial<AgentConfig> = {},
    opts: AgentOptions = {},
    connect = true,
  ) => {
    const agent = await startAgent(testAgentConfig(ctl, { runnerId, token, socketPath }, over), {
      log: memoryLogger().log,
      ...opts,
    });
    agents.push(agent);
    if (connect) expect(await agent.waitConnected(5000)).toBe(true);
    return agent;
  };
  const cli = (args: string[]) => runCli([...args, '--socket', socketPath], noConfig);
  /** `logsAction` in this process, its lines collected. */
  const inProcess = () => {
    const out: string[] = [];
    const err: string[] = [];
    const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), env: noConfig };
    return { io, out, err };
  };
  const afters = () => ctl.requestsOf('logs').map((r) => (r.payload as { after: number }).after);

  beforeAll(() => requireBuiltCli());
  beforeEach(async () => {
    runnerId = uniqueId('logs');
    token = `tok-${randomBytes(8).toString('hex')}`;
    tmp = tempDir();
    socketPath = join(tmp.dir, 'agent.sock');
    noConfig = { E2EPOOL_AGENT_CONFIG: join(tmp.dir, 'none.yml') };
    agents = [];
    ctl = await new FakeController({ [runnerId]: token }).start();
  });
  afterEach(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await ctl.close();
    tmp.cleanup();
  });

  it('forwards a logs request under its own WebSocket id and returns the page under the CLI id', async () => {
    await start();
    const name = ctl.addCheckpoint(runnerId);
    ctl.appendLog(name, { kind: 'stdout', text: 'a' }, { kind: 'stdout', text: 'b' });
    const reply = await ipcRequest(
      socketPath,
      { id: 'l1', type: 'logs', payload: { checkpoint_name: name, after: 1 } },
      5000,
    );
    expect(reply).toEqual({
      id: 'l1',
      status: 'ok',
      error: null,
      data: {
        entries: [{ seq: 2, at: expect.any(String), kind: 'stdout', text: 'b' }],
        next: 2,
        done: false,
      },
    });
    const [sent] = ctl.requestsOf('logs');
    expect(sent).toEqual({
      id: expect.not.stringMatching(/^l1$/),
      type: 'logs',
      payload: { checkpoint_name: name, after: 1 },
    });
  });

  it('without --follow prints every page of the log as it is now, then exits 0', async () => {
    await start();
    const name = ctl.addCheckpoint(runnerId, 'finalize_queued'); // still running: not done
    ctl.appendLog(name, { kind: 'step', step: 'reset_cmd', result: 'running' });
    for (let i = 1; i <= 2498; i++) ctl.appendLog(name, { kind: 'stdout', text: `line-${i}` });
    ctl.appendLog(name, { kind: 'stderr', text: 'oops' });

    const r = await cli(['logs', '--checkpoint', name]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toBe(
      `${ctl.logs
        .get(name)!
        .map((e) => formatLogEntry(e))
        .join('\n')}\n`,
    );
    expect(r.stdout).toMatch(/^2026-11-27T14:00:00\.000Z step reset_cmd running\nline-1\nline-2\n/);
    expect(r.stdout).toMatch(/\nline-2498\n\[stderr\] oops\n$/);
    // Pages of 1000; the third is not full, so that is all there is for now.
    expect(afters()).toEqual([0, 1000, 2000]);
  });

  it('pages on at once after a page cut to fit an IPC frame', async () => {
    await start();
    const name = ctl.addCheckpoint(runnerId, 'reset');
    const long = (i: number) => `${i}:${'y'.repeat(15_000)}`;
    for (let i = 1; i <= 60; i++) ctl.appendLog(name, { kind: 'stdout', text: long(i) });

    const r = await cli(['logs', '--checkpoint', name]);
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(r.stdout.split('\n').slice(0, -1)).toEqual(
      Array.from({ length: 60 }, (_, i) => long(i + 1)),
    );
    // 60 × 15 kB do not fit in one 512 KiB page: the first is cut, the second ends the log.
    const [first, second, ...more] = afters();
    expect([first, more]).toEqual([0, []]);
    expect(second).toBeGreaterThan(20);
    expect(second).toBeLessThan(60);
  });

  it('--follow prints new entries as they come, without repeats, and ends once the checkpoint has ended', async () => {
    await start();
    const name = ctl.addCheckpoint(runnerId, 'finalize_queued');
    ctl.appendLog(name, { kind: 'step', step: 'reset_cmd', result: 'running' });
    const { io, out, err } = inProcess();
    const began = Date.now();
    const done = logsAction({ checkpoint: name, follow: true, socket: socketPath }, io, {
      pollMs: 100,
    });

    await waitFor('the first entry', () => out.length === 1);
    ctl.appendLog(name, { kind: 'stdout', text: 'line-1' }, { kind: 'stderr', text: 'warn' });
    await waitFor('two more', () => out.length === 3);
    ctl.appendLog(name, {
      kind: 'step',
      step: 'reset_cmd',
      result: 'ok',
      duration_ms: 812,
      text: 'exit 0',
    });
    ctl.checkpoints.get(name)!.state = 'reset';
    ctl.appendLog(name, { kind: 'step', step: 'reset', result: 'ok', duration_ms: 900 });

    await expect(done).resolves.toBe(0);
    expect(err).toEqual([]);
    expect(out).toEqual(ctl.logs.get(name)!.map((e) => formatLogEntry(e)));
    expect(out.slice(1, 3)).toEqual(['line-1', '[stderr] warn']);
    // Polled every 100 ms while nothing came, not in a busy loop.
    expect(afters().length).toBeLessThanOrEqual((Date.now() - began) / 100 + 3);
    expect(afters().at(-1)).toBe(3);
  });

  it('--follow on an ended checkpoint prints its log and exits 0 at once', async () => {
    await start();
    const name = ctl.addCheckpoint(runnerId, 'deleted');
    ctl.appendLog(name, { kind: 'step', step: 'cleanup', result: 'ok' });
    const { io, out } = inProcess();
    await expect(
      logsAction({ checkpoint: name, follow: true, socket: socketPath }, io, { pollMs: 60_000 }),
    ).resolves.toBe(0);
    expect(out).toEqual([formatLogEntry(ctl.logs.get(name)![0]!)]);
    expect(afters()).toEqual([0]);
  });

  it('the CLI process: --follow exits 0 when the checkpoint has ended, and 130 quietly on Ctrl-C', async () => {
    await start();
    const ends = ctl.addCheckpoint(runnerId, 'finalize_queued');
    ctl.appendLog(ends, { kind: 'stdout', text: 'first' });
    const follower = startCli(
      ['logs', '--checkpoint', ends, '--follow', '--socket', socketPath],
      noConfig,
    );
    try {
      await follower.waitForOutput(/^first$/m);
      ctl.appendLog(ends, { kind: 'step', step: 'reset', result: 'ok', duration_ms: 5 });
      ctl.checkpoints.get(ends)!.state = 'reset';
      expect(await follower.exited).toBe(0);
      expect(follower.stdout()).toBe('first\n2026-11-27T14:00:01.000Z step reset ok 5ms\n');
      expect(follower.stderr()).toBe('');
    } finally {
      await follower.stop('SIGKILL', 1000);
    }

    const forever = ctl.addCheckpoint(runnerId, 'created');
    ctl.appendLog(forever, { kind: 'stdout', text: 'waiting' });
    const interrupted = startCli(
      ['logs', '--checkpoint', forever, '--follow', '--socket', socketPath],
      noConfig,
    );
    try {
      await interrupted.waitForOutput(/^waiting$/m);
      interrupted.child.kill('SIGINT');
      expect(await interrupted.exited).toBe(130);
      expect([interrupted.stdout(), interrupted.stderr()]).toEqual(['waiting\n', '']);
    } finally {
      await interrupted.stop('SIGKILL', 1000);
    }
  });

  it("errors: an unknown checkpoint or another runner's is exit 1 with the controller's detail", async () => {
    await start();
    expect(await cli(['logs', '--checkpoint', 'job-1-1700000000-a1b2c3d4', '--follow'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'Error: Checkpoint not found\n',
    });
    const theirs = ctl.addCheckpoint('another-runner', 'reset');
    expect(await cli(['logs', '--checkpoint', theirs])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'Error: Token not authorized for this checkpoint\n',
    });
  });

  it('exits 2 with the message of the other commands when the agent is not running', async () => {
    const logs = await cli(['logs', '--checkpoint', 'x', '--follow']);
    const status = await cli(['status', '--checkpoint', 'x']);
    expect(logs).toEqual({
      code: 2,
      stdout: '',
      stderr: `Error: agent is not running (socket not found: ${socketPath})\n`,
    });
    expect(logs).toEqual(status);
  });

  it('exits 75 (a temporary refusal) saying so when the agent cannot reach the controller', async () => {
    await start(
      { controllerUrl: `ws://127.0.0.1:${await deadPort()}/ws/agent` },
      { connectWaitMs: 300 },
      false,
    );
    expect(await cli(['logs', '--checkpoint', 'x', '--follow'])).toEqual({
      code: 75,
      stdout: '',
      stderr: 'Error: Not connected to controller\n',
    });
  });

  it('an agent older than logs: exit 1, saying to upgrade the agent', async () => {
    // What agents before `logs` answer (agent/messages.ts parseIpcRequest, with their list of types).
    const old = await startIpcServer({
      path: socketPath,
      handler: async (req) => {
        const id = typeof req.id === 'string' ? req.id : '';
        if (!['create', 'finalize', 'status', 'ping'].includes(String(req.type)))
          return errorReply(
            id,
            400,
            'Malformed request: type must be one of create, finalize, status, ping',
          );
        return errorReply(id, 503, 'Not connected to controller');
      },
    });
    try {
      expect(await cli(['logs', '--checkpoint', 'x'])).toEqual({
        code: 1,
        stdout: '',
        stderr:
          'Error: the e2epool agent on this host does not know the logs request: ' +
          'upgrade e2epool on this host and restart the agent\n',
      });
    } finally {
      await old.close(100);
    }
  });

  it('a controller older than logs (the Python one): exit 1, saying to upgrade the controller', async () => {
    await start();
    ctl.knowsLogs = false;
    const r = await cli(['logs', '--checkpoint', ctl.addCheckpoint(runnerId)]);
    expect([r.code, r.stdout]).toEqual([1, '']);
    expect(r.stderr).toBe(
      'Error: the controller does not know the logs request (1 validation error for WSRequest ' +
        "type Input should be 'create', 'finalize', 'status' or 'ping' " +
        '[type=literal_error, input_value="logs", input_type=str]): upgrade the e2epool controller\n',
    );
    expect(ctl.requestsOf('logs')).toHaveLength(1);
  });
});
