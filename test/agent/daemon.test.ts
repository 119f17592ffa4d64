import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { AgentConfig } from '../../agent/config';
import { EXEC_OUTPUT_FLUSH_MS } from '../../common/agent-protocol';
import { startAgent, type AgentHandle, type AgentOptions } from '../../agent/daemon';
import { ipcRequest } from '../../agent/ipc';
import { uniqueId } from '../helpers/env';
import { REPO, runCli } from '../helpers/processes';
import { waitFor } from '../helpers/wait';
import { FakeController, memoryLogger, requireBuiltCli, tempDir, testAgentConfig } from './helpers';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** This agent's version (unbuilt under ts-jest: package.json's). */
const OWN_VERSION = (
  JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }
).version;
const OWN_MAJOR = Number(OWN_VERSION.split('.')[0]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('agent daemon against a controller', () => {
  let runnerId: string;
  let token: string;
  let ctl: FakeController;
  let tmp: ReturnType<typeof tempDir>;
  let agents: AgentHandle[];
  let logs: ReturnType<typeof memoryLogger>;
  let socketPath: string;

  const start = async (over: Partial<AgentConfig> = {}, opts: AgentOptions = {}) => {
    const agent = await startAgent(testAgentConfig(ctl, { runnerId, token, socketPath }, over), {
      log: logs.log,
      ...opts,
    });
    agents.push(agent);
    return agent;
  };
  const cli = (args: string[], env: Record<string, string> = {}) =>
    runCli([...args, '--socket', socketPath], {
      E2EPOOL_AGENT_CONFIG: join(tmp.dir, 'none.yml'),
      ...env,
    });

  beforeAll(() => requireBuiltCli());
  beforeEach(async () => {
    runnerId = uniqueId('metal'); // a runner of each test's own
    token = `tok-${randomBytes(8).toString('hex')}`;
    tmp = tempDir();
    socketPath = join(tmp.dir, 'agent.sock');
    agents = [];
    logs = memoryLogger();
    ctl = await new FakeController({ [runnerId]: token }).start();
  });
  afterEach(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await ctl.close();
    tmp.cleanup();
    expect(logs.text()).not.toContain(token);
  });

  it('serves create, status and finalize from the real CLI', async () => {
    const agent = await start();
    expect(await agent.waitConnected(5000)).toBe(true);

    const created = await cli(['create', '--job-id', '123'], { CI_PROJECT_ID: '42' });
    expect(created).toMatchObject({ code: 0, stderr: '' });
    const name = created.stdout.trim();
    expect(name).toMatch(/^job-123-\d+-[0-9a-f]{8}$/);
    expect(ctl.requestsOf('create')[0]!.payload).toEqual({ job_id: '123', project_id: '42' });

    const status = await cli(['status', '--checkpoint', name]);
    expect(status).toMatchObject({ code: 0, stdout: `name:   ${name}\nstate:  created\n` });

    // GitLab's $CI_JOB_STATUS value `failed` is accepted and sent as `failure`.
    const fin = await cli(['finalize', '--checkpoint', name, '--status', 'failed']);
    expect(fin).toMatchObject({ code: 0, stdout: 'Finalize queued\n' });
    expect(ctl.requestsOf('finalize')[0]!.payload).toEqual({
      checkpoint_name: name,
      status: 'failure',
      source: 'agent',
    });
    const again = await cli(['finalize', '--checkpoint', name, '--status', 'canceled']);
    expect(again).toMatchObject({ code: 0, stdout: 'Already finalized\n' });

    const after = await cli(['status', '--checkpoint', name]);
    expect(after.stdout).toBe(`name:   ${name}\nstate:  finalize_queued\nresult: failure\n`);
    for (const r of [created, status, fin, after]) expect(r.stdout + r.stderr).not.toContain(token);
  });

  it('turns error replies into exit 1 with the detail; 75 for a busy runner (409 on create)', async () => {
    await start();
    const missing = await cli(['status', '--checkpoint', 'job-1-1700000000-a1b2c3d4']);
    expect(missing).toMatchObject({ code: 1, stdout: '', stderr: 'Error: Checkpoint not found\n' });
    expect((await cli(['create', '--job-id', '7'])).code).toBe(0);
    const busy = await cli(['create', '--job-id', '8']);
    expect(busy.code).toBe(75);
    expect(busy.stderr).toMatch(
      new RegExp(`^Error: Active checkpoint 'job-7-.*' already exists for runner '${runnerId}'\n$`),
    );
  });

  it('sends each request under a fresh WebSocket id and returns the CLI id', async () => {
    const agent = await start();
    await agent.waitConnected(5000);
    const req = { id: 'same-id', type: 'ping', payload: {} };
    const replies = await Promise.all([
      ipcRequest(socketPath, req, 5000),
      ipcRequest(socketPath, req, 5000),
      ipcRequest(socketPath, { type: 'ping' }, 5000),
    ]);
    // The agent adds which controller answered (for `e2epool ping`), without credentials.
    const data = {
      pong: true,
      controller_url: expect.stringMatching(/^ws:\/\/127\.0\.0\.1:\d+\//),
    };
    expect(replies).toEqual([
      { id: 'same-id', status: 'ok', data, error: null },
      { id: 'same-id', status: 'ok', data, error: null },
      { id: '', status: 'ok', data, error: null },
    ]);
    const ids = ctl.requestsOf('ping').map((r) => r.id as string);
    expect(ids).toHaveLength(3);
    for (const id of ids) expect(id).toMatch(UUID);
    expect(new Set(ids).size).toBe(3);
  });

  it('answers a malformed IPC request with 400 and keeps serving', async () => {
    await start();
    await expect(ipcRequest(socketPath, { id: 'e', type: 'exec' }, 5000)).resolves.toEqual({
      id: 'e',
      status: 'error',
      data: null,
      error: {
        code: 400,
        detail: 'Malformed request: type must be one of create, finalize, status, ping, logs',
      },
    });
    await expect(
      ipcRequest(socketPath, { id: 'p', type: 'status', payload: 'x' }, 5000),
    ).resolves.toMatchObject({ error: { code: 400 } });
    await expect(ipcRequest(socketPath, { id: 7, type: 'ping' }, 5000)).resolves.toMatchObject({
      error: { code: 400, detail: 'Malformed request: id must be a string' },
    });
    await expect(ipcRequest(socketPath, { id: 'ok', type: 'ping' }, 5000)).resolves.toMatchObject({
      status: 'ok',
    });
  });

  it('reconnects quickly after the controller drops it, and a request waits for that', async () => {
    const agent = await start();
    await agent.waitConnected(5000);
    const dropped = Date.now();
    ctl.dropAll();
    await waitFor('the agent to notice the drop', () => !agent.isConnected(), { intervalMs: 5 });
    // The request arrives while disconnected; the agent waits for the reconnect.
    const reply = await ipcRequest(socketPath, { id: 'w', type: 'ping' }, 10_000);
    expect(reply).toMatchObject({ id: 'w', status: 'ok' });
    expect(ctl.connections).toHaveLength(2);
    expect(Date.now() - dropped).toBeLessThan(1800); // the first retry comes after 1-1.1 s
    expect(ctl.connections[1]!.tokenIn).toBe('header');
    expect(ctl.connections[1]!.rawUrl).not.toContain(token);
  });

  it("names its version on the handshake and warns when the controller's major version differs", async () => {
    const other = `${OWN_MAJOR + 1}.0.0`;
    ctl.controllerVersion = other;
    const agent = await start();
    await agent.waitConnected(5000);
    expect(ctl.connections[0]!.agentVersion).toBe(OWN_VERSION);
    const warning = await waitFor('the version warning', () =>
      logs.lines().find((l) => l.includes('major version differs')),
    );
    expect(JSON.parse(warning)).toMatchObject({
      level: 40,
      agentVersion: OWN_VERSION,
      controllerVersion: other,
    });
  });

  it('does not warn when the controller shares its major version, or does not name one', async () => {
    ctl.controllerVersion = `${OWN_MAJOR}.99.1`;
    const agent = await start();
    await agent.waitConnected(5000);
    const connected = await waitFor('the connected line', () =>
      logs.lines().find((l) => l.includes('connected to controller')),
    );
    expect(JSON.parse(connected)).toMatchObject({ controllerVersion: `${OWN_MAJOR}.99.1` });
    // A controller older than the handshake names none: nothing to compare.
    ctl.controllerVersion = null;
    ctl.dropAll();
    const second = await waitFor(
      'the reconnect',
      () => logs.lines().filter((l) => l.includes('connected to controller'))[1],
      { timeoutMs: 10_000 },
    );
    expect(JSON.parse(second)).toMatchObject({ controllerVersion: null });
    expect(logs.text()).not.toContain('major version differs');
  });

  it('replies 503 when no connection comes within the wait', async () => {
    await start(
      { controllerUrl: `ws://127.0.0.1:${await deadPort()}/ws/agent` },
      { connectWaitMs: 300 },
    );
    await expect(ipcRequest(socketPath, { id: 'n', type: 'ping' }, 5000)).resolves.toEqual({
      id: 'n',
      status: 'error',
      data: null,
      error: { code: 503, detail: 'Not connected to controller' },
    });
    const r = await cli(['status', '--checkpoint', 'x'], {});
    expect(r).toMatchObject({ code: 75 }); // a temporary refusal
    // The agent waits 10 s by default; this one was told 300 ms.
    expect(r.stderr).toBe('Error: Not connected to controller\n');
  });

  it('replies 504 when the controller does not answer in time, 503 when the connection is lost', async () => {
    const agent = await start({ requestTimeout: 0.3 });
    await agent.waitConnected(5000);
    ctl.silent = true; // answers pings only
    const status = { type: 'status', payload: { checkpoint_name: 'x' } };
    await expect(ipcRequest(socketPath, { id: 's', ...status }, 5000)).resolves.toEqual({
      id: 's',
      status: 'error',
      data: null,
      error: { code: 504, detail: 'Controller did not respond in time' },
    });
    ctl.silent = false;
    ctl.dropOn = 'status';
    await expect(ipcRequest(socketPath, { id: 'l', ...status }, 5000)).resolves.toEqual({
      id: 'l',
      status: 'error',
      data: null,
      error: { code: 503, detail: 'Connection lost' },
    });
  });

  it('backs off after 4401 or an old controller refusing its token, and says why without the token', async () => {
    const old = await new FakeController({ [runnerId]: token }).start();
    old.mode = 'old';
    try {
      const started = Date.now();
      await start({ token: 'wrong-token-1', reconnectMaxDelay: 5 });
      await start(
        { controllerUrl: old.url, token: 'wrong-token-2', socketPath: join(tmp.dir, 'b.sock') },
        {},
      );
      await waitFor('the 4401 close', () => ctl.connections[0]?.closeCode === 4401);
      await waitFor(
        'the old controller to refuse header and query',
        () => old.handshakes.length === 2,
      );
      expect(old.handshakes.map((h) => h.tokenIn)).toEqual(['header', 'query']);
      // A normal reconnect comes within ~1.1 s; after bad credentials nothing for the maximum delay.
      await sleep(2500 - (Date.now() - started));
      expect(ctl.handshakes).toHaveLength(1);
      expect(old.handshakes).toHaveLength(2);
      const errors = logs.lines().filter((l) => l.includes('rejected the credentials'));
      expect(errors).toHaveLength(2);
      for (const line of errors) {
        expect(line).toContain(`runner '${runnerId}'`);
        expect(JSON.parse(line).level).toBe(50);
      }
      expect(logs.text()).not.toMatch(/wrong-token/);
    } finally {
      await old.close();
    }
  });

  it('falls back to the token in the query after an old controller answers the header with 403', async () => {
    ctl.mode = 'old';
    const agent = await start();
    expect(await agent.waitConnected(5000)).toBe(true);
    expect(ctl.handshakes).toEqual([
      { tokenIn: 'header', ok: false },
      { tokenIn: 'query', ok: true },
    ]);
    await expect(ipcRequest(socketPath, { id: 'q', type: 'ping' }, 5000)).resolves.toMatchObject({
      status: 'ok',
    });
    ctl.dropAll();
    await waitFor('a reconnect', () => ctl.open().length === 1 && ctl.connections.length === 2);
    expect(ctl.handshakes[2]).toEqual({ tokenIn: 'query', ok: true });
    const notes = logs.lines().filter((l) => l.includes('Authorization header (HTTP 403)'));
    expect(notes).toHaveLength(1);
    // afterEach checks the token never reached the log, although it was in the URL.
  });

  it('runs exec commands and replies as {id, status, data: {exit_code, stdout, stderr}}', async () => {
    const agent = await start({ allowedCommands: ['echo hi', 'exit 4', 'sleep 5'] });
    await agent.waitConnected(5000);
    const ok = await ctl.exec('echo hi', 10, 'x1');
    expect(ok).toEqual({
      id: 'x1',
      status: 'ok',
      data: { exit_code: 0, stdout: 'hi\n', stderr: '' },
    });
    expect(await ctl.exec('exit 4')).toMatchObject({ status: 'error', data: { exit_code: 4 } });
    expect(await ctl.exec('echo not allowed')).toMatchObject({
      status: 'error',
      data: { exit_code: -1, stdout: '', stderr: 'Command not allowed by agent configuration' },
    });
    expect(await ctl.exec('')).toMatchObject({
      status: 'error',
      data: { exit_code: -1, stderr: 'Empty command' },
    });
    expect(await ctl.exec('sleep 5', 0.3)).toMatchObject({
      status: 'error',
      data: { exit_code: -1, stderr: 'Command timed out after 0.3s' },
    });
  });

  it('sends the output of a running command as exec_output frames, in order, within a second, then the unchanged reply', async () => {
    const agent = await start();
    await agent.waitConnected(5000);
    // Each stdout line says when it was printed (epoch ms), so a frame's lateness can be measured.
    const cmd =
      'for i in 1 2 3 4 5; do echo "out $i $(date +%s%3N)"; echo "err $i" >&2; sleep 0.3; done';
    const id = uniqueId('exec');
    const reply = await ctl.exec(cmd, 10, id);
    // An absence cannot be awaited: wait longer than any timer of the agent's output streamer.
    await sleep(EXEC_OUTPUT_FLUSH_MS * 2);

    expect(reply).toEqual({
      id,
      status: 'ok',
      data: {
        exit_code: 0,
        stdout: expect.stringMatching(/^(out \d \d{13}\n){5}$/),
        stderr: 'err 1\nerr 2\nerr 3\nerr 4\nerr 5\n',
      },
    });
    const mine = ctl.received.filter((r) => r.frame.id === id);
    const replyAt = mine.findIndex((r) => 'status' in r.frame);
    expect(replyAt).toBe(mine.length - 1); // nothing for this exec after its reply
    const outputs = mine.slice(0, replyAt).map((r) => ({
      at: r.at,
      ...(r.frame as { type: string; payload: { stream: string; seq: number; data: string } }),
    }));
    expect(outputs.every((o) => o.type === 'exec_output')).toBe(true);
    expect(outputs.map((o) => o.payload.seq)).toEqual(outputs.map((_o, i) => i + 1));
    const stream = (name: string) =>
      outputs
        .filter((o) => o.payload.stream === name)
        .map((o) => o.payload.data)
        .join('');
    const { data } = reply as { data: { stdout: string; stderr: string } };
    expect(stream('stdout')).toBe(data.stdout);
    expect(stream('stderr')).toBe(data.stderr);
    // The first line arrived while the command still had more than a second to run ...
    expect(outputs[0]!.at).toBeLessThanOrEqual(mine[replyAt]!.at - 1000);
    // ... and every line within a second of being printed.
    const late = outputs.flatMap((o) =>
      [...o.payload.data.matchAll(/^out \d (\d{13})$/gm)].map((m) => o.at - Number(m[1])),
    );
    expect(late).toHaveLength(5);
    for (const ms of late) expect(ms).toBeLessThan(1000);
  });

  it('logs and ignores malformed frames from the controller', async () => {
    const agent = await start();
    await agent.waitConnected(5000);
    for (const raw of [
      'not json',
      '[1,2]',
      '{"type":"exec","payload":{"cmd":"echo x"}}',
      '{"id":"w","type":"weird"}',
      '{"id":"nobody-asked","status":"ok","data":null}',
      '{"status":"ok"}',
      'null',
    ]) {
      ctl.sendRaw(raw);
    }
    expect(await ctl.exec('echo still-here')).toMatchObject({ data: { stdout: 'still-here\n' } });
    expect(ctl.connections).toHaveLength(1);
    expect(agent.isConnected()).toBe(true);
    expect(logs.lines().filter((l) => l.includes('ignoring')).length).toBeGreaterThanOrEqual(5);
  });

  it('pings every heartbeat_interval and reconnects when the controller falls silent', async () => {
    const agent = await start({ heartbeatInterval: 0.1 });
    await agent.waitConnected(5000);
    await waitFor('five pings', () => ctl.requestsOf('ping').length >= 5);
    expect(ctl.connections).toHaveLength(1); // answered pings keep the connection
    ctl.mute = true;
    await waitFor('a new connection after the silence', () => ctl.connections.length >= 2, {
      timeoutMs: 5000,
    });
    ctl.mute = false;
    expect(logs.text()).toContain('no message from the controller');
    expect(await agent.waitConnected(5000)).toBe(true);
  });

  it('stop() lets a running command finish and report, closes with 1000, removes the socket', async () => {
    const agent = await start();
    await agent.waitConnected(5000);
    const result = ctl.exec('sleep 0.5; echo drained', 10);
    await waitFor('the command to start', () => agent.runningCommands() === 1, { intervalMs: 10 });
    await agent.stop();
    await expect(result).resolves.toMatchObject({ status: 'ok', data: { stdout: 'drained\n' } });
    expect(existsSync(socketPath)).toBe(false);
    await waitFor('the server to see the close', () => ctl.connections[0]!.closed);
    expect(ctl.connections[0]!.closeCode).toBe(1000);
  });
});
