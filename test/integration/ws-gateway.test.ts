import pino from 'pino';
import { AgentBus } from '../../activities/agent-bus';
import { databaseUrlOf, type ApiServer } from '../../api/server';
import {
  lateAgentGateway,
  operations,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { connectRawAgent, type RawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';

const INVENTORY = `runners:
  - runner_id: ws-1
    backend: bare_metal
    token: tok-ws-1
    reset_cmd: /opt/reset.sh --all
  - runner_id: ws-2
    backend: bare_metal
    token: tok-ws-2
    reset_cmd: /opt/reset.sh
`;

describe('agent WebSocket gateway (SPEC §4)', () => {
  let c: TestController;
  let other: ApiServer; // a second API instance on the same database
  let bus: AgentBus;
  const open: RawAgent[] = [];
  const agent = async (
    o: Parameters<typeof connectRawAgent>[1],
    api: () => ApiServer = () => c.api,
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
  });
  afterAll(async () => {
    for (const a of open) a.ws.terminate();
    await bus?.close();
    await c?.stop();
  });

  describe('authentication', () => {
    it.each([
      ['a wrong token in the query', { runnerId: 'ws-1', token: 'nope' }],
      ['a wrong token in the header', { runnerId: 'ws-1', token: 'nope', mode: 'header' as const }],
      ["another runner's token", { runnerId: 'ws-1', token: 'tok-ws-2' }],
      ['no runner_id', { token: 'tok-ws-1' }],
      ['no token', { runnerId: 'ws-1' }],
    ])('%s: accepted, then closed with 4401', async (_what, o) => {
      const a = await agent(o);
      expect(await a.closed).toEqual({ code: 4401, reason: 'Invalid credentials' });
    });

    it('accepts the token in the query or in an Authorization header', async () => {
      for (const mode of ['query', 'header'] as const) {
        const a = await agent({ runnerId: 'ws-2', token: 'tok-ws-2', mode });
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
    let a: RawAgent;
    beforeAll(async () => {
      a = await agent({ runnerId: 'ws-2', token: 'tok-ws-2' });
    });
    afterAll(async () => {
      a.close();
      await a.closed;
    });

    it.each([
      ['not JSON', '{nope', 'Malformed message: not valid JSON', ''],
      ['a JSON array', '[1,2]', 'Malformed message: expected a JSON object', ''],
      [
        'a numeric id',
        '{"id":1,"type":"ping"}',
        'Malformed request: id: Input should be a valid string',
        '',
      ],
      ['an unknown type', '{"id":"x","type":"exec","payload":{}}', 'Malformed request: type:', 'x'],
      [
        'a payload that is not an object',
        '{"id":"y","type":"ping","payload":3}',
        'Malformed request: payload:',
        'y',
      ],
    ])(
      'answers %s with an error envelope and keeps the connection',
      async (_what, raw, detail, id) => {
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
      },
    );

    it('answers a binary frame with an error envelope', async () => {
      const reply = a.nextReply();
      a.sendRaw(Buffer.from([1, 2, 3]), true);
      expect(await reply).toEqual({
        id: '',
        status: 'error',
        data: null,
        error: { code: 400, detail: 'Malformed message: binary frames are not supported' },
      });
    });
  });

  describe('requests go through the same service as REST', () => {
    it('create, 409 on a second create, 422 on a bad payload, status, finalize, 403 for another runner', async () => {
      const a = await agent({ runnerId: 'ws-2', token: 'tok-ws-2' });
      const created = await a.request('create', { job_id: '61', caller: 'cli' });
      expect(created).toMatchObject({
        status: 'ok',
        error: null,
        data: { runner_id: 'ws-2', job_id: '61', state: 'created' },
      });
      const name = (created.data as { name: string }).name;
      expect(await a.request('create', { job_id: '62' })).toMatchObject({
        status: 'error',
        data: null,
        error: {
          code: 409,
          detail: `Active checkpoint '${name}' already exists for runner 'ws-2'`,
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

      const b = await agent({ runnerId: 'ws-1', token: 'tok-ws-1' });
      expect(await b.request('status', { checkpoint_name: name })).toMatchObject({
        error: { code: 403, detail: 'Token not authorized for this checkpoint' },
      });
      expect(await b.request('status', {})).toMatchObject({ error: { code: 422 } });
      b.close();
      a.close();
      await Promise.all([a.closed, b.closed]);
    });
  });

  it('runs reset_cmd on the agent, connected to another API instance than the REST calls, and logs its output', async () => {
    const a = await agent(
      {
        runnerId: 'ws-1',
        token: 'tok-ws-1',
        onExec: (cmd) => ({ exit_code: 0, stdout: `reset done by ${cmd}\n`, stderr: '' }),
      },
      () => other,
    );
    await waitFor('the agent session', () => bus.isConnected('ws-1'));
    const rest = restClient(() => c.api.url, 'tok-ws-1');
    const name = (await rest.create('ws-1', '71')).body.name as string;
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
    const first = await agent({ runnerId: 'ws-1', token: 'tok-ws-1' });
    await waitFor('the first session', () => bus.isConnected('ws-1'));
    const second = await agent(
      {
        runnerId: 'ws-1',
        token: 'tok-ws-1',
        onExec: () => ({ exit_code: 0, stdout: 'second', stderr: '' }),
      },
      () => other,
    );
    expect(await first.closed).toEqual({ code: 4000, reason: 'Replaced by a newer connection' });
    const rows = await c.ds.query(
      `SELECT instance_id FROM agent_sessions WHERE runner_id = 'ws-1'`,
    );
    expect(rows).toEqual([{ instance_id: other.hub.instanceId }]);
    expect(await bus.exec('ws-1', 'echo hi', 5)).toEqual({
      exitCode: 0,
      stdout: 'second',
      stderr: '',
    });
    second.close();
    await second.closed;
    await waitFor('the session to be removed', async () => !(await bus.isConnected('ws-1')));
  });

  it('an agent restarted in the middle of a reset: the command runs again after it reconnects and the reset completes', async () => {
    const rest = restClient(() => c.api.url, 'tok-ws-1');
    let restarted: RawAgent | undefined;
    const dying: RawAgent = await agent({
      runnerId: 'ws-1',
      token: 'tok-ws-1',
      // The agent "restarts" while the reset command runs: it drops the connection without replying.
      onExec: () => {
        dying.ws.terminate();
        setTimeout(() => {
          void agent({
            runnerId: 'ws-1',
            token: 'tok-ws-1',
            onExec: (cmd) => ({ exit_code: 0, stdout: `ran ${cmd} again`, stderr: '' }),
          }).then((a) => (restarted = a));
        }, 300);
        return null;
      },
    });
    await waitFor('the session', () => bus.isConnected('ws-1'));
    const name = (await rest.create('ws-1', '81')).body.name as string;
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
    const a = await agent({ runnerId: 'ws-2', token: 'tok-ws-2', autoPong: false });
    await waitFor('the session', () => bus.isConnected('ws-2'));
    const closed = await a.closed;
    expect(closed.code).toBe(1006); // terminated by the server
    await waitFor('not connected', async () => !(await bus.isConnected('ws-2')));
    await expect(bus.exec('ws-2', 'true', 5)).rejects.toMatchObject({ type: 'AgentNotConnected' });
  });
});
