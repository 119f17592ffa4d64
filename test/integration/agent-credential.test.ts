import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { databaseUrlOf } from '../../api/server';
import { spawnAgent, stopProcess } from '../helpers/agent-process';
import {
  operations,
  restClient,
  startAgentController,
  type AgentController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, controllerEnv, testRunners, writeInventory } from '../helpers/env';
import { exposedNames, scrape, sumOf } from '../helpers/metrics';
import { startCli } from '../helpers/processes';
import { connectRawAgent, type RawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';

const ADMIN = `admin-${randomBytes(24).toString('hex')}`;
/** Inventory runners: one with an agent token of its own, one with the old single token. */
const FILE = testRunners(['guarded', 'shared']);
const GUARDED_AGENT_TOKEN = `agent-${randomBytes(16).toString('hex')}`;
/** Registry runners, one per test. */
const R = testRunners(['created', 'rotated', 'legacy']);

async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

const REFUSED = { code: 4401, reason: 'Invalid credentials' };

/**
 * The agent credential: a CI job on a bare-metal runner holds the runner's
 * REST token; with an agent token configured, that token can no longer open
 * /ws/agent, replace the agent, and answer the reset's exec itself.
 */
describe('agent credential (agent_token)', () => {
  let dir: string;
  let c: AgentController;
  const agents: ChildProcess[] = [];
  const raws: RawAgent[] = [];
  const admin = () => restClient(() => c.api.url, ADMIN).call;
  const marker = join(tmpdir(), `e2epool-cred-${randomBytes(6).toString('hex')}`);

  /** A job-side WebSocket client that answers every exec with success without running it. */
  const impostor = async (runnerId: string, token: string, mode: 'query' | 'header' = 'query') => {
    const ws = await connectRawAgent(c.api.url, {
      runnerId,
      token,
      mode,
      onExec: () => ({ exit_code: 0, stdout: 'pretend reset', stderr: '' }),
    });
    raws.push(ws);
    return ws;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-cred-'));
    chmodSync(dir, 0o755);
    c = await startAgentController({
      inventory:
        'runners:\n' +
        bareMetalRunnerYaml(FILE.guarded, {
          agent_token: GUARDED_AGENT_TOKEN,
          reset_cmd: `"sh -c 'echo reset-by-agent >> ${marker}; echo agent-ran-it'"`,
        }) +
        bareMetalRunnerYaml(FILE.shared),
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_WS_HEARTBEAT_INTERVAL: '1',
        E2EPOOL_WS_HEARTBEAT_TIMEOUT: '5',
      },
      bus: { staleAfterSeconds: 5, connectWaitSeconds: 20 },
    });
  });
  afterAll(async () => {
    for (const ws of raws) ws.ws.terminate();
    for (const a of agents) await stopProcess(a);
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
    rmSync(marker, { force: true });
  });

  it('a job holding only the REST token cannot answer the reset: its socket gets 4401, the real agent runs reset_cmd', async () => {
    const r = FILE.guarded;
    const agent = spawnAgent(dir, c.api.url, r, { agentToken: GUARDED_AGENT_TOKEN });
    agents.push(agent.child);
    await waitFor('the real agent connected', () => c.bus.isConnected(r.id), {
      timeoutMs: 20_000,
    });

    const job = restClient(() => c.api.url, r.token);
    const created = await job.create(r.id, 'job-1');
    expect(created.status).toBe(201);
    const name = created.body.name as string;

    // The job tries both ways of presenting the token, before and while the reset runs.
    const viaQuery = await impostor(r.id, r.token, 'query');
    const viaHeader = await impostor(r.id, r.token, 'header');
    expect(await within(5000, 'the query impostor refused', viaQuery.closed)).toEqual(REFUSED);
    expect(await within(5000, 'the header impostor refused', viaHeader.closed)).toEqual(REFUSED);

    expect((await job.finalize(name, 'failure')).status).toBe(202);
    const late = await impostor(r.id, r.token);
    expect(await within(5000, 'the late impostor refused', late.closed)).toEqual(REFUSED);
    await waitFor('the reset', async () => (await job.status(name)).body.state === 'reset', {
      timeoutMs: 30_000,
      intervalMs: 250,
    });

    // No impostor ever saw an exec; the verdict is the real agent's.
    for (const ws of [viaQuery, viaHeader, late]) expect(ws.messages).toEqual([]);
    expect(readFileSync(marker, 'utf8')).toBe('reset-by-agent\n');
    const row = (await operations(c.ds, name)).find((o) => o.operation === 'reset_cmd');
    expect(row).toMatchObject({ result: 'ok', detail: expect.stringContaining('agent-ran-it') });
    // The agent kept its session throughout, and never logged either token.
    expect(await c.bus.isConnected(r.id)).toBe(true);
    expect(agent.output()).not.toContain(GUARDED_AGENT_TOKEN);
    expect(agent.output()).not.toContain(r.token);
  });

  it('a runner without an agent token keeps the old single-token behaviour', async () => {
    const ws = await connectRawAgent(c.api.url, {
      runnerId: FILE.shared.id,
      token: FILE.shared.token,
    });
    raws.push(ws);
    expect(await ws.request('ping', {})).toMatchObject({ status: 'ok', data: { pong: true } });
    ws.close();
    await ws.closed;
  });

  it('registry: create returns agent_token once, GET never shows it, the REST token gets 4401 on /ws/agent', async () => {
    const created = await admin()('POST', '/api/runners', {
      runner_id: R.created.id,
      backend: 'bare_metal',
      reset_cmd: '/opt/reset.sh',
      agent_token: 'ignored-from-the-body',
    });
    expect(created.status).toBe(201);
    const { token, agent_token: agentToken } = created.body as {
      token: string;
      agent_token: string;
    };
    expect(agentToken).toMatch(/^[\w-]{43}$/);
    expect(agentToken).not.toBe(token);
    expect(created.body).toMatchObject({ has_agent_token: true });

    const got = await admin()('GET', `/api/runners/${R.created.id}`);
    expect(got.body).toMatchObject({ has_agent_token: true });
    const list = await admin()('GET', '/api/runners');
    for (const body of [got.body, list.body]) {
      expect(JSON.stringify(body)).not.toContain(agentToken);
      expect(JSON.stringify(body)).not.toMatch(/"agent_token"|"token"/);
    }
    // The inventory runners show which of them still share one credential.
    const byId = new Map(
      (list.body as Array<{ runner_id: string; has_agent_token: boolean }>).map((r) => [
        r.runner_id,
        r.has_agent_token,
      ]),
    );
    expect(byId.get(FILE.guarded.id)).toBe(true);
    expect(byId.get(FILE.shared.id)).toBe(false);

    const rest = await impostor(R.created.id, token);
    expect(await within(5000, 'the REST token refused', rest.closed)).toEqual(REFUSED);
    const ws = await connectRawAgent(c.api.url, { runnerId: R.created.id, token: agentToken });
    raws.push(ws);
    expect(await ws.request('ping', {})).toMatchObject({ status: 'ok' });
    // The agent token is not a REST credential.
    expect(
      (await restClient(() => c.api.url, agentToken).call('GET', '/runner/readiness')).status,
    ).toBe(403);
    ws.close();
    await ws.closed;
  });

  it('rotate-agent-token: a new one returned once, the old one refused, its live socket closed 4401; audited', async () => {
    const created = await admin()('POST', '/api/runners', {
      runner_id: R.rotated.id,
      backend: 'bare_metal',
      reset_cmd: '/opt/reset.sh',
    });
    const oldAgentToken = created.body.agent_token as string;
    const live = await connectRawAgent(c.api.url, {
      runnerId: R.rotated.id,
      token: oldAgentToken,
    });
    raws.push(live);
    expect(await live.request('ping', {})).toMatchObject({ status: 'ok' });

    const rotated = await admin()('POST', `/api/runners/${R.rotated.id}/rotate-agent-token`);
    expect(rotated.status).toBe(200);
    const newAgentToken = rotated.body.agent_token as string;
    expect(newAgentToken).toMatch(/^[\w-]{43}$/);
    expect(newAgentToken).not.toBe(oldAgentToken);
    expect(rotated.body).toMatchObject({ runner_id: R.rotated.id, has_agent_token: true });
    expect(rotated.body).not.toHaveProperty('token');
    expect(await within(5000, 'the live socket closed', live.closed)).toEqual(REFUSED);

    const old = await impostor(R.rotated.id, oldAgentToken);
    expect(await within(5000, 'the old agent token refused', old.closed)).toEqual(REFUSED);
    const again = await connectRawAgent(c.api.url, {
      runnerId: R.rotated.id,
      token: newAgentToken,
    });
    raws.push(again);
    expect(await again.request('ping', {})).toMatchObject({ status: 'ok' });
    again.close();
    await again.closed;
    expect((await admin()('GET', `/api/runners/${R.rotated.id}`)).body).not.toHaveProperty(
      'agent_token',
    );

    const audit = (await c.ds.query(
      `SELECT action, detail FROM admin_audit WHERE runner_id = $1 ORDER BY id`,
      [R.rotated.id],
    )) as Array<{ action: string; detail: unknown }>;
    expect(audit.map((a) => a.action)).toEqual(['create', 'rotate-agent-token']);
    expect(JSON.stringify(audit)).not.toContain(newAgentToken);

    expect(await admin()('POST', '/api/runners/nope-no-such-runner/rotate-agent-token')).toEqual({
      status: 404,
      body: { detail: 'Runner not found' },
    });
    expect(await admin()('POST', `/api/runners/${FILE.guarded.id}/rotate-agent-token`)).toEqual({
      status: 409,
      body: { detail: `Runner '${FILE.guarded.id}' is defined in the inventory file` },
    });
    expect(
      (
        await restClient(() => c.api.url, 'x'.repeat(40)).call(
          'POST',
          `/api/runners/${R.rotated.id}/rotate-agent-token`,
        )
      ).status,
    ).toBe(403);
  });

  it('a runner that had none (a migrated one) gets its first agent token by rotation: the REST-token socket is closed 4401', async () => {
    const created = await admin()('POST', '/api/runners', {
      runner_id: R.legacy.id,
      backend: 'bare_metal',
      reset_cmd: '/opt/reset.sh',
    });
    const token = created.body.token as string;
    // As a runner created before agent tokens existed: no agent token stored.
    await c.ds.query(`UPDATE runners SET agent_token_hash = NULL WHERE runner_id = $1`, [
      R.legacy.id,
    ]);
    await c.inventory.refreshRegistry();
    expect((await admin()('GET', `/api/runners/${R.legacy.id}`)).body).toMatchObject({
      has_agent_token: false,
    });
    const old = await connectRawAgent(c.api.url, { runnerId: R.legacy.id, token });
    raws.push(old);
    expect(await old.request('ping', {})).toMatchObject({ status: 'ok' });
    const metrics = await scrape(`${c.api.url}/metrics`);
    expect(exposedNames(metrics)).toContain('e2epool_runners_shared_credential');
    // The file's `shared` runner, and this one.
    expect(sumOf(metrics, 'e2epool_runners_shared_credential')).toBe(2);

    const rotated = await admin()('POST', `/api/runners/${R.legacy.id}/rotate-agent-token`);
    expect(rotated.status).toBe(200);
    expect(await within(5000, 'the REST-token socket closed', old.closed)).toEqual(REFUSED);
    const after = await scrape(`${c.api.url}/metrics`);
    expect(sumOf(after, 'e2epool_runners_shared_credential')).toBe(1);
  });

  it('the API warns at startup about runners that share one credential, naming them', async () => {
    const inventory = writeInventory(
      'runners:\n' +
        bareMetalRunnerYaml(FILE.guarded, { agent_token: GUARDED_AGENT_TOKEN }) +
        bareMetalRunnerYaml(FILE.shared),
    );
    const api = startCli(
      ['api'],
      controllerEnv({
        E2EPOOL_DATABASE_URL: databaseUrlOf(c.ds),
        E2EPOOL_INVENTORY_PATH: inventory,
        E2EPOOL_TASK_QUEUE: c.taskQueue,
        E2EPOOL_PORT: '0',
        E2EPOOL_HOST: '127.0.0.1',
      }),
    );
    try {
      await api.waitForOutput(/share one credential/, 60_000);
      const line = (api.stdout() + api.stderr())
        .split('\n')
        .find((l) => l.includes('share one credential'))!;
      const entry = JSON.parse(line) as {
        level: number;
        sharedCredentialRunners: number;
        runnerIds: string[];
      };
      expect(entry.level).toBe(40);
      expect(entry.runnerIds).toContain(FILE.shared.id);
      expect(entry.runnerIds).not.toContain(FILE.guarded.id);
      expect(entry.sharedCredentialRunners).toBe(entry.runnerIds.length);
      expect(api.stdout() + api.stderr()).not.toContain(GUARDED_AGENT_TOKEN);
    } finally {
      await api.stop();
    }
  });
});
