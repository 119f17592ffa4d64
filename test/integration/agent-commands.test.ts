import pino from 'pino';
import { AgentBus, MAX_RESENDS } from '../../activities/agent-bus';
import { databaseUrlOf } from '../../api/server';
import { applicationFailureOf, failureTypeOf } from '../../common/fail';
import { createDataSource } from '../../store/data-source';
import { lateAgentGateway, startTestController, type TestController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, uniqueId, type TestRunner } from '../helpers/env';
import { connectRawAgent, type RawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';

// An agent command must not outlive its activity. One runner per test.
const R = testRunners(['stale', 'flaky', 'cancel', 'deadline']);
const silent = pino({ level: 'silent' });

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

describe('agent commands do not outlive their activity', () => {
  let c: TestController;
  let bus: AgentBus;
  const closers: Array<() => Promise<unknown> | unknown> = [];
  const open: RawAgent[] = [];

  /** A hand-driven agent for `r` that records the commands it is sent. */
  const agent = async (r: TestRunner, onExec: (cmd: string) => boolean) => {
    const a = await connectRawAgent(c.api.url, {
      runnerId: r.id,
      token: r.token,
      onExec: (cmd) => (onExec(cmd) ? { exit_code: 0, stdout: cmd, stderr: '' } : null),
    });
    open.push(a);
    return a;
  };
  const row = async (id: string) =>
    (
      (await c.ds.query(`SELECT state, error FROM agent_commands WHERE id = $1`, [id])) as Array<{
        state: string;
        error: string | null;
      }>
    )[0];
  /** A bus of the test's own (its waits), closed after the suite. */
  const ownBus = (connectWaitSeconds: number, ds = c.ds) => {
    const b = new AgentBus(ds, databaseUrlOf(c.ds), {
      staleAfterSeconds: 1.5,
      connectWaitSeconds,
      pollMs: 100,
      log: silent,
    });
    closers.push(() => b.close());
    return b;
  };

  beforeAll(async () => {
    const lazyBus = lateAgentGateway();
    c = await startTestController({
      inventory: `runners:\n${Object.values(R)
        .map((r) => bareMetalRunnerYaml(r))
        .join('')}`,
      agents: lazyBus,
      env: { E2EPOOL_WS_HEARTBEAT_INTERVAL: '0.2', E2EPOOL_WS_HEARTBEAT_TIMEOUT: '1.5' },
    });
    bus = ownBus(3);
    lazyBus.use(bus);
  });
  afterAll(async () => {
    for (const a of open) a.ws.terminate();
    for (const close of closers) await close();
    await c?.stop();
  });

  it('never sends a command whose activity gave up (its worker died) to an agent that connects later', async () => {
    const r = R.stale;
    const id = uniqueId('stale');
    // A worker of its own that dies while it waits (1s) for the runner's agent.
    const ds = createDataSource({ url: databaseUrlOf(c.ds), poolSize: 1 });
    await ds.initialize();
    const dying = ownBus(1, ds);
    const lost = dying.exec(r.id, 'echo stale', 5, { commandId: id }).catch((e: unknown) => e);
    await waitFor('the command to be queued', async () => (await row(id))?.state === 'pending');
    await ds.destroy();
    await dying.close();
    expect(await within(5000, 'the dead worker to stop', lost)).toBeInstanceOf(Error);
    // Its activity gave up long ago: the row is past the worker's wait (with a margin).
    await waitFor('the wait to be over', async () => {
      const [{ past }] = (await c.ds.query(
        `SELECT now() > created_at + interval '1.5 seconds' AS past FROM agent_commands WHERE id = $1`,
        [id],
      )) as Array<{ past: boolean }>;
      return past;
    });

    const seen: string[] = [];
    await agent(r, (cmd) => (seen.push(cmd), true));
    // A later job's command runs; the stale one (queued first, so claimed first) never does.
    expect(await within(10_000, 'a later command', bus.exec(r.id, 'echo later', 5))).toEqual({
      exitCode: 0,
      stdout: 'echo later',
      stderr: '',
    });
    expect(seen).toEqual(['echo later']);
    expect(await row(id)).toEqual({ state: 'failed', error: expect.stringContaining('expired') });
  });

  it('gives up after a bounded number of re-sends when the agent dies on every command', async () => {
    const r = R.flaky;
    let sends = 0;
    const exec = bus.exec(r.id, 'echo boom', 5).then(
      (v) => v,
      (e: unknown) => e,
    );
    // The agent "crashes" on each command and comes back, a few times more than the bus may re-send.
    const cap = 1 + MAX_RESENDS + 2;
    for (;;) {
      const current: { a?: RawAgent } = {};
      current.a = await agent(r, () => {
        sends++;
        current.a?.ws.terminate();
        return false;
      });
      // Either this connection dies on the command, or the bus gave up and sends nothing more.
      const ended = await Promise.race([current.a.closed.then(() => false), exec.then(() => true)]);
      if (ended || sends >= cap) break;
      // The next connection only once this one's session is gone (as a restarted agent would).
      await waitFor('the session to end', async () => !(await bus.isConnected(r.id)));
    }
    const err = await within(15_000, 'exec to give up', exec);
    expect(failureTypeOf(err)).toBe('AgentNotConnected');
    expect(applicationFailureOf(err)?.message).toContain(`lost ${1 + MAX_RESENDS} times`);
    expect(sends).toBe(1 + MAX_RESENDS);
  });

  it('withdraws its pending command and stops waiting when the activity is cancelled', async () => {
    const r = R.cancel;
    const id = uniqueId('cancel');
    const ac = new AbortController();
    // It would wait a long time for the agent: only the cancellation ends it early.
    const p = ownBus(30)
      .exec(r.id, 'echo never', 5, { commandId: id, signal: ac.signal })
      .catch((e: unknown) => e);
    await waitFor('the command to be queued', async () => (await row(id))?.state === 'pending');
    ac.abort();
    expect(failureTypeOf(await within(3000, 'exec to stop', p))).toBe('Cancelled');
    expect(await row(id)).toBeUndefined();
  });

  it('withdraws its pending command and stops waiting when the activity deadline passes', async () => {
    const r = R.deadline;
    const id = uniqueId('deadline');
    const p = ownBus(30)
      .exec(r.id, 'echo never', 5, { commandId: id, deadline: Date.now() + 1000 })
      .catch((e: unknown) => e);
    expect(failureTypeOf(await within(4000, 'exec to stop', p))).toBe('AgentTimeout');
    expect(await row(id)).toBeUndefined();
    // An agent connecting afterwards runs only what is asked of it now.
    const seen: string[] = [];
    await agent(r, (cmd) => (seen.push(cmd), true));
    await within(10_000, 'a later command', bus.exec(r.id, 'echo later', 5));
    expect(seen).toEqual(['echo later']);
  });
});
