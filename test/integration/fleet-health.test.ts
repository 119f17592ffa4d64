import pino from 'pino';
import { AgentBus } from '../../activities/agent-bus';
import { randomUUID } from 'node:crypto';
import { databaseUrlOf } from '../../api/server';
import { AgentHub } from '../../gateway/agent-hub';
import { createStore } from '../../store';
import {
  lateAgentGateway,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { connectRawAgent, type RawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';

// One runner (so one agent session row and readiness workflows of its own) per test.
const R = testRunners(['pingsOnly', 'pongs', 'silent', 'neverConnected', 'logged']);
const INVENTORY = `runners:\n${Object.values(R)
  .map((r) => bareMetalRunnerYaml(r))
  .join('')}`;
const TIMEOUT_S = 1.5;

describe('fleet health: agent liveness from what agents send (readiness, metrics)', () => {
  let c: TestController;
  let bus: AgentBus;
  const open: RawAgent[] = [];
  const agent = async (r: TestRunner, o: { autoPong?: boolean } = {}) => {
    const a = await connectRawAgent(c.api.url, { runnerId: r.id, token: r.token, ...o });
    open.push(a);
    return a;
  };
  const session = async (r: TestRunner) => {
    const [row] = (await c.ds.query(
      `SELECT session_id AS "sessionId", connected_at AS "connectedAt", last_seen_at AS "lastSeenAt"
         FROM agent_sessions WHERE runner_id = $1`,
      [r.id],
    )) as Array<{ sessionId: string; connectedAt: Date; lastSeenAt: Date }>;
    return row;
  };
  const readiness = (r: TestRunner) =>
    restClient(() => c.api.url, r.token).call('GET', '/runner/readiness');
  const metrics = async () => (await fetch(`${c.api.url}/metrics`)).text();
  /** The value of a sample of `name` whose labels include `label` (e.g. `runner_id="x"`). */
  const sample = (text: string, name: string, label = ''): number | undefined => {
    const line = text
      .split('\n')
      .find((l) => l.startsWith(`${name}{`) && l.includes(label) && !l.startsWith('#'));
    return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  const connectedMetric = async (r: TestRunner) =>
    sample(await metrics(), 'e2epool_runner_agent_connected', `runner_id="${r.id}"`);

  beforeAll(async () => {
    const lazyBus = lateAgentGateway();
    c = await startTestController({
      inventory: INVENTORY,
      agents: lazyBus,
      env: {
        E2EPOOL_WS_HEARTBEAT_INTERVAL: '0.5',
        E2EPOOL_WS_HEARTBEAT_TIMEOUT: String(TIMEOUT_S),
      },
    });
    // As `e2epool worker` does: the same liveness rule as the API's heartbeat timeout.
    bus = new AgentBus(c.ds, databaseUrlOf(c.ds), {
      staleAfterSeconds: TIMEOUT_S,
      connectWaitSeconds: 1,
      pollMs: 100,
      log: pino({ level: 'silent' }),
    });
    lazyBus.use(bus);
  });
  afterAll(async () => {
    for (const a of open) a.ws.terminate();
    await bus?.close();
    await c?.stop();
  });

  it("last_seen_at advances with the agent's pongs, never with the server's own pings", async () => {
    const silent = await agent(R.pingsOnly, { autoPong: false });
    const answering = await agent(R.pongs);
    await waitFor('two pings to each agent', () => silent.pings >= 2 && answering.pings >= 2);
    const s = await session(R.pingsOnly);
    expect(s).toBeDefined();
    expect(s.lastSeenAt.getTime()).toBe(s.connectedAt.getTime());
    await waitFor('last_seen_at of the answering agent to advance', async () => {
      const row = await session(R.pongs);
      return row && row.lastSeenAt.getTime() > row.connectedAt.getTime();
    });
    expect(await bus.isConnected(R.pongs.id)).toBe(true);
  });

  it('an agent that stops answering is unreachable within the heartbeat timeout (readiness 503, metrics), and recovers when it reconnects', async () => {
    const r = R.silent;
    // Never connected: as before, `agent not connected`; its gauge is 0.
    expect(await readiness(R.neverConnected)).toEqual({
      status: 503,
      body: { runner_id: R.neverConnected.id, ready: false, detail: 'agent not connected' },
    });
    expect(await connectedMetric(R.neverConnected)).toBe(0);

    const a = await agent(r);
    await waitFor('the agent to be connected', () => bus.isConnected(r.id));
    expect(await readiness(r)).toEqual({
      status: 200,
      body: { runner_id: r.id, ready: true, detail: null },
    });
    expect(await connectedMetric(r)).toBe(1);

    // The agent stops answering (as a SIGSTOPped process would).
    a.answerPings(false);
    const stoppedAt = Date.now();
    await waitFor('the gauge to drop to 0', async () => (await connectedMetric(r)) === 0, {
      timeoutMs: 10_000,
      intervalMs: 50,
    });
    // The last pong came at most one interval before it stopped answering; allow for a busy machine.
    expect(Date.now() - stoppedAt).toBeLessThan(TIMEOUT_S * 1000 + 2000);
    expect(await bus.isConnected(r.id)).toBe(false);
    expect(await readiness(r)).toEqual({
      status: 503,
      body: { runner_id: r.id, ready: false, detail: 'agent unreachable' },
    });
    const text = await metrics();
    expect(sample(text, 'e2epool_runner_agent_connected', `runner_id="${r.id}"`)).toBe(0);
    const unreachable = sample(text, 'e2epool_runners_unreachable')!;
    expect(unreachable).toBeGreaterThanOrEqual(1);
    // The server gives up on the silent connection; the runner stays unreachable.
    expect((await a.closed).code).toBe(1006);
    expect((await readiness(r)).body).toMatchObject({ detail: 'agent unreachable' });

    // The agent comes back.
    await agent(r);
    await waitFor('readiness to pass again', async () => (await readiness(r)).status === 200);
    const after = await metrics();
    expect(sample(after, 'e2epool_runner_agent_connected', `runner_id="${r.id}"`)).toBe(1);
    expect(sample(after, 'e2epool_runners_unreachable')).toBe(unreachable - 1);
  });

  it('the instance holding a session logs once when its agent goes unreachable and once when it is back', async () => {
    const lines: Array<{ msg: string; runnerId?: string }> = [];
    const log = pino(
      { level: 'info' },
      { write: (l: string) => void lines.push(JSON.parse(l) as { msg: string }) },
    );
    const store = createStore(c.ds);
    const hub = new AgentHub(store, databaseUrlOf(c.ds), log, TIMEOUT_S);
    await hub.start();
    const r = R.logged;
    const sessionId = randomUUID();
    const about = (msg: string) =>
      lines.filter((l) => l.runnerId === r.id && l.msg.startsWith(msg));
    try {
      // A session of this hub whose agent never answers.
      await store.sessions.register({ runnerId: r.id, sessionId, instanceId: hub.instanceId });
      await waitFor('the unreachable line', () => about('agent unreachable').length > 0, {
        timeoutMs: 10_000,
      });
      expect(about('agent reachable again')).toHaveLength(0);
      // A pong arrives.
      await store.sessions.touch(r.id, sessionId);
      await waitFor('the reachable line', () => about('agent reachable again').length > 0, {
        timeoutMs: 10_000,
      });
      expect(about('agent unreachable')).toHaveLength(1);
      expect(about('agent reachable again')).toHaveLength(1);
    } finally {
      await hub.stop();
      await store.sessions.remove(r.id, sessionId);
    }
  });
});
