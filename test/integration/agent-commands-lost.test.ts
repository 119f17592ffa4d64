import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { databaseUrlOf } from '../../api/server';
import { createStore } from '../../store';
import { restClient, startAgentController, type AgentController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, uniqueId, type TestRunner } from '../helpers/env';
import { connectRawAgent, type RawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';

/**
 * A reply to an exec is taken only from the connection the command was sent
 * on: a command sent on a connection that is gone (its API instance crashed
 * and never failed it) is re-sent on the agent's new connection within
 * seconds, not after the command's timeout; a late reply from the old
 * connection never overwrites the new attempt. Plus a reply holding NULs,
 * which Postgres text refuses, is stored.
 */
const R = testRunners(['orphan', 'unwatched', 'late', 'nul', 'nulLog']);
/** Long enough that waiting for it (plus the bus's margin) fails the test's bounds. */
const TIMEOUT_S = 40;

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

describe('agent commands lost with their connection', () => {
  let c: AgentController;
  const open: RawAgent[] = [];

  const row = async (id: string) =>
    (
      (await c.ds.query(
        `SELECT state, session_id AS "sessionId", stdout, stderr, error FROM agent_commands WHERE id = $1`,
        [id],
      )) as Array<{
        state: string;
        sessionId: string | null;
        stdout: string | null;
        stderr: string | null;
        error: string | null;
      }>
    )[0];

  /**
   * What a crashed API instance leaves behind: the runner's session, still
   * open and seen moments ago, and a command it sent on it and never failed.
   */
  const crashedInstance = async (r: TestRunner, id: string, cmd: string) => {
    const sessionId = randomUUID();
    const instanceId = uniqueId('dead-instance');
    await c.ds.query(
      `INSERT INTO agent_sessions (runner_id, session_id, instance_id, connected_at, last_seen_at)
       VALUES ($1, $2, $3, now(), now())`,
      [r.id, sessionId, instanceId],
    );
    await c.ds.query(
      `INSERT INTO agent_commands (id, runner_id, cmd, timeout_seconds, state, claimed_by, session_id, expires_at)
       VALUES ($1, $2, $3, $4, 'sent', 'dead-instance', $5, now() + interval '1 minute')`,
      [id, r.id, cmd, TIMEOUT_S, sessionId],
    );
    return { sessionId, instanceId };
  };

  /**
   * Resolves once a worker asks `instanceId` to send a command: the bus then
   * waits for its result. The agent connects only after that, the order in
   * which the command looked in flight on the dead instance's session.
   */
  const busAsks = async (instanceId: string) => {
    const client = new Client({ connectionString: databaseUrlOf(c.ds) });
    await client.connect();
    const asked = new Promise<void>((resolve) =>
      client.on('notification', (n) => n.payload === instanceId && resolve()),
    );
    await client.query('LISTEN e2epool_agent_commands');
    return { asked: asked.finally(() => client.end()) };
  };

  /** A hand-driven agent for `r`: `answer` decides each exec's reply (null: none). */
  const agent = async (
    r: TestRunner,
    answer: (cmd: string) => { exit_code: number; stdout: string; stderr: string } | null,
  ) => {
    const a = await connectRawAgent(c.api.url, { runnerId: r.id, token: r.token, onExec: answer });
    open.push(a);
    return a;
  };

  beforeAll(async () => {
    c = await startAgentController({
      inventory: `runners:\n${Object.values(R)
        .map((r) => bareMetalRunnerYaml(r))
        .join('')}`,
      bus: { connectWaitSeconds: 20 },
    });
  });
  afterAll(async () => {
    for (const a of open) a.ws.terminate();
    await c?.stop();
  });

  it('re-sends a command sent on a crashed instance once the agent reconnects, within seconds', async () => {
    const r = R.orphan;
    const id = uniqueId('orphan');
    const dead = await crashedInstance(r, id, '/opt/reset.sh');
    const { asked } = await busAsks(dead.instanceId);
    // The retried activity attempt: the row says sent, on a session that still looks open.
    const exec = c.bus.exec(r.id, '/opt/reset.sh', TIMEOUT_S, { commandId: id });
    await within(10_000, 'the bus to ask the dead instance', asked);
    const seen: string[] = [];
    await agent(r, (cmd) => (seen.push(cmd), { exit_code: 0, stdout: 'reset', stderr: '' }));
    expect(await within(15_000, 'the re-sent command', exec)).toEqual({
      exitCode: 0,
      stdout: 'reset',
      stderr: '',
    });
    expect(seen).toEqual(['/opt/reset.sh']);
    const after = await row(id);
    expect(after).toMatchObject({ state: 'done', stdout: 'reset' });
    expect(after.sessionId).not.toBe(dead.sessionId);
  });

  it('the instance the agent registers on fails the lost command itself, with no worker waiting', async () => {
    const r = R.unwatched;
    const id = uniqueId('unwatched');
    await crashedInstance(r, id, '/opt/reset.sh');
    await agent(r, () => ({ exit_code: 0, stdout: '', stderr: '' }));
    await waitFor('the lost command failed', async () => (await row(id)).state === 'failed', {
      timeoutMs: 10_000,
    });
    expect((await row(id)).error).toContain('lost');
  });

  it('a late reply from the replaced connection never overwrites the new attempt', async () => {
    const r = R.late;
    const id = uniqueId('late');
    const dead = await crashedInstance(r, id, '/opt/reset.sh');
    const { asked } = await busAsks(dead.instanceId);
    const exec = c.bus.exec(r.id, '/opt/reset.sh', TIMEOUT_S, { commandId: id });
    await within(10_000, 'the bus to ask the dead instance', asked);
    const a = await agent(r, () => null); // holds its reply
    await waitFor('the command re-sent on the new connection', async () => {
      const now = await row(id);
      return now.state === 'sent' && now.sessionId !== dead.sessionId;
    });
    // The old connection's instance records its reply late: refused (compare-and-set on the session).
    await createStore(c.ds).commands.finish(id, dead.sessionId, {
      state: 'done',
      exitCode: 0,
      stdout: 'late, from the old connection',
      stderr: '',
    });
    expect(await row(id)).toMatchObject({ state: 'sent', stdout: null });

    const sent = a.messages.find((m) => (m as { type?: string }).type === 'exec') as { id: string };
    a.ws.send(
      JSON.stringify({
        id: sent.id,
        status: 'ok',
        data: { exit_code: 0, stdout: 'new', stderr: '' },
      }),
    );
    expect(await within(10_000, 'the reply', exec)).toEqual({
      exitCode: 0,
      stdout: 'new',
      stderr: '',
    });
  });

  it('stores a reply whose output holds NULs (replaced), at once', async () => {
    const r = R.nul;
    await agent(r, () => ({ exit_code: 0, stdout: 'a\u0000b\n', stderr: '\u0000' }));
    const id = uniqueId('nul');
    const res = await within(
      10_000,
      'the reply',
      c.bus.exec(r.id, 'printf', TIMEOUT_S, { commandId: id }),
    );
    expect(res).toEqual({ exitCode: 0, stdout: 'a\uFFFDb\n', stderr: '\uFFFD' });
    expect(await row(id)).toMatchObject({ state: 'done', stdout: 'a\uFFFDb\n' });
  });

  it('stores streamed output and a reply holding NULs in the checkpoint log (replaced)', async () => {
    const r = R.nulLog;
    const created = await restClient(() => c.api.url, r.token).create(r.id, '4242');
    expect(created.status).toBe(201);
    const [{ id: checkpointId }] = (await c.ds.query(`SELECT id FROM checkpoints WHERE name = $1`, [
      created.body.name,
    ])) as Array<{ id: number }>;
    const a = await agent(r, () => null);
    const exec = c.bus.exec(r.id, 'printf', TIMEOUT_S, {
      commandId: uniqueId('nul-log'),
      checkpointId,
    });
    const sent = await waitFor('the exec', () =>
      a.messages.find((m) => (m as { type?: string }).type === 'exec'),
    );
    const wsId = (sent as { id: string }).id;
    a.ws.send(
      JSON.stringify({
        id: wsId,
        type: 'exec_output',
        payload: { stream: 'stdout', seq: 1, data: 'x\u0000y\n' },
      }),
    );
    a.ws.send(
      JSON.stringify({
        id: wsId,
        status: 'ok',
        data: { exit_code: 0, stdout: 'x\u0000y\n', stderr: '' },
      }),
    );
    expect(await within(10_000, 'the reply', exec)).toMatchObject({ stdout: 'x\uFFFDy\n' });
    const lines = (await c.ds.query(
      `SELECT text FROM checkpoint_logs WHERE checkpoint_id = $1 AND kind = 'stdout' ORDER BY seq`,
      [checkpointId],
    )) as Array<{ text: string }>;
    expect(lines.map((l) => l.text)).toEqual(['x\uFFFDy']);
  });
});
