import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { WebSocket } from 'ws';
import { AgentBus } from '../../activities/agent-bus';
import { agentConfig } from '../../agent/config';
import { startAgent } from '../../agent/daemon';
import type { CheckpointService } from '../../service/checkpoint-service';
import { databaseUrlOf, HEADERS_TIMEOUT_MS, type ApiServer } from '../../api/server';
import {
  CONTROLLER_VERSION_HEADER,
  EXEC_OUTPUT_FRAME_BYTES,
  type ExecOutputPayload,
} from '../../common/agent-protocol';
import { InventoryStore } from '../../config/inventory';
import { AgentHub, type ExecOutputHook } from '../../gateway/agent-hub';
import { attachAgentGateway, type GatewayDeps } from '../../gateway/ws-gateway';
import { createStore } from '../../store';
import { memoryLogger, tempDir } from '../agent/helpers';
import {
  lateAgentGateway,
  operations,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { connectRawAgent, type RawAgent } from '../helpers/raw-agent';
import {
  bareMetalInventory,
  bareMetalRunnerYaml,
  testRunners,
  uniqueId,
  writeInventory,
  type TestRunner,
} from '../helpers/env';
import { waitFor } from '../helpers/wait';

// One runner (so one workflow id and one agent session row) per test.
const AUTH = ['authQuery', 'authHeader', 'authOther', 'authNoRunner', 'authNoToken'] as const;
const FRAMES = [
  'notJson',
  'array',
  'numericId',
  'unknownType',
  'payloadNotObject',
  'binary',
] as const;
const R = testRunners([
  ...AUTH,
  'authOtherOwner',
  ...FRAMES,
  'accept',
  'service',
  'serviceOther',
  'serviceBadInput',
  'reset',
  'replace',
  'restart',
  'heartbeat',
  'revokeToken',
  'revokeRunner',
  'revokeBystander',
  'regFail',
  'claimOnly',
  'output',
  'outputBystander',
  'outputAgent',
  'version',
]);
/** Runners whose reset runs `/opt/reset.sh --all` (the rest: `/opt/reset.sh`). */
const RESET_ALL: TestRunner[] = [R.reset, R.restart];
const inventoryOf = (runners: TestRunner[]) =>
  `runners:\n${runners
    .map((r) =>
      bareMetalRunnerYaml(r, {
        reset_cmd: RESET_ALL.includes(r) ? '/opt/reset.sh --all' : '/opt/reset.sh',
      }),
    )
    .join('')}`;
const INVENTORY = inventoryOf(Object.values(R));

/** Resolves like `p`, or rejects once `ms` passed, saying what it waited for. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A hand-written WebSocket upgrade request on a raw TCP socket, which then answers nothing. */
interface RawUpgrade {
  sock: Socket;
  /** Everything the server sent so far. */
  received(): Buffer;
  /** Resolves when the server has sent at least `n` bytes. */
  bytes(n: number): Promise<Buffer>;
  /** Resolves when the TCP connection is gone. */
  closed: Promise<void>;
}

function rawUpgrade(port: number, query: string): Promise<RawUpgrade> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const waiters: Array<() => void> = [];
    const received = () => Buffer.concat(chunks);
    sock.on('data', (d) => {
      chunks.push(d);
      for (const w of waiters.splice(0)) w();
    });
    sock.on('error', () => undefined);
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    void closed.then(() => {
      for (const w of waiters.splice(0)) w();
    });
    const bytes = async (n: number): Promise<Buffer> => {
      for (;;) {
        const b = received();
        if (b.length >= n || sock.destroyed) return b;
        await new Promise<void>((r) => waiters.push(r));
      }
    };
    sock.once('connect', () => {
      sock.write(
        `GET /ws/agent?${query} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n',
      );
      resolve({ sock, received, bytes, closed });
    });
    sock.once('error', reject);
  });
}

/** The close frame the server sends a rejected agent: 4401 `Invalid credentials`, unmasked. */
const CLOSE_4401 = Buffer.concat([
  Buffer.from([0x88, 2 + 'Invalid credentials'.length, 0x11, 0x31]),
  Buffer.from('Invalid credentials'),
]);

describe('agent WebSocket gateway (/ws/agent: auth, envelopes, exec, heartbeat)', () => {
  let c: TestController;
  let other: ApiServer; // a second API instance on the same database
  let bus: AgentBus;
  const open: RawAgent[] = [];
  const agent = async (
    o: Parameters<typeof connectRawAgent>[1],
    api: () => Pick<ApiServer, 'url'> = () => c.api,
  ) => {
    const a = await connectRawAgent(api().url, o);
    open.push(a);
    return a;
  };

  beforeAll(async () => {
    // The worker reaches agents through Postgres, like `e2epool worker`.
    const lazyBus = lateAgentGateway();
    c = await startTestController({
      inventory: INVENTORY,
      agents: lazyBus,
      env: { E2EPOOL_WS_HEARTBEAT_INTERVAL: '0.2', E2EPOOL_WS_HEARTBEAT_TIMEOUT: '1.5' },
    });
    bus = new AgentBus(c.ds, databaseUrlOf(c.ds), {
      staleAfterSeconds: 1.5,
      connectWaitSeconds: 3,
      pollMs: 100,
      log: pino({ level: 'silent' }),
    });
    lazyBus.use(bus);
    other = await c.startAnotherApi();
    // As `e2epool api` does (every second there): inventory changes take effect on their own.
    c.inventory.watch(100);
  });
  afterAll(async () => {
    for (const a of open) a.ws.terminate();
    await bus?.close();
    await c?.stop();
  });

  describe('authentication', () => {
    it.each([
      ['a wrong token in the query', () => ({ runnerId: R.authQuery.id, token: 'nope' })],
      [
        'a wrong token in the header',
        () => ({ runnerId: R.authHeader.id, token: 'nope', mode: 'header' as const }),
      ],
      [
        "another runner's token",
        () => ({ runnerId: R.authOther.id, token: R.authOtherOwner.token }),
      ],
      ['no runner_id', () => ({ token: R.authNoRunner.token })],
      ['no token', () => ({ runnerId: R.authNoToken.id })],
    ])('%s: accepted, then closed with 4401', async (_what, o) => {
      const a = await agent(o());
      expect(await a.closed).toEqual({ code: 4401, reason: 'Invalid credentials' });
    });

    it('accepts the token in the query or in an Authorization header', async () => {
      for (const mode of ['query', 'header'] as const) {
        const a = await agent({ runnerId: R.accept.id, token: R.accept.token, mode });
        expect(await a.request('ping', {}, 'p1')).toEqual({
          id: 'p1',
          status: 'ok',
          data: { pong: true },
          error: null,
        });
        a.close();
        await a.closed;
      }
    });
  });

  describe('frames', () => {
    // A connection of each test's own, on its own runner.
    const own = async (r: TestRunner) => agent({ runnerId: r.id, token: r.token });
    const done = async (a: RawAgent) => {
      a.close();
      await a.closed;
    };

    it.each([
      ['not JSON', 'notJson', '{nope', 'Malformed message: not valid JSON', ''],
      ['a JSON array', 'array', '[1,2]', 'Malformed message: expected a JSON object', ''],
      [
        'a numeric id',
        'numericId',
        '{"id":1,"type":"ping"}',
        'Malformed request: id: Input should be a valid string',
        '',
      ],
      [
        'an unknown type',
        'unknownType',
        '{"id":"x","type":"exec","payload":{}}',
        'Malformed request: type:',
        'x',
      ],
      [
        'a payload that is not an object',
        'payloadNotObject',
        '{"id":"y","type":"ping","payload":3}',
        'Malformed request: payload:',
        'y',
      ],
    ] as const)(
      'answers %s with an error envelope and keeps the connection',
      async (_what, label, raw, detail, id) => {
        const a = await own(R[label]);
        const reply = a.nextReply();
        a.sendRaw(raw);
        const r = await reply;
        expect(r).toEqual({
          id,
          status: 'error',
          data: null,
          error: { code: 400, detail: expect.stringContaining(detail) },
        });
        expect(await a.request('ping', {}, 'after')).toMatchObject({ status: 'ok' });
        await done(a);
      },
    );

    it('answers a binary frame with an error envelope', async () => {
      const a = await own(R.binary);
      const reply = a.nextReply();
      a.sendRaw(Buffer.from([1, 2, 3]), true);
      expect(await reply).toEqual({
        id: '',
        status: 'error',
        data: null,
        error: { code: 400, detail: 'Malformed message: binary frames are not supported' },
      });
      expect(await a.request('ping', {}, 'after')).toMatchObject({ status: 'ok' });
      await done(a);
    });
  });

  describe('requests go through the same service as REST', () => {
    it('create, 409 on a second create, 422 on a bad payload, status, finalize, 403 for another runner', async () => {
      const r = R.service;
      const a = await agent({ runnerId: r.id, token: r.token });
      const created = await a.request('create', { job_id: '61', caller: 'cli' });
      expect(created).toMatchObject({
        status: 'ok',
        error: null,
        data: { runner_id: r.id, job_id: '61', state: 'created' },
      });
      const name = (created.data as { name: string }).name;
      expect(await a.request('create', { job_id: '62' })).toMatchObject({
        status: 'error',
        data: null,
        error: {
          code: 409,
          detail: `Active checkpoint '${name}' already exists for runner '${r.id}'`,
        },
      });
      expect(await a.request('create', { job_id: 'bad id' })).toMatchObject({
        status: 'error',
        error: { code: 422, detail: expect.stringContaining('job_id') },
      });
      expect(
        await a.request('finalize', { checkpoint_name: name, status: 'failed' }),
      ).toMatchObject({ error: { code: 422, detail: expect.stringContaining('status') } });
      expect(await a.request('status', { checkpoint_name: name })).toMatchObject({
        status: 'ok',
        data: { name, state: 'created' },
      });

      const b = await agent({ runnerId: R.serviceOther.id, token: R.serviceOther.token });
      expect(await b.request('status', { checkpoint_name: name })).toMatchObject({
        error: { code: 403, detail: 'Token not authorized for this checkpoint' },
      });
      expect(await b.request('status', {})).toMatchObject({ error: { code: 422 } });
      b.close();
      a.close();
      await Promise.all([a.closed, b.closed]);
    });
  });

  it("refuses a NUL in any payload string and a project_id that could leave GitLab's URL path, with a 422", async () => {
    const r = R.serviceBadInput;
    const a = await agent({ runnerId: r.id, token: r.token });
    const refused = (field: string) => ({
      status: 'error',
      data: null,
      error: { code: 422, detail: expect.stringContaining(field) },
    });
    expect(await a.request('create', { job_id: '1', caller: 'ci\u0000' })).toMatchObject(
      refused('caller'),
    );
    expect(await a.request('create', { job_id: '1\u0000' })).toMatchObject(refused('job_id'));
    for (const project_id of ['..', 'a/../b', 'x\u0000']) {
      expect(await a.request('create', { job_id: '1', project_id })).toMatchObject(
        refused('project_id'),
      );
    }
    const name = 'job-1-1700000000-abcdef01';
    expect(
      await a.request('finalize', { checkpoint_name: name, status: 'failure', source: 's\u0000' }),
    ).toMatchObject(refused('source'));
    expect(
      await a.request('finalize', { checkpoint_name: `${name}\u0000`, status: 'failure' }),
    ).toMatchObject(refused('checkpoint_name'));
    expect(await a.request('status', { checkpoint_name: `${name}\u0000` })).toMatchObject(
      refused('checkpoint_name'),
    );
    // Nothing was created.
    expect((await restClient(() => c.api.url, r.token).create(r.id, '2')).status).toBe(201);
    a.close();
    await a.closed;
  });

  it('runs reset_cmd on the agent, connected to another API instance than the REST calls, and logs its output', async () => {
    const r = R.reset;
    const a = await agent(
      {
        runnerId: r.id,
        token: r.token,
        onExec: (cmd) => ({ exit_code: 0, stdout: `reset done by ${cmd}\n`, stderr: '' }),
      },
      () => other,
    );
    await waitFor('the agent session', () => bus.isConnected(r.id));
    const rest = restClient(() => c.api.url, r.token);
    const name = (await rest.create(r.id, '71')).body.name as string;
    expect((await rest.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset', async () => (await rest.status(name)).body.state === 'reset');
    const execs = a.messages.filter((m) => (m as { type?: string }).type === 'exec');
    expect(execs).toEqual([
      {
        id: expect.any(String),
        type: 'exec',
        payload: { cmd: '/opt/reset.sh --all', timeout: 600 },
      },
    ]);
    const log = (await operations(c.ds, name)).find((o) => o.operation === 'reset_cmd');
    expect(log).toMatchObject({
      result: 'ok',
      detail: 'exit 0; stdout: reset done by /opt/reset.sh --all; stderr: ',
    });
    a.close();
    await a.closed;
  });

  it('a second connection replaces the first, and the late close of the first leaves the second registered', async () => {
    const r = R.replace;
    const first = await agent({ runnerId: r.id, token: r.token });
    await waitFor('the first session', () => bus.isConnected(r.id));
    const second = await agent(
      {
        runnerId: r.id,
        token: r.token,
        onExec: () => ({ exit_code: 0, stdout: 'second', stderr: '' }),
      },
      () => other,
    );
    expect(await first.closed).toEqual({ code: 4000, reason: 'Replaced by a newer connection' });
    const rows = await c.ds.query(`SELECT instance_id FROM agent_sessions WHERE runner_id = $1`, [
      r.id,
    ]);
    expect(rows).toEqual([{ instance_id: other.hub.instanceId }]);
    expect(await bus.exec(r.id, 'echo hi', 5)).toEqual({
      exitCode: 0,
      stdout: 'second',
      stderr: '',
    });
    second.close();
    await second.closed;
    await waitFor('the session to be removed', async () => !(await bus.isConnected(r.id)));
  });

  it('an agent restarted in the middle of a reset: the command runs again after it reconnects and the reset completes', async () => {
    const r = R.restart;
    const rest = restClient(() => c.api.url, r.token);
    let restarted: RawAgent | undefined;
    const dying: RawAgent = await agent({
      runnerId: r.id,
      token: r.token,
      // The agent "restarts" while the reset command runs: it drops the connection without replying.
      onExec: () => {
        dying.ws.terminate();
        setTimeout(() => {
          void agent({
            runnerId: r.id,
            token: r.token,
            onExec: (cmd) => ({ exit_code: 0, stdout: `ran ${cmd} again`, stderr: '' }),
          }).then((a) => (restarted = a));
        }, 300);
        return null;
      },
    });
    await waitFor('the session', () => bus.isConnected(r.id));
    const name = (await rest.create(r.id, '81')).body.name as string;
    expect((await rest.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset', async () => (await rest.status(name)).body.state === 'reset', {
      timeoutMs: 30_000,
    });
    const execs = (a: RawAgent) =>
      a.messages.filter((m) => (m as { type?: string }).type === 'exec');
    expect(execs(dying)).toHaveLength(1);
    expect(execs(restarted!)).toHaveLength(1);
    const log = (await operations(c.ds, name)).find((o) => o.operation === 'reset_cmd');
    expect(log).toMatchObject({
      result: 'ok',
      detail: 'exit 0; stdout: ran /opt/reset.sh --all again; stderr: ',
    });
    restarted!.close();
    await restarted!.closed;
  });

  it('closes a connection whose heartbeat stops, and the runner then counts as not connected', async () => {
    const r = R.heartbeat;
    const a = await agent({ runnerId: r.id, token: r.token, autoPong: false });
    await waitFor('the session', () => bus.isConnected(r.id));
    const closed = await a.closed;
    expect(closed.code).toBe(1006); // terminated by the server
    await waitFor('not connected', async () => !(await bus.isConnected(r.id)));
    await expect(bus.exec(r.id, 'true', 5)).rejects.toMatchObject({ type: 'AgentNotConnected' });
  });

  it(
    'disconnects a client that sends nothing, or half an upgrade request, within the headers timeout',
    async () => {
      const silentOrHalf = ['', 'GET /ws/agent HTTP/1.1\r\nUpgrade: websocket\r\n'].map((bytes) => {
        const sock = connect(c.api.port, '127.0.0.1');
        const data: Buffer[] = [];
        sock.on('data', (d) => data.push(d));
        sock.on('error', () => undefined);
        const closed = new Promise<void>((res) => sock.once('close', () => res()));
        sock.once('connect', () => sock.write(bytes));
        return { sock, data, closed };
      });
      try {
        await within(
          HEADERS_TIMEOUT_MS + 3000,
          'the server to drop both sockets',
          Promise.all(silentOrHalf.map((x) => x.closed)),
        );
      } finally {
        for (const x of silentOrHalf) x.sock.destroy();
      }
      for (const x of silentOrHalf)
        expect(Buffer.concat(x.data).toString('latin1')).toMatch(/^HTTP\/1\.1 408 /);
    },
    HEADERS_TIMEOUT_MS + 10_000,
  );

  describe('inventory changes', () => {
    /** Replaces the inventory file at once (a rename, so a reload never sees half a file). */
    const rewrite = (yaml: string) => {
      const tmp = `${c.inventory.path}.${randomBytes(4).toString('hex')}.tmp`;
      writeFileSync(tmp, yaml, { mode: 0o600 });
      renameSync(tmp, c.inventory.path);
    };

    it('closes with 4401 the live sockets of a runner whose token changed or that was removed; others stay', async () => {
      const a = await agent({ runnerId: R.revokeToken.id, token: R.revokeToken.token });
      const b = await agent(
        { runnerId: R.revokeRunner.id, token: R.revokeRunner.token, mode: 'header' },
        () => other,
      );
      const keep = await agent({ runnerId: R.revokeBystander.id, token: R.revokeBystander.token });
      for (const r of [R.revokeToken, R.revokeRunner, R.revokeBystander])
        await waitFor(`the session of ${r.id}`, () => bus.isConnected(r.id));

      const rotated = { ...R.revokeToken, token: `${R.revokeToken.token}-rotated` };
      rewrite(
        inventoryOf(
          Object.values(R)
            .filter((r) => r !== R.revokeRunner)
            .map((r) => (r === R.revokeToken ? rotated : r)),
        ),
      );
      const expected = { code: 4401, reason: 'Invalid credentials' };
      expect(await within(5000, 'the changed token to be closed', a.closed)).toEqual(expected);
      expect(await within(5000, 'the removed runner to be closed', b.closed)).toEqual(expected);
      expect(await keep.request('ping', {}, 'still')).toMatchObject({ status: 'ok' });
      await waitFor('the closed sessions to be removed', async () => {
        const rows = await c.ds.query(`SELECT 1 FROM agent_sessions WHERE runner_id = ANY($1)`, [
          [R.revokeToken.id, R.revokeRunner.id],
        ]);
        return rows.length === 0;
      });

      const again = await agent({ runnerId: rotated.id, token: rotated.token });
      expect(await again.request('ping', {}, 'new')).toMatchObject({ status: 'ok' });
      for (const x of [again, keep]) x.close();
      await Promise.all([again.closed, keep.closed]);
    });
  });

  describe('live command output (exec_output)', () => {
    const silentLog = pino({ level: 'silent' });
    /** An API instance of the test's own (a hub and a gateway) whose hub passes live output to `hook`. */
    const instanceWith = async (hook: ExecOutputHook) => {
      const server = createServer();
      const hub = new AgentHub(
        createStore(c.ds),
        databaseUrlOf(c.ds),
        silentLog,
        c.settings.wsHeartbeatTimeoutSeconds,
        { onExecOutput: hook },
      );
      await hub.start();
      const gateway = attachAgentGateway(server, {
        inventory: c.inventory,
        checkpoints: {} as CheckpointService, // only pings here
        logs: {} as GatewayDeps['logs'],
        hub,
        settings: c.settings,
        log: silentLog,
      });
      await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
      return {
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        async close() {
          gateway.close();
          await hub.stop();
          server.closeAllConnections();
          await new Promise((res) => server.close(res));
        },
      };
    };
    type Call = { runnerId: string; commandId: string; output: ExecOutputPayload; at: number };
    const output = (id: string, payload: unknown) =>
      JSON.stringify({ id, type: 'exec_output', payload });

    it('passes the frames of a command in flight to the hook in order, ignores any other id, refuses malformed ones and keeps the connection', async () => {
      const r = R.output;
      const calls: Call[] = [];
      const api = await instanceWith((runnerId, commandId, o) => {
        calls.push({ runnerId, commandId, output: o, at: Date.now() });
      });
      try {
        const a = await agent({ runnerId: r.id, token: r.token, onExec: () => null }, () => api);
        const bystander = await agent(
          { runnerId: R.outputBystander.id, token: R.outputBystander.token },
          () => api,
        );
        await waitFor('the session', () => bus.isConnected(r.id));
        const commandId = uniqueId('cmd');
        const result = bus.exec(r.id, 'make test', 10, { commandId });
        const exec = await waitFor('the exec command', () =>
          (a.messages as Array<{ id: string; type?: string }>).find((m) => m.type === 'exec'),
        );

        a.sendRaw(output('never-sent', { stream: 'stdout', seq: 1, data: 'forged\n' }));
        a.sendRaw(output(exec.id, { stream: 'stdout', seq: 1, data: 'one\n' }));
        a.sendRaw(output(exec.id, { stream: 'stderr', seq: 2, data: 'warn\n' }));
        a.sendRaw(output(exec.id, { stream: 'stdout', seq: 3, data: 'two ✓\n' }));
        const big = 'é'.repeat(EXEC_OUTPUT_FRAME_BYTES / 2 + 1); // fewer characters than bytes
        for (const [payload, id, detail] of [
          [{ stream: 'stdin', seq: 4, data: 'x' }, exec.id, 'payload.stream:'],
          [{ stream: 'stdout', seq: 0, data: 'x' }, exec.id, 'payload.seq:'],
          [{ stream: 'stdout', seq: 4.5, data: 'x' }, exec.id, 'payload.seq:'],
          [{ stream: 'stdout', seq: 4, data: 7 }, exec.id, 'payload.data:'],
          [{ stream: 'stdout', seq: 4, data: big }, exec.id, 'payload.data: Too big'],
          [
            { stream: 'stdout', seq: 4, data: 'x'.repeat(EXEC_OUTPUT_FRAME_BYTES + 1) },
            '',
            'payload.data:',
          ],
          ['not an object', exec.id, 'payload:'],
        ] as const) {
          const reply = a.nextReply();
          a.sendRaw(output(id, payload));
          expect(await reply).toEqual({
            id,
            status: 'error',
            data: null,
            error: {
              code: 400,
              detail: expect.stringContaining(`Malformed exec_output: ${detail}`),
            },
          });
        }
        a.sendRaw(output(exec.id, { stream: 'stdout', seq: 4, data: 'three\n' }));
        expect(await a.request('ping', {}, 'between')).toMatchObject({ status: 'ok' });

        a.sendRaw(
          JSON.stringify({
            id: exec.id,
            status: 'ok',
            data: { exit_code: 0, stdout: 'one\ntwo ✓\nthree\n', stderr: 'warn\n' },
          }),
        );
        expect(await result).toEqual({
          exitCode: 0,
          stdout: 'one\ntwo ✓\nthree\n',
          stderr: 'warn\n',
        });
        // A frame after the reply is not trusted either; the ping's answer shows it was handled.
        a.sendRaw(output(exec.id, { stream: 'stdout', seq: 5, data: 'late\n' }));
        expect(await a.request('ping', {}, 'after')).toMatchObject({ status: 'ok' });

        expect(calls.map(({ at: _at, ...call }) => call)).toEqual(
          [
            { stream: 'stdout', seq: 1, data: 'one\n' },
            { stream: 'stderr', seq: 2, data: 'warn\n' },
            { stream: 'stdout', seq: 3, data: 'two ✓\n' },
            { stream: 'stdout', seq: 4, data: 'three\n' },
          ].map((o) => ({ runnerId: r.id, commandId, output: o })),
        );
        expect(await bystander.request('ping', {}, 'unaffected')).toMatchObject({ status: 'ok' });
        for (const x of [a, bystander]) x.close();
        await Promise.all([a.closed, bystander.closed]);
      } finally {
        await api.close();
      }
    });

    it("a real agent's output reaches the hook while the command runs, within the caps, before the result; a failing hook changes nothing", async () => {
      const r = R.outputAgent;
      const calls: Call[] = [];
      const api = await instanceWith((runnerId, commandId, o) => {
        calls.push({ runnerId, commandId, output: o, at: Date.now() });
        if (calls.length === 1) throw new Error('hook broke');
        if (calls.length === 2) return Promise.reject(new Error('hook broke later'));
      });
      const tmp = tempDir();
      const daemon = await startAgent(
        agentConfig({
          controllerUrl: `${api.url.replace(/^http/, 'ws')}/ws/agent`,
          runnerId: r.id,
          token: r.token,
          socketPath: join(tmp.dir, 'agent.sock'),
          heartbeatInterval: 30,
        }),
        { log: silentLog },
      );
      try {
        await waitFor('the session', () => bus.isConnected(r.id));
        const commandId = uniqueId('cmd');
        const started = Date.now();
        const result = await bus.exec(
          r.id,
          'for i in 1 2 3; do echo "out $i"; echo "err $i" >&2; sleep 0.3; done; ' +
            'yes abcdefghi | head -c 600000',
          30,
          { commandId },
        );
        const finished = Date.now();
        expect(result).toMatchObject({ exitCode: 0, stderr: 'err 1\nerr 2\nerr 3\n' });
        expect(calls.length).toBeGreaterThan(3);
        for (const call of calls) {
          expect(call).toMatchObject({ runnerId: r.id, commandId });
          expect(Buffer.byteLength(call.output.data)).toBeLessThanOrEqual(EXEC_OUTPUT_FRAME_BYTES);
          expect(call.at).toBeLessThanOrEqual(finished);
        }
        // Every frame the agent sent passed the gateway's checks: no seq is missing.
        expect(calls.map((x) => x.output.seq)).toEqual(calls.map((_x, i) => i + 1));
        // The first line arrived while the command still ran (it sleeps 0.9 s).
        expect(calls[0]!.at - started).toBeLessThan(finished - started - 500);
        const of = (stream: string) =>
          calls
            .filter((x) => x.output.stream === stream)
            .map((x) => x.output.data)
            .join('');
        expect(of('stderr')).toBe('err 1\nerr 2\nerr 3\n');
        expect(of('stdout')).toMatch(/^out 1\nout 2\nout 3\n/);
        expect(of('stdout')).toMatch(/\[e2epool: \d+ bytes of output dropped\]\n(abcdefghi\n)+$/);
      } finally {
        await daemon.stop();
        await api.close();
        tmp.cleanup();
      }
    });
  });

  it("the version handshake: the controller logs the agent's version, and names its own to authenticated agents only", async () => {
    const r = R.version;
    const { version } = JSON.parse(readFileSync(join(__dirname, '../../package.json'), 'utf8')) as {
      version: string;
    };
    const controllerLogs = memoryLogger();
    const agentLogs = memoryLogger();
    const server = createServer();
    const hub = new AgentHub(
      createStore(c.ds),
      databaseUrlOf(c.ds),
      controllerLogs.log,
      c.settings.wsHeartbeatTimeoutSeconds,
    );
    await hub.start();
    const gateway = attachAgentGateway(server, {
      inventory: c.inventory,
      checkpoints: {} as CheckpointService,
      logs: {} as GatewayDeps['logs'],
      hub,
      settings: c.settings,
      log: controllerLogs.log,
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const wsUrl = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws/agent`;
    const tmp = tempDir();
    const daemon = await startAgent(
      agentConfig({
        controllerUrl: wsUrl,
        runnerId: r.id,
        token: r.token,
        socketPath: join(tmp.dir, 'agent.sock'),
        heartbeatInterval: 30,
      }),
      { log: agentLogs.log },
    );
    try {
      const line = (logs: typeof agentLogs, msg: string) =>
        waitFor(msg, () => logs.lines().find((l) => l.includes(msg)));
      expect(JSON.parse(await line(controllerLogs, 'agent connected'))).toMatchObject({
        runnerId: r.id,
        agentVersion: version,
      });
      expect(JSON.parse(await line(agentLogs, 'connected to controller'))).toMatchObject({
        agentVersion: version,
        controllerVersion: version,
      });
      expect(agentLogs.text()).not.toContain('major version differs');
      // A socket with bad credentials learns nothing about this controller.
      const headerOf = (token: string) =>
        new Promise<string | undefined>((resolve, reject) => {
          const url = `${wsUrl}?runner_id=${encodeURIComponent(r.id)}&token=${token}`;
          const ws = new WebSocket(url);
          ws.once('upgrade', (res) => resolve(res.headers[CONTROLLER_VERSION_HEADER] as string));
          ws.once('error', reject);
          ws.once('open', () => ws.terminate());
        });
      expect(await headerOf('nope')).toBeUndefined();
      expect(await headerOf(encodeURIComponent(r.token))).toBe(version);
    } finally {
      await daemon.stop();
      gateway.close();
      await hub.stop();
      server.closeAllConnections();
      await new Promise((res) => server.close(res));
      tmp.cleanup();
    }
  });

  describe('sessions', () => {
    it('a registration that fails leaves no session behind: the previous connection keeps the runner', async () => {
      const r = R.regFail;
      const first = await agent({
        runnerId: r.id,
        token: r.token,
        onExec: (cmd) => ({ exit_code: 0, stdout: `first ran ${cmd}`, stderr: '' }),
      });
      await waitFor('the first session', () => bus.isConnected(r.id));
      const [{ session_id: firstSession }] = (await c.ds.query(
        `SELECT session_id FROM agent_sessions WHERE runner_id = $1`,
        [r.id],
      )) as Array<{ session_id: string }>;
      // Postgres refuses the second connection's session row.
      const fn = `test_refuse_${randomBytes(4).toString('hex')}`;
      await c.ds.query(
        `CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.runner_id = '${r.id}' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$`,
      );
      await c.ds.query(
        `CREATE TRIGGER ${fn} BEFORE INSERT ON agent_sessions FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
      );
      try {
        const second = await agent({ runnerId: r.id, token: r.token });
        expect(await second.closed).toEqual({
          code: 1011,
          reason: 'Server error, reconnect later',
        });
      } finally {
        await c.ds.query(`DROP TRIGGER ${fn} ON agent_sessions`);
        await c.ds.query(`DROP FUNCTION ${fn}()`);
      }
      expect(
        await c.ds.query(
          `SELECT session_id, instance_id FROM agent_sessions WHERE runner_id = $1`,
          [r.id],
        ),
      ).toEqual([{ session_id: firstSession, instance_id: c.api.hub.instanceId }]);
      // The hub still sends the runner's commands to the first connection.
      expect(await within(10_000, 'the command', bus.exec(r.id, 'echo hi', 5))).toEqual({
        exitCode: 0,
        stdout: 'first ran echo hi',
        stderr: '',
      });
      first.close();
      await first.closed;
    });

    it("claims a runner's commands only for the runner's current session on its own instance", async () => {
      const r = R.claimOnly;
      const store = createStore(c.ds);
      const current = randomUUID();
      const stale = randomUUID();
      await store.sessions.register({ runnerId: r.id, sessionId: current, instanceId: 'inst-b' });
      const id = uniqueId('cmd');
      await store.commands.enqueue({
        id,
        runnerId: r.id,
        cmd: 'true',
        timeoutSeconds: 5,
        sendWithinSeconds: 60,
      });
      try {
        expect(await store.commands.claim(r.id, 'inst-a', stale)).toEqual([]);
        expect(await store.commands.claim(r.id, 'inst-a', current)).toEqual([]);
        expect(await store.commands.claim(r.id, 'inst-b', stale)).toEqual([]);
        expect(await store.commands.claim(r.id, 'inst-b', current)).toEqual([
          { id, cmd: 'true', timeoutSeconds: 5, checkpointId: null },
        ]);
      } finally {
        await c.ds.query(`DELETE FROM agent_commands WHERE id = $1`, [id]);
        await store.sessions.remove(r.id, current);
      }
    });
  });
});

describe('unauthenticated agent sockets (a gateway of its own)', () => {
  const r = testRunners(['unauthValid']).unauthValid;
  let server: Server;
  let gateway: { close(): void };
  let inventory: InventoryStore;
  let port: number;
  const raws: RawUpgrade[] = [];
  const silent = pino({ level: 'silent' });

  /** A gateway whose hub only hands out session ids; `limits` are its test settings. */
  const start = async (limits: Record<string, number>) => {
    server = createServer();
    inventory = InventoryStore.load(writeInventory(bareMetalInventory(r)), silent);
    const hub = {
      register: () => Promise.resolve(randomUUID()),
      unregister: () => Promise.resolve(),
      touch: () => Promise.resolve(true),
      handleReply: () => Promise.resolve(),
    } as unknown as AgentHub;
    const deps = {
      inventory,
      hub,
      checkpoints: {} as CheckpointService,
      settings: { wsHeartbeatIntervalSeconds: 30, wsHeartbeatTimeoutSeconds: 90 },
      log: silent,
      ...limits,
    };
    gateway = attachAgentGateway(server, deps as unknown as GatewayDeps);
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    port = (server.address() as AddressInfo).port;
  };
  const bad = async () => {
    const u = await rawUpgrade(port, `runner_id=${r.id}&token=wrong`);
    raws.push(u);
    return u;
  };
  afterEach(async () => {
    for (const u of raws.splice(0)) u.sock.destroy();
    gateway?.close();
    server?.closeAllConnections();
    await new Promise((res) => server?.close(res));
    inventory?.close();
  });

  it('disconnects a rejected client that never answers the 4401 close frame, within seconds', async () => {
    await start({});
    const u = await bad();
    const got = (await u.bytes(CLOSE_4401.length + 20)).toString('latin1');
    expect(got).toMatch(/^HTTP\/1\.1 101 /);
    await within(3000, 'the server to drop the socket', u.closed);
    expect(u.received().includes(CLOSE_4401)).toBe(true);
  });

  it('refuses with 503 an upgrade over the cap of unauthenticated sockets; an agent with valid credentials still connects', async () => {
    await start({ maxUnauthenticatedSockets: 3, authCloseGraceMs: 60_000 });
    const held = await Promise.all([bad(), bad(), bad()]);
    for (const u of held) expect((await u.bytes(12)).toString('latin1')).toMatch(/^HTTP\/1\.1 101/);

    const over = await bad();
    await within(3000, 'the refused socket to close', over.closed);
    expect(over.received().toString('latin1')).toMatch(
      /^HTTP\/1\.1 503 Service Unavailable\r\n[^]*\r\n\r\nToo many unauthenticated connections/,
    );

    const valid = await connectRawAgent(`http://127.0.0.1:${port}`, {
      runnerId: r.id,
      token: r.token,
    });
    expect(await valid.request('ping', {}, 'p')).toMatchObject({ status: 'ok' });
    valid.ws.terminate();

    // Once the held sockets are gone, bad credentials are answered with 4401 again.
    for (const u of held) u.sock.destroy();
    await waitFor('a rejected client to get its 4401 again', async () => {
      const u = await bad();
      const b = await u.bytes(12);
      u.sock.destroy();
      return b.toString('latin1').startsWith('HTTP/1.1 101');
    });
  });
});
