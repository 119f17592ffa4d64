import { createHash } from 'node:crypto';
import pino from 'pino';
import { InventoryStore } from '../../config/inventory';
import { SecretBox } from '../../config/secret-box';
import { attachRunnerRegistry } from '../../store/registry-feed';
import { databaseUrlOf, type ApiServer } from '../../api/server';
import { FakeAgents } from '../helpers/fake-agents';
import {
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { createMigratedDatabase } from '../helpers/db';
import { bareMetalRunnerYaml, testRunners, writeInventory } from '../helpers/env';
import { connectRawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';

const ADMIN = 'admin-token-registry-test-0123456789abcdef';
const SECRET = 'a-secret-key-of-the-registry-test';
/** Runners of inventory.yml. */
const FILE = testRunners(['fileRunner']);
/** Ids of registry runners, one or more per test. */
const R = testRunners([
  'created',
  'dup',
  'badBackend',
  'noReset',
  'pveMissing',
  'pve',
  'pveMoved',
  'patched',
  'rotated',
  'deactivated',
  'drained',
  'drainBusy',
  'gone',
  'listA',
  'listB',
  'pveGolden',
  'metalVerify',
]);

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

const bare = (id: string, extra: Record<string, unknown> = {}) => ({
  runner_id: id,
  backend: 'bare_metal',
  reset_cmd: '/opt/reset.sh',
  ...extra,
});
const pve = (id: string) => ({
  runner_id: id,
  backend: 'proxmox',
  proxmox_host: 'pve.example.com',
  proxmox_user: 'e2epool@pve',
  proxmox_token_name: 'ci',
  proxmox_token_value: 'pve-secret-value-123',
  proxmox_node: 'pve1',
  proxmox_vmid: 4242,
});

describe('runner registry (SPEC §8 admin API)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let other: ApiServer;
  const admin = () => restClient(() => c.api.url, ADMIN).call;
  const runner = (token: string) => restClient(() => c.api.url, token);

  beforeAll(async () => {
    for (const r of Object.values(R)) agents.connect(r.id);
    c = await startTestController({
      inventory: `runners:\n${bareMetalRunnerYaml(FILE.fileRunner)}`,
      agents,
      env: { E2EPOOL_ADMIN_TOKEN: ADMIN, E2EPOOL_SECRET_KEY: SECRET },
    });
    other = await c.startAnotherApi();
  });
  afterAll(async () => c?.stop());

  it('refuses callers without the admin token (401, 403)', async () => {
    const noBearer = await restClient(() => c.api.url, '').call('GET', '/api/runners', undefined, {
      authorization: 'Basic x',
    });
    expect(noBearer).toEqual({ status: 401, body: { detail: 'Invalid authorization header' } });
    expect(await restClient(() => c.api.url, 'wrong').call('GET', '/api/runners')).toEqual({
      status: 403,
      body: { detail: 'Invalid admin token' },
    });
  });

  it('creates a runner: 201 with a token shown once, stored as a hash; the token works at once', async () => {
    const res = await admin()('POST', '/api/runners', { ...bare(R.created.id), token: 'ignored' });
    expect(res.status).toBe(201);
    const token = res.body.token as string;
    expect(token).not.toBe('ignored');
    expect(res.body).toMatchObject({
      runner_id: R.created.id,
      backend: 'bare_metal',
      reset_cmd: '/opt/reset.sh',
      tags: [],
      is_active: true,
      draining: false,
      source: 'api',
    });
    expect(res.body).not.toHaveProperty('proxmox_token_value');
    const got = await admin()('GET', `/api/runners/${R.created.id}`);
    expect(got.status).toBe(200);
    expect(got.body).not.toHaveProperty('token');
    const [row] = await c.ds.query(`SELECT token_hash FROM runners WHERE runner_id = $1`, [
      R.created.id,
    ]);
    expect(Buffer.from(row.token_hash)).toEqual(createHash('sha256').update(token).digest());
    const created = await runner(token).create(R.created.id, 'job-1');
    expect(created.status).toBe(201);
    await runner(token).finalize(created.body.name, 'success');
    await runEnded(c, R.created.id);
  });

  it('409 for an id that exists, in the registry or in inventory.yml', async () => {
    expect((await admin()('POST', '/api/runners', bare(R.dup.id))).status).toBe(201);
    for (const id of [R.dup.id, FILE.fileRunner.id]) {
      expect(await admin()('POST', '/api/runners', bare(id))).toEqual({
        status: 409,
        body: { detail: `Runner '${id}' already exists` },
      });
    }
  });

  it("422 with the original's texts", async () => {
    expect(await admin()('POST', '/api/runners', bare(R.badBackend.id, { backend: 'vm' }))).toEqual(
      { status: 422, body: { detail: "Invalid backend 'vm'. Must be 'proxmox' or 'bare_metal'." } },
    );
    expect(
      await admin()('POST', '/api/runners', { runner_id: R.noReset.id, backend: 'bare_metal' }),
    ).toEqual({ status: 422, body: { detail: "bare_metal backend requires 'reset_cmd'." } });
    expect(
      await admin()('POST', '/api/runners', {
        runner_id: R.pveMissing.id,
        backend: 'proxmox',
        proxmox_host: 'pve',
        proxmox_user: 'u@pve',
        proxmox_token_name: 'ci',
        proxmox_node: 'n1',
      }),
    ).toEqual({
      status: 422,
      body: {
        detail: 'proxmox backend is missing required fields: proxmox_token_value, proxmox_vmid',
      },
    });
    const bad = await admin()('POST', '/api/runners', bare('bad id!'));
    expect(bad.status).toBe(422);
    expect(bad.body.detail).toMatch(/^runner_id: /);
  });

  it('stores a Proxmox token value only as ciphertext and never returns it', async () => {
    const res = await admin()('POST', '/api/runners', pve(R.pve.id));
    expect(res.status).toBe(201);
    expect(JSON.stringify(res.body)).not.toContain('pve-secret-value-123');
    const [row] = await c.ds.query(`SELECT proxmox_token_value FROM runners WHERE runner_id = $1`, [
      R.pve.id,
    ]);
    expect(row.proxmox_token_value).toMatch(/^v1:/);
    expect(row.proxmox_token_value).not.toContain('pve-secret-value-123');
    expect(new SecretBox(SECRET).open(row.proxmox_token_value)).toBe('pve-secret-value-123');
    // The worker's inventory has it decrypted.
    await waitFor('the worker to see the runner', () => c.inventory.inventory.get(R.pve.id));
    expect(c.inventory.inventory.get(R.pve.id)).toMatchObject({
      proxmox_token_value: 'pve-secret-value-123',
    });
    const audit: Array<{ detail: unknown }> = await c.ds.query(
      `SELECT detail FROM admin_audit WHERE runner_id = $1`,
      [R.pve.id],
    );
    expect(audit.length).toBeGreaterThan(0);
    expect(JSON.stringify(audit)).not.toContain('pve-secret-value-123');
  });

  it('the reset proof fields round-trip (stored, returned, in the worker inventory); misplaced ones are 422', async () => {
    const golden = {
      ...pve(R.pveGolden.id),
      proxmox_vmid: 4243,
      baseline_snapshot: 'golden-1',
      verify_reset: 'required',
      canary_path: '/srv/e2e/canary',
    };
    const res = await admin()('POST', '/api/runners', golden);
    expect(res.status).toBe(201);
    const fields = {
      baseline_snapshot: 'golden-1',
      verify_reset: 'required',
      canary_path: '/srv/e2e/canary',
    };
    expect(res.body).toMatchObject(fields);
    expect((await admin()('GET', `/api/runners/${R.pveGolden.id}`)).body).toMatchObject(fields);
    await waitFor('the worker to see the runner', () => c.inventory.inventory.get(R.pveGolden.id));
    expect(c.inventory.inventory.get(R.pveGolden.id)).toMatchObject(fields);
    const patched = await admin()('PATCH', `/api/runners/${R.pveGolden.id}`, {
      baseline_snapshot: 'golden-2',
    });
    expect(patched.body).toMatchObject({ baseline_snapshot: 'golden-2', verify_reset: 'required' });
    expect(
      await admin()('PATCH', `/api/runners/${R.pveGolden.id}`, { verify_cmd: '/bin/true' }),
    ).toEqual({
      status: 422,
      body: {
        detail:
          'verify_cmd: only for backend bare_metal (a Proxmox runner proves its reset with the canary (verify_reset, canary_path))',
      },
    });
    expect(
      await admin()(
        'POST',
        '/api/runners',
        bare(R.metalVerify.id, { baseline_snapshot: 'golden' }),
      ),
    ).toEqual({
      status: 422,
      body: {
        detail:
          'baseline_snapshot: only for backend proxmox (a bare-metal runner is reset by its reset_cmd, not to a snapshot)',
      },
    });
    expect(
      (await admin()('POST', '/api/runners', bare(R.metalVerify.id, { verify_reset: 'canary' })))
        .body.detail,
    ).toMatch(/^verify_reset: 'canary' needs the Proxmox guest agent/);
    const metal = await admin()(
      'POST',
      '/api/runners',
      bare(R.metalVerify.id, { verify_cmd: '/opt/clean?' }),
    );
    expect(metal.status).toBe(201);
    expect(metal.body).toMatchObject({ verify_cmd: '/opt/clean?' });
    expect(metal.body).not.toHaveProperty('verify_reset');
  });

  it('PATCH moving a Proxmox runner to another host, user or token name must resend proxmox_token_value (422): the stored one never goes elsewhere', async () => {
    expect((await admin()('POST', '/api/runners', pve(R.pveMoved.id))).status).toBe(201);
    const path = `/api/runners/${R.pveMoved.id}`;
    for (const change of [
      { proxmox_host: 'evil.example.com' },
      { proxmox_user: 'root@pam' },
      { proxmox_token_name: 'other' },
      { proxmox_host: 'evil.example.com', proxmox_node: 'pve2' },
    ]) {
      const res = await admin()('PATCH', path, change);
      expect(res.status).toBe(422);
      expect(res.body.detail).toMatch(
        /^Changing proxmox_(host|user|token_name)(, proxmox_\w+)* requires proxmox_token_value/,
      );
    }
    const stored = async () =>
      (
        await c.ds.query(
          `SELECT proxmox_host, proxmox_token_value FROM runners WHERE runner_id = $1`,
          [R.pveMoved.id],
        )
      )[0] as { proxmox_host: string; proxmox_token_value: string };
    expect((await stored()).proxmox_host).toBe('pve.example.com');
    // The same host again, or another field: no token needed.
    expect((await admin()('PATCH', path, { proxmox_host: 'pve.example.com' })).status).toBe(200);
    expect((await admin()('PATCH', path, { proxmox_node: 'pve2' })).status).toBe(200);
    const moved = await admin()('PATCH', path, {
      proxmox_host: 'pve2.example.com',
      proxmox_token_value: 'the-new-hosts-token',
    });
    expect(moved.status).toBe(200);
    const row = await stored();
    expect(row.proxmox_host).toBe('pve2.example.com');
    expect(new SecretBox(SECRET).open(row.proxmox_token_value)).toBe('the-new-hosts-token');
  });

  it('PATCH changes only the fields sent; 422 on an invalid result; 404 for no such runner', async () => {
    await admin()('POST', '/api/runners', bare(R.patched.id, { cleanup_cmd: '/opt/clean.sh' }));
    const res = await admin()('PATCH', `/api/runners/${R.patched.id}`, { tags: ['gpu'] });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      tags: ['gpu'],
      cleanup_cmd: '/opt/clean.sh',
      reset_cmd: '/opt/reset.sh',
    });
    expect(await admin()('PATCH', `/api/runners/${R.patched.id}`, { reset_cmd: null })).toEqual({
      status: 422,
      body: { detail: "bare_metal backend requires 'reset_cmd'." },
    });
    expect((await admin()('PATCH', `/api/runners/${R.patched.id}`, { colour: 1 })).status).toBe(
      422,
    );
    expect(await admin()('PATCH', `/api/runners/${R.gone.id}`, { tags: [] })).toEqual({
      status: 404,
      body: { detail: 'Runner not found' },
    });
    expect(await admin()('GET', `/api/runners/${R.gone.id}`)).toEqual({
      status: 404,
      body: { detail: 'Runner not found' },
    });
    expect((await admin()('DELETE', `/api/runners/${R.gone.id}`)).status).toBe(404);
    for (const action of ['rotate-token', 'drain', 'undrain'])
      expect((await admin()('POST', `/api/runners/${R.gone.id}/${action}`)).status).toBe(404);
  });

  it('inventory.yml runners are listed with source "inventory" and cannot be changed (409), but drained (runner_state)', async () => {
    const id = FILE.fileRunner.id;
    expect((await admin()('GET', `/api/runners/${id}`)).body).toMatchObject({
      runner_id: id,
      source: 'inventory',
    });
    const refused = {
      status: 409,
      body: { detail: `Runner '${id}' is defined in the inventory file` },
    };
    expect(await admin()('PATCH', `/api/runners/${id}`, { tags: [] })).toEqual(refused);
    expect(await admin()('DELETE', `/api/runners/${id}`)).toEqual(refused);
    expect(await admin()('POST', `/api/runners/${id}/rotate-token`)).toEqual(refused);
    // The file holds no drain: runner_state does (a baseline refresh drains it there too).
    expect(await admin()('POST', `/api/runners/${id}/drain`)).toMatchObject({
      status: 200,
      body: { runner_id: id, source: 'inventory', draining: true },
    });
    expect(await runner(FILE.fileRunner.token).create(id, 'drained-job')).toEqual({
      status: 423,
      body: { detail: `Runner '${id}' is draining` },
    });
    expect(await admin()('POST', `/api/runners/${id}/undrain`)).toMatchObject({
      status: 200,
      body: { source: 'inventory', draining: false },
    });
  });

  it('lists runners ordered by runner_id; inactive ones only with include_inactive=true', async () => {
    await admin()('POST', '/api/runners', bare(R.listA.id));
    await admin()('POST', '/api/runners', bare(R.listB.id));
    await admin()('DELETE', `/api/runners/${R.listB.id}`);
    const active = await admin()('GET', '/api/runners');
    const ids = (active.body as Array<{ runner_id: string }>).map((r) => r.runner_id);
    expect(ids).toEqual([...ids].sort());
    expect(ids).toContain(R.listA.id);
    expect(ids).toContain(FILE.fileRunner.id);
    expect(ids).not.toContain(R.listB.id);
    const all = await admin()('GET', '/api/runners?include_inactive=true');
    const inactive = (all.body as Array<{ runner_id: string; is_active: boolean }>).find(
      (r) => r.runner_id === R.listB.id,
    );
    expect(inactive).toMatchObject({ is_active: false });
    expect(JSON.stringify(all.body)).not.toMatch(/"token"|proxmox_token_value/);
  });

  it('rotating a token stops the old one at once on REST, and within 5 s on WS sockets of another API instance', async () => {
    const created = await admin()('POST', '/api/runners', bare(R.rotated.id));
    const oldToken = created.body.token as string;
    // A runner whose agent shares the REST token (one created before agent tokens existed).
    await c.ds.query(`UPDATE runners SET agent_token_hash = NULL WHERE runner_id = $1`, [
      R.rotated.id,
    ]);
    const ws = await waitFor('the other instance to take the REST token on /ws/agent', async () => {
      const a = await connectRawAgent(other.url, { runnerId: R.rotated.id, token: oldToken });
      const pong = await Promise.race([a.request('ping', {}), a.closed.then(() => null)]);
      if (pong?.status === 'ok') return a;
      a.ws.terminate();
      return undefined;
    });
    const rotated = await admin()('POST', `/api/runners/${R.rotated.id}/rotate-token`);
    expect(rotated.status).toBe(200);
    const newToken = rotated.body.token as string;
    expect(newToken).not.toBe(oldToken);
    // The instance that rotated it refuses the old token at once.
    expect((await runner(oldToken).call('GET', '/runner/readiness')).status).toBe(403);
    expect(await within(5000, 'the old socket closed 4401', ws.closed)).toEqual({
      code: 4401,
      reason: 'Invalid credentials',
    });
    const onOther = restClient(() => other.url, oldToken);
    await waitFor(
      'the other instance to refuse the old token',
      async () => (await onOther.call('GET', '/runner/readiness')).status === 403,
      { timeoutMs: 5000 },
    );
    const again = await connectRawAgent(other.url, { runnerId: R.rotated.id, token: newToken });
    expect(await again.request('ping', {})).toMatchObject({ status: 'ok' });
    again.close();
    await again.closed;
  });

  it('drain: 423 on create, undrain allows it again', async () => {
    const created = await admin()('POST', '/api/runners', bare(R.drained.id));
    const token = created.body.token as string;
    const drained = await admin()('POST', `/api/runners/${R.drained.id}/drain`);
    expect(drained).toMatchObject({ status: 200, body: { draining: true } });
    expect(await runner(token).create(R.drained.id, 'job-1')).toEqual({
      status: 423,
      body: { detail: `Runner '${R.drained.id}' is draining` },
    });
    expect(await admin()('POST', `/api/runners/${R.drained.id}/undrain`)).toMatchObject({
      status: 200,
      body: { draining: false },
    });
    const ok = await runner(token).create(R.drained.id, 'job-2');
    expect(ok.status).toBe(201);
    await runner(token).finalize(ok.body.name, 'success');
    await runEnded(c, R.drained.id);
  });

  it("a draining runner's current checkpoint finishes and resets", async () => {
    const token = (await admin()('POST', '/api/runners', bare(R.drainBusy.id))).body.token;
    const cp = await runner(token).create(R.drainBusy.id, 'job-1');
    expect(cp.status).toBe(201);
    await admin()('POST', `/api/runners/${R.drainBusy.id}/drain`);
    expect((await runner(token).finalize(cp.body.name, 'failure')).status).toBe(202);
    await runEnded(c, R.drainBusy.id);
    expect((await runner(token).status(cp.body.name)).body).toMatchObject({ state: 'reset' });
  });

  it('deactivating: 200, the token stops, the agent is disconnected 4401, the open checkpoint is still reset', async () => {
    const created = (await admin()('POST', '/api/runners', bare(R.deactivated.id))).body as {
      token: string;
      agent_token: string;
    };
    const token = created.token;
    const ws = await connectRawAgent(c.api.url, {
      runnerId: R.deactivated.id,
      token: created.agent_token,
    });
    expect(await ws.request('ping', {})).toMatchObject({ status: 'ok' });
    const cp = await runner(token).create(R.deactivated.id, 'job-1');
    expect(cp.status).toBe(201);
    // The reset waits until the runner is deactivated.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const previous = agents.onExec;
    agents.onExec = async (runnerId, cmd) => {
      if (runnerId === R.deactivated.id) await released;
      return previous(runnerId, cmd);
    };
    try {
      expect((await runner(token).finalize(cp.body.name, 'failure')).status).toBe(202);
      await waitFor('the reset command to be sent', () =>
        agents.commands.some((x) => x.runnerId === R.deactivated.id),
      );
      expect(await admin()('DELETE', `/api/runners/${R.deactivated.id}`)).toEqual({
        status: 200,
        body: { detail: `Runner '${R.deactivated.id}' deactivated` },
      });
      expect(await within(5000, 'the agent closed 4401', ws.closed)).toMatchObject({ code: 4401 });
      expect((await runner(token).call('GET', '/runner/readiness')).status).toBe(403);
      release();
      await runEnded(c, R.deactivated.id);
      const [row] = await c.ds.query(`SELECT state FROM checkpoints WHERE name = $1`, [
        cp.body.name,
      ]);
      expect(row.state).toBe('reset');
    } finally {
      release();
      agents.onExec = previous;
    }
    const audit: Array<{ action: string; actor: string }> = await c.ds.query(
      `SELECT action, actor FROM admin_audit WHERE runner_id = $1 ORDER BY id`,
      [R.deactivated.id],
    );
    expect(audit).toEqual([
      { action: 'create', actor: 'admin' },
      { action: 'deactivate', actor: 'admin' },
    ]);
  });
});

