import { FakeAgents } from '../helpers/fake-agents';
import { startTestController, type TestController } from '../helpers/controller';
import { connectRawAgent } from '../helpers/raw-agent';
import { prng } from '../helpers/prng';
import { bareMetalInventory, testRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';

const SEED = Number(process.env.FUZZ_SEED ?? 20261122);
const CASES = 3000;

/**
 * Bounded fuzzing of the agent gateway: thousands of random and mutated frames
 * on one connection. Every frame without a top-level `status` gets exactly one
 * reply envelope with all four keys; the connection and the server survive.
 */
describe('agent gateway fuzzing', () => {
  let c: TestController;
  const r = testRunner('fz');
  beforeAll(async () => {
    c = await startTestController({
      inventory: bareMetalInventory(r),
      agents: new FakeAgents(),
    });
  });
  afterAll(async () => c?.stop());

  it(`survives ${CASES} random frames (seed ${SEED}) without a crash or a leak`, async () => {
    const rnd = prng(SEED);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const str = (n: number) =>
      Array.from({ length: Math.floor(rnd() * n) }, () =>
        String.fromCharCode(Math.floor(rnd() * 0x2fff)),
      ).join('');
    const values = (): unknown =>
      pick([
        null,
        true,
        0,
        -1,
        1e308,
        'x',
        str(20),
        [],
        {},
        [1, 'a'],
        { job_id: str(10) },
        'job-1-1700000000-abcdef01',
      ]);
    const frame = (): string => {
      switch (pick(['garbage', 'truncated', 'envelope', 'envelope', 'envelope'])) {
        case 'garbage':
          return str(200);
        case 'truncated':
          return JSON.stringify({ id: 'a', type: 'ping', payload: {} }).slice(
            0,
            1 + Math.floor(rnd() * 30),
          );
        default: {
          const obj: Record<string, unknown> = {};
          if (rnd() < 0.9) obj.id = rnd() < 0.8 ? `f${Math.floor(rnd() * 1e6)}` : values();
          // (These payloads are never a valid exec_output's, so every exec_output is answered too.)
          if (rnd() < 0.9)
            obj.type =
              rnd() < 0.7
                ? pick(['create', 'finalize', 'status', 'ping', 'exec', 'exec_output', 'PING', ''])
                : values();
          if (rnd() < 0.8)
            obj.payload =
              rnd() < 0.6
                ? {
                    job_id: values(),
                    checkpoint_name: values(),
                    status: values(),
                    source: values(),
                  }
                : values();
          if (rnd() < 0.05) obj.status = values(); // looks like an exec reply: no answer expected
          return rnd() < 0.1 ? JSON.stringify([obj]) : JSON.stringify(obj);
        }
      }
    };

    const connections = () =>
      new Promise<number>((resolve, reject) =>
        c.api.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
      );
    const baseline = await connections();
    const agent = await connectRawAgent(c.api.url, { runnerId: r.id, token: r.token });
    let expected = 0;
    for (let i = 0; i < CASES; i++) {
      const f = frame();
      let parsed: unknown;
      try {
        parsed = JSON.parse(f);
      } catch {
        parsed = undefined;
      }
      const isReply =
        parsed !== null &&
        typeof parsed === 'object' &&
        !Array.isArray(parsed) &&
        'status' in (parsed as object);
      if (!isReply) expected += 1;
      agent.sendRaw(f);
    }
    await waitFor(`${expected} replies`, () => agent.messages.length >= expected, {
      timeoutMs: 60_000,
      intervalMs: 100,
    });
    expect(agent.messages.length).toBe(expected);
    for (const m of agent.messages as Array<Record<string, unknown>>) {
      expect(Object.keys(m).sort()).toEqual(['data', 'error', 'id', 'status']);
      expect(['ok', 'error']).toContain(m.status);
      if (m.status === 'error')
        expect(m.error).toEqual({ code: expect.any(Number), detail: expect.any(String) });
    }
    // Still alive and answering.
    expect(await agent.request('ping', {}, 'last')).toEqual({
      id: 'last',
      status: 'ok',
      data: { pong: true },
      error: null,
    });
    expect(agent.ws.readyState).toBe(agent.ws.OPEN);
    // No leak: one session and one connection while it lasts, none after.
    const sessions = async () =>
      (
        await c.ds.query(
          `SELECT count(*)::int AS n FROM agent_sessions WHERE runner_id = $1 AND closed_at IS NULL`,
          [r.id],
        )
      )[0].n as number;
    const n = await sessions();
    expect(n).toBe(1);
    expect(await connections()).toBe(baseline + 1);
    agent.close();
    await agent.closed;
    await waitFor(
      'the connection to close on the server',
      async () => (await connections()) === baseline,
    );
    await waitFor('the session to close', async () => (await sessions()) === 0);
  }, 120_000);
});
