import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { checkpointWorkflowId, releaseSignal } from '../../common/checkpoint';
import { quarantineWorkflowId } from '../../common/quarantine';
import { ensureReconcileSchedule } from '../../worker/reconcile-schedule';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  runEnded,
  startTestController,
  type TestController,
  needsAttentionCheckpoint,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, uniqueId } from '../helpers/env';
import { scrape, sumOf } from '../helpers/metrics';
import { connectRawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';
import { startGitHubStandIn, type GitHubStandIn } from '../stand-ins/github';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * Quarantine (docs/protocol.md#runner-registry): an operator's quarantine
 * refuses creates with 423 (REST and agent WebSocket) and keeps the runner
 * paused in GitLab after its checkpoint until it is unquarantined (fleet page
 * or CLI); E2EPOOL_QUARANTINE_AFTER checkpoints in a row ending reset_failed
 * quarantine a runner, at most E2EPOOL_QUARANTINE_MAX_PERCENT of the fleet
 * (at least one runner): past that the streak is only reported.
 * Registry runners, created through the admin API, and `file`, a runner of
 * the inventory file (its quarantine is in runner_state, keyed by id, too).
 */
const ADMIN = 'admin-token-quarantine-test-0123456789abcdef';
const R = testRunners(['op', 's1', 's2', 'gh', 'file', 'cx', 'idle']);
const GITLAB: Record<string, number> = {
  [R.op.id]: 411,
  [R.s1.id]: 412,
  [R.s2.id]: 413,
  [R.file.id]: 415,
  [R.cx.id]: 416,
  [R.idle.id]: 417,
};
const GITHUB_ID = 414;
const REPO = 'acme/quarantine';
const CLI = join(__dirname, '..', '..', 'bin', 'e2epool.js');
const run = promisify(execFile);

describe('runner quarantine', () => {
  const agents = new FakeAgents();
  const failing = new Set<string>();
  /** Runners whose commands hang until `unhang` (a reset in progress). */
  const hanging = new Set<string>();
  let unhang: () => void = () => undefined;
  const hung = new Promise<void>((resolve) => (unhang = resolve));
  let gitlab: GitLabStandIn;
  let github: GitHubStandIn;
  let c: TestController;
  const admin = () => restClient(() => c.api.url, ADMIN).call;
  /** Registry runners: id → token, agent token. */
  const tokens = new Map<string, { token: string; agent: string }>();
  const api = (id: string) => restClient(() => c.api.url, tokens.get(id)!.token);
  const paused = (id: string) => gitlab.runner(GITLAB[id]!).paused;
  let tmp: string | undefined;

  beforeAll(async () => {
    [gitlab, github] = await Promise.all([startGitLabStandIn(), startGitHubStandIn()]);
    github.addRunner({ repo: REPO }, GITHUB_ID, { labels: ['e2e'] });
    for (const r of Object.values(R)) {
      if (GITLAB[r.id]) gitlab.addRunner(GITLAB[r.id]!);
      agents.connect(r.id, new Date(0));
    }
    agents.onExec = async (runnerId) => {
      if (hanging.has(runnerId)) await hung;
      return failing.has(runnerId)
        ? { exitCode: 7, stdout: '', stderr: 'disk on fire' }
        : { exitCode: 0, stdout: 'ok', stderr: '' };
    };
    c = await startTestController({
      inventory: `runners:\n${bareMetalRunnerYaml(R.file, {
        reset_cmd: '/opt/reset.sh',
        gitlab_runner_id: GITLAB[R.file.id]!,
      })}`,
      agents,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_GITHUB_URL: github.url,
        E2EPOOL_GITHUB_TOKEN: github.token,
        E2EPOOL_RESET_MAX_ATTEMPTS: '1',
        E2EPOOL_QUARANTINE_AFTER: '2',
        // 7 runners: 20 % is 1.4, so the cap is its floor, one runner.
        E2EPOOL_QUARANTINE_MAX_PERCENT: '20',
      },
    });
    // Only (un)quarantine and the test start passes: the interval is far longer than the test.
    await ensureReconcileSchedule(c.client, {
      taskQueue: c.taskQueue,
      intervalSeconds: 3600,
      repair: true,
      minAgeSeconds: 0,
    });
    for (const r of Object.values(R)) {
      if (r === R.file) {
        tokens.set(r.id, { token: r.token, agent: r.token });
        continue;
      }
      const res = await admin()('POST', '/api/runners', {
        runner_id: r.id,
        backend: 'bare_metal',
        reset_cmd: '/opt/reset.sh',
        ...(r === R.gh
          ? {
              ci_adapter: 'github',
              github_repo: REPO,
              github_runner_id: GITHUB_ID,
              github_pause_labels: ['e2e'],
            }
          : { gitlab_runner_id: GITLAB[r.id] }),
      });
      expect(res.status).toBe(201);
      tokens.set(r.id, { token: res.body.token, agent: res.body.agent_token });
    }
  });
  afterAll(async () => {
    unhang();
    await c?.client.schedule
      .getHandle(`e2epool-reconcile-${c.taskQueue}`)
      .delete()
      .catch(() => undefined);
    await c?.stop();
    await Promise.all([gitlab?.close(), github?.close()]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A reconciler pass, as the schedule runs it. */
  const pass = () =>
    c.client.workflow.execute('reconcileWorkflow', {
      taskQueue: c.taskQueue,
      workflowId: uniqueId('reconcile-pass'),
      args: [{ repair: true, minAgeSeconds: 0 }],
    });

  /** A checkpoint whose reset fails, released by an operator: it ends reset_failed. */
  async function failedCheckpoint(id: string): Promise<string> {
    failing.add(id);
    const name = await needsAttentionCheckpoint(api(id), id);
    await c.client.workflow.getHandle(checkpointWorkflowId(id)).signal(releaseSignal);
    await runEnded(c, id);
    expect((await api(id).status(name)).body.state).toBe('reset_failed');
    return name;
  }

  const workerGauge = async (name: string) => sumOf(await scrape(c.worker.metricsUrl), name);
  const apiGauge = async (name: string) => sumOf(await scrape(`${c.api.url}/metrics`), name);

  /** A checkpoint of `id`, then an operator's quarantine of it; returns the checkpoint and the runner. */
  async function quarantineBusy(id: string, reason: string) {
    const cp = await api(id).create(id, uniqueId('job'));
    expect(cp.status).toBe(201);
    const q = await admin()('POST', `/api/runners/${id}/quarantine`, { reason });
    expect(q).toMatchObject({
      status: 200,
      body: { quarantined: true, quarantine_reason: reason, quarantine_source: 'operator' },
    });
    return { name: cp.body.name as string, runner: q.body };
  }

  const refused = async (id: string) =>
    expect(await api(id).create(id, uniqueId('job'))).toEqual({
      status: 423,
      body: { detail: `Runner '${id}' is quarantined` },
    });

  /** The runner's row of the fleet page's JSON (GET /ui/api/fleet). */
  async function fleetRow(id: string): Promise<Record<string, unknown> | undefined> {
    const fleet = await admin()('GET', '/ui/api/fleet');
    expect(fleet.status).toBe(200);
    return (fleet.body.runners as Array<{ runner_id: string }>).find((r) => r.runner_id === id);
  }

  /** The quarantined runner's checkpoint ends; the runner stays paused, also through a reconciler pass. */
  async function endsKeptPaused(id: string, name: string): Promise<void> {
    expect((await api(id).finalize(name, 'failure')).status).toBe(202);
    await runEnded(c, id);
    expect((await api(id).status(name)).body.state).toBe('reset');
    expect(gitlab.runner(GITLAB[id]!)).toMatchObject({ paused: true, pausedHistory: [true] });
    expect((await operations(c.ds, name)).find((o) => o.operation === 'unpause')).toEqual(
      expect.objectContaining({
        result: 'skipped',
        detail: `runner '${id}' is quarantined: GitLab runner ${GITLAB[id]} stays paused until it is unquarantined`,
      }),
    );
    await pass();
    expect(paused(id)).toBe(true);
  }

  it('refuses bad input with 422/404, never 500', async () => {
    const path = `/api/runners/${R.op.id}/quarantine`;
    for (const [body, detail] of [
      [{}, 'reason: expected a string'],
      [{ reason: 7 }, 'reason: expected a string'],
      [{ reason: '  ' }, 'reason: must not be empty'],
      [{ reason: 'x'.repeat(501) }, 'reason: at most 500 characters'],
      [{ reason: 'ok', why: 'x' }, 'Unknown fields: why'],
      [[1], 'Request body must be a JSON object'],
    ] as const) {
      expect(await admin()('POST', path, body)).toEqual({ status: 422, body: { detail } });
    }
    // A NUL is refused before the route (the API's body guard), as everywhere.
    expect((await admin()('POST', path, { reason: 'a\u0000b' })).status).toBe(422);
    expect(await admin()('POST', '/api/runners/nobody/quarantine', { reason: 'x' })).toEqual({
      status: 404,
      body: { detail: 'Runner not found' },
    });
    expect((await admin()('POST', '/api/runners/nobody/unquarantine')).status).toBe(404);
    const anon = restClient(() => c.api.url, 'not-the-admin-token-0123456789abcdefgh').call;
    expect((await anon('POST', path, { reason: 'x' })).status).toBe(403);
    expect((await admin()('GET', `/api/runners/${R.op.id}`)).body).toMatchObject({
      quarantined: false,
      quarantine_reason: null,
      quarantined_at: null,
    });
  });

  it("an operator's quarantine: 423 on create (REST and WebSocket), audited, kept paused until unquarantined on the fleet page", async () => {
    const id = R.op.id;
    const cp = await quarantineBusy(id, 'flaky disk');
    expect(Date.parse(cp.runner.quarantined_at)).not.toBeNaN();
    // Idempotent: the first reason stays.
    await admin()('POST', `/api/runners/${id}/quarantine`, { reason: 'again' });
    expect((await admin()('GET', `/api/runners/${id}`)).body.quarantine_reason).toBe('flaky disk');
    expect((await admin()('GET', '/api/runners')).body).toEqual(
      expect.arrayContaining([expect.objectContaining({ runner_id: id, quarantined: true })]),
    );
    // 423 before the one-active-checkpoint rule's 409.
    await refused(id);
    const agent = await connectRawAgent(c.api.url, { runnerId: id, token: tokens.get(id)!.agent });
    try {
      expect(await agent.request('create', { job_id: '71' })).toMatchObject({
        status: 'error',
        error: { code: 423, detail: `Runner '${id}' is quarantined` },
      });
    } finally {
      agent.close();
    }
    const audit = (await c.ds.query(
      `SELECT action, detail FROM admin_audit WHERE runner_id = $1 AND action LIKE '%quarantine' ORDER BY id`,
      [id],
    )) as Array<{ action: string; detail: Record<string, unknown> }>;
    expect(audit).toEqual([
      { action: 'quarantine', detail: { reason: 'flaky disk', changed: true } },
      { action: 'quarantine', detail: { reason: 'again', changed: false } },
    ]);
    expect(await apiGauge('e2epool_runners_quarantined')).toBe(1);

    await endsKeptPaused(id, cp.name);

    // The fleet page shows it, and its button ends it.
    const fleet = await admin()('GET', '/ui/api/fleet');
    expect(fleet.body.runners.find((r: { runner_id: string }) => r.runner_id === id)).toMatchObject(
      { quarantine: { reason: 'flaky disk', source: 'operator' } },
    );
    const cookie = await uiSession();
    const page = await fetch(`${c.api.url}/ui`, { headers: { cookie } });
    const text = await page.text();
    expect(text).toContain('flaky disk');
    expect(text).toContain(`action="/ui/runners/${id}/unquarantine"`);
    const csrf = /name="csrf" value="([^"]+)"/.exec(text)![1]!;
    const done = await fetch(`${c.api.url}/ui/runners/${id}/unquarantine`, {
      method: 'POST',
      headers: {
        cookie,
        'sec-fetch-site': 'same-origin',
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ csrf }).toString(),
      redirect: 'manual',
    });
    expect(done.status).toBe(303);
    expect(done.headers.get('location')).toBe(`/ui?unquarantined=${id}`);
    expect((await admin()('GET', `/api/runners/${id}`)).body).toMatchObject({
      quarantined: false,
      quarantine_reason: null,
    });
    await waitFor('the unquarantined runner to be unpaused', () => !paused(id));
    expect(gitlab.runner(GITLAB[id]!).pausedHistory).toEqual([true, false]);
    expect(
      (
        await c.ds.query(
          `SELECT action FROM admin_audit WHERE runner_id = $1 AND action = 'unquarantine'`,
          [id],
        )
      ).length,
    ).toBe(1);
    const next = await api(id).create(id, uniqueId('job'));
    expect(next.status).toBe(201);
    await api(id).finalize(next.body.name, 'success');
    await runEnded(c, id);
  });

  it("an inventory-file runner: an operator's quarantine gives 423 and keeps it paused; unquarantine ends it", async () => {
    const id = R.file.id;
    // Read your writes: a fleet page loaded just before (its snapshot cached) does not hide the change.
    expect(await fleetRow(id)).toMatchObject({ quarantine: null, draining: false });
    const cp = await quarantineBusy(id, 'bad RAM');
    expect(cp.runner.source).toBe('inventory');
    expect(await fleetRow(id)).toMatchObject({
      quarantine: { reason: 'bad RAM', source: 'operator' },
    });
    await refused(id);
    expect((await admin()('GET', '/api/runners')).body).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ runner_id: id, source: 'inventory', quarantined: true }),
      ]),
    );
    expect(await apiGauge('e2epool_runners_quarantined')).toBe(1);
    await endsKeptPaused(id, cp.name);
    expect(await fleetRow(id)).toMatchObject({
      quarantine: { reason: 'bad RAM', source: 'operator' },
    });

    expect((await admin()('POST', `/api/runners/${id}/unquarantine`)).body).toMatchObject({
      source: 'inventory',
      quarantined: false,
      quarantine_reason: null,
    });
    expect(await fleetRow(id)).toMatchObject({ quarantine: null });
    expect((await admin()('GET', `/api/runners/${id}`)).body).toMatchObject({ quarantined: false });
    await waitFor('the unquarantined file runner to be unpaused', () => !paused(id));
    const audit = (await c.ds.query(
      `SELECT action FROM admin_audit WHERE runner_id = $1 ORDER BY id`,
      [id],
    )) as Array<{ action: string }>;
    expect(audit.map((a) => a.action)).toEqual(['quarantine', 'unquarantine']);
    const next = await api(id).create(id, uniqueId('job'));
    expect(next.status).toBe(201);
    await api(id).finalize(next.body.name, 'success');
    await runEnded(c, id);

    // The same for its drain (kept in runner_state): seen at once on the fleet page and GET /api/runners/{id}.
    await fleetRow(id);
    expect((await admin()('POST', `/api/runners/${id}/drain`)).body).toMatchObject({
      draining: true,
    });
    expect(await fleetRow(id)).toMatchObject({ draining: true });
    expect((await admin()('GET', `/api/runners/${id}`)).body).toMatchObject({ draining: true });
    expect((await api(id).create(id, uniqueId('job'))).status).toBe(423);
    expect((await admin()('POST', `/api/runners/${id}/undrain`)).body).toMatchObject({
      draining: false,
    });
    expect(await fleetRow(id)).toMatchObject({ draining: false });
    expect((await admin()('GET', `/api/runners/${id}`)).body).toMatchObject({ draining: false });

    // Its fleet-page row has the Drain and Quarantine buttons too; a post needs the page's form token.
    const cookie = await uiSession();
    const text = await (await fetch(`${c.api.url}/ui`, { headers: { cookie } })).text();
    expect(text).toContain(`action="/ui/runners/${id}/drain"`);
    expect(text).toContain(`action="/ui/runners/${id}/quarantine"`);
    const csrf = /name="csrf" value="([^"]+)"/.exec(text)![1]!;
    const uiDrain = (form: Record<string, string>) =>
      fetch(`${c.api.url}/ui/runners/${id}/drain`, {
        method: 'POST',
        headers: {
          cookie,
          'sec-fetch-site': 'same-origin',
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams(form).toString(),
        redirect: 'manual',
      });
    expect((await uiDrain({})).status).toBe(403);
    expect(await fleetRow(id)).toMatchObject({ draining: false });
    const drained = await uiDrain({ csrf });
    expect(drained.status).toBe(303);
    expect(drained.headers.get('location')).toBe(`/ui?drained=${id}`);
    expect(await fleetRow(id)).toMatchObject({ draining: true });
    expect((await admin()('POST', `/api/runners/${id}/undrain`)).status).toBe(200);
  });

  it('a cancel mid-reset that completes a failure streak quarantines before the unpause: the runner stays paused', async () => {
    const id = R.cx.id;
    await failedCheckpoint(id);
    failing.delete(id);
    hanging.add(id);
    const cp = await api(id).create(id, uniqueId('job'));
    expect(cp.status).toBe(201);
    const name = cp.body.name as string;
    const before = agents.commandsFor(id).length;
    expect((await api(id).finalize(name, 'failure')).status).toBe(202);
    // The reset runs (its command hangs): the checkpoint is finalize_queued, not needs_attention.
    await waitFor('the reset to start', () => agents.commandsFor(id).length > before);
    expect((await api(id).status(name)).body.state).toBe('finalize_queued');
    expect(paused(id)).toBe(true);
    await c.client.workflow.getHandle(checkpointWorkflowId(id)).cancel();
    await runEnded(c, id).catch(() => undefined);
    hanging.delete(id);
    expect((await api(id).status(name)).body.state).toBe('reset_failed');
    expect((await admin()('GET', `/api/runners/${id}`)).body).toMatchObject({
      quarantined: true,
      quarantine_source: 'failure_streak',
    });
    // Quarantined before its unpause, as a release's streak is: never unpaused.
    expect(gitlab.runner(GITLAB[id]!).pausedHistory).toEqual([true, false, true]);
    expect(paused(id)).toBe(true);
    expect((await operations(c.ds, name)).find((o) => o.operation === 'unpause')).toEqual(
      expect.objectContaining({
        result: 'skipped',
        detail: expect.stringContaining('quarantined'),
      }),
    );
    // Unquarantined (the cap has room for the streak test again), it is unpaused.
    expect((await admin()('POST', `/api/runners/${id}/unquarantine`)).status).toBe(200);
    await waitFor('the unquarantined runner to be unpaused', () => !paused(id));
  });

  it('a failure streak quarantines one runner; past the cap the next streak is only reported; the CLI ends it', async () => {
    const [s1, s2] = [R.s1.id, R.s2.id];
    const first = await failedCheckpoint(s1);
    expect((await operations(c.ds, first)).some((o) => o.operation === 'quarantine')).toBe(false);
    expect(paused(s1)).toBe(false);
    const second = await failedCheckpoint(s1);
    expect((await admin()('GET', `/api/runners/${s1}`)).body).toMatchObject({
      quarantined: true,
      quarantine_source: 'failure_streak',
      quarantine_reason: `the last 2 checkpoints ended reset_failed (the newest: ${second})`,
    });
    // Quarantined before its unpause: it stays paused.
    expect(paused(s1)).toBe(true);
    expect((await operations(c.ds, second)).find((o) => o.operation === 'quarantine')).toEqual(
      expect.objectContaining({ result: 'ok' }),
    );
    expect((await api(s1).create(s1, uniqueId('job'))).status).toBe(423);

    // The cap (one runner) is full: s2's streak is reported, not quarantined.
    await failedCheckpoint(s2);
    const reported = await failedCheckpoint(s2);
    expect((await admin()('GET', `/api/runners/${s2}`)).body.quarantined).toBe(false);
    expect(paused(s2)).toBe(false);
    expect((await operations(c.ds, reported)).find((o) => o.operation === 'quarantine')).toEqual(
      expect.objectContaining({
        result: 'skipped',
        detail: expect.stringContaining('the failure-streak cap (1) is reached'),
      }),
    );
    expect(await workerGauge('e2epool_quarantine_cap_reached')).toBe(1);

    // The CLI: a refusal exits 1 with the API's detail; unquarantine prints the runner.
    const env = { ...process.env, E2EPOOL_URL: c.api.url, E2EPOOL_ADMIN_TOKEN: ADMIN };
    const refused = await run('node', [CLI, 'runners', 'quarantine', 'nobody', '--reason', 'x'], {
      env,
    }).catch((err: { code: number; stderr: string }) => err);
    expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining('Runner not found') });
    const usage = await run('node', [CLI, 'runners', 'unquarantine', s1], {
      env: { ...env, E2EPOOL_ADMIN_TOKEN: '' },
    }).catch((err: { code: number; stderr: string }) => err);
    expect(usage).toMatchObject({ code: 78, stderr: expect.stringContaining('no admin token') });
    tmp = mkdtempSync(join(tmpdir(), 'e2epool-q-'));
    const tokenFile = join(tmp, 'admin-token');
    writeFileSync(tokenFile, `${ADMIN}\n`, { mode: 0o600 });
    const { stdout } = await run(
      'node',
      [CLI, 'runners', 'unquarantine', s1, '--json', '--admin-token-file', tokenFile],
      { env: { ...env, E2EPOOL_ADMIN_TOKEN: '' } },
    );
    expect(JSON.parse(stdout)).toMatchObject({ runner_id: s1, quarantined: false });
    await waitFor('s1 to be unpaused', () => !paused(s1));

    // With room under the cap again, s2's next failure quarantines it.
    await failedCheckpoint(s2);
    expect((await admin()('GET', `/api/runners/${s2}`)).body.quarantined).toBe(true);
    expect(await workerGauge('e2epool_quarantine_cap_reached')).toBe(0);
    expect(paused(s2)).toBe(true);
  });

  it('quarantining an idle runner pauses it in GitLab, unquarantine unpauses it; a runner paused by hand is left paused', async () => {
    const id = R.idle.id;
    const gid = GITLAB[id]!;
    const quarantineRun = () =>
      c.client.workflow.getHandle(quarantineWorkflowId(id)).result() as Promise<string>;
    const cp = await api(id).create(id, uniqueId('job'));
    expect((await api(id).finalize(cp.body.name, 'success')).status).toBe(202);
    await runEnded(c, id);
    expect(gitlab.runner(gid)).toMatchObject({ paused: false, pausedHistory: [true, false] });

    // Idle: nothing else would pause it; the quarantine's workflow does.
    expect(
      (await admin()('POST', `/api/runners/${id}/quarantine`, { reason: 'bad disk' })).status,
    ).toBe(200);
    expect(await quarantineRun()).toBe(
      `GitLab runner ${gid} paused: runner '${id}' is quarantined; it stays paused until it is unquarantined`,
    );
    expect(gitlab.runner(gid)).toMatchObject({ paused: true, pausedHistory: [true, false, true] });
    const state = async () =>
      (
        await c.ds.query(
          `SELECT p.state FROM runner_pauses p JOIN checkpoints c ON c.id = p.checkpoint_id WHERE c.name = $1`,
          [cp.body.name],
        )
      )[0]?.state;
    expect(await state()).toBe('kept_for_quarantine');
    // A second quarantine (and a reconciler pass) changes nothing.
    await admin()('POST', `/api/runners/${id}/quarantine`, { reason: 'again' });
    expect(await quarantineRun()).toBe(`GitLab runner ${gid} is held by e2epool already`);
    await pass();
    expect(gitlab.runner(gid).pausedHistory).toEqual([true, false, true]);

    expect((await admin()('POST', `/api/runners/${id}/unquarantine`)).status).toBe(200);
    await waitFor('the unquarantined runner to be unpaused', () => !paused(id));
    await waitFor('its pause to be closed', async () => (await state()) === 'unpaused');

    // Paused by hand: the quarantine leaves it, and unquarantine never unpauses it.
    const byHand = await fetch(`${gitlab.url}/api/v4/runners/${gid}`, {
      method: 'PUT',
      headers: { 'PRIVATE-TOKEN': gitlab.token, 'content-type': 'application/json' },
      body: JSON.stringify({ paused: true }),
    });
    expect(byHand.status).toBe(200);
    expect(
      (await admin()('POST', `/api/runners/${id}/quarantine`, { reason: 'by hand too' })).status,
    ).toBe(200);
    expect(await quarantineRun()).toContain('held by somebody else already: left alone');
    expect((await admin()('POST', `/api/runners/${id}/unquarantine`)).status).toBe(200);
    await pass();
    expect(gitlab.runner(gid)).toMatchObject({
      paused: true,
      pausedHistory: [true, false, true, false, true],
    });
    expect(await state()).toBe('unpaused');
  });

  it('GitHub: a quarantined runner keeps its pause labels off until unquarantined', async () => {
    const id = R.gh.id;
    const cp = await api(id).create(id, uniqueId('job'));
    expect(cp.status).toBe(201);
    expect(
      (await admin()('POST', `/api/runners/${id}/quarantine`, { reason: 'bad image' })).status,
    ).toBe(200);
    expect((await api(id).finalize(cp.body.name, 'failure')).status).toBe(202);
    await runEnded(c, id);
    expect(github.runner(GITHUB_ID).custom).toEqual([]);
    expect((await operations(c.ds, cp.body.name)).find((o) => o.operation === 'unpause')).toEqual(
      expect.objectContaining({
        result: 'skipped',
        detail: `runner '${id}' is quarantined: GitHub runner ${GITHUB_ID} of ${REPO} stays paused until it is unquarantined`,
      }),
    );
    await pass();
    expect(github.runner(GITHUB_ID).custom).toEqual([]);
    expect((await admin()('POST', `/api/runners/${id}/unquarantine`)).status).toBe(200);
    await waitFor('the labels to be put back', () =>
      github.runner(GITHUB_ID).custom.includes('e2e'),
    );
  });

  /** A fleet-page session cookie, as a browser gets it. */
  async function uiSession(): Promise<string> {
    const res = await fetch(`${c.api.url}/ui/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: ADMIN }).toString(),
      redirect: 'manual',
    });
    expect(res.status).toBe(303);
    return res.headers.get('set-cookie')!.split(';')[0]!;
  }
});
