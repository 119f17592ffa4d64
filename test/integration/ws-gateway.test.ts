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
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
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
]);
/** Runners whose reset runs `/opt/reset.sh --all` (the rest: `/opt/reset.sh`). */
const RESET_ALL: TestRunner[] = [R.reset, R.restart];
const INVENTORY = `runners:\n${Object.values(R)
  .map((r) =>
    bareMetalRunnerYaml(r, {
      reset_cmd: RESET_ALL.includes(r) ? '/opt/reset.sh --all' : '/opt/reset.sh',
    }),
  )
  .join('')}`;

describe('agent WebSocket gateway (/ws/agent: auth, envelopes, exec, heartbeat)', () => {
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
});