describe('runner registry without E2EPOOL_SECRET_KEY, and clashes with inventory.yml', () => {
  it('refuses to store a Proxmox token value (422) without E2EPOOL_SECRET_KEY', async () => {
    const r = testRunners(['noKey']);
    const c = await startTestController({
      inventory: 'runners: []\n',
      agents: new FakeAgents(),
      env: { E2EPOOL_ADMIN_TOKEN: ADMIN },
    });
    try {
      const res = await restClient(() => c.api.url, ADMIN).call(
        'POST',
        '/api/runners',
        pve(r.noKey.id),
      );
      expect(res).toEqual({
        status: 422,
        body: {
          detail:
            'Cannot store proxmox_token_value: E2EPOOL_SECRET_KEY is not set on this controller',
        },
      });
      expect(await c.ds.query(`SELECT 1 FROM runners`)).toEqual([]);
    } finally {
      await c.stop();
    }
  });

  it('a runner id in both inventory.yml and the registry fails startup, naming it', async () => {
    const r = testRunners(['clash']);
    const { ds, close } = await createMigratedDatabase('clash');
    try {
      await ds.query(
        `INSERT INTO runners (runner_id, backend, token_hash, reset_cmd) VALUES ($1, 'bare_metal', $2, 'true')`,
        [r.clash.id, createHash('sha256').update('t').digest()],
      );
      const log = pino({ level: 'silent' });
      const inventory = InventoryStore.load(
        writeInventory(`runners:\n${bareMetalRunnerYaml(r.clash)}`),
        log,
      );
      await expect(
        attachRunnerRegistry({
          inventory,
          dataSource: ds,
          databaseUrl: databaseUrlOf(ds),
          secrets: null,
          intervalSeconds: 2,
          applicationName: 'clash-test',
          log,
        }),
      ).rejects.toThrow(
        `runner '${r.clash.id}' is defined both in the inventory file and in the runner registry`,
      );
      inventory.close();
    } finally {
      await close();
    }
  });
});
