import { Connection } from '@temporalio/client';
import pino from 'pino';
import { startApiServer, type ApiServer } from '../../api/server';
import { loadTemporalSettings } from '../../config/temporal';
import type { FleetRow, FleetSnapshot } from '../../api/ui/fleet';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  rewordLog,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, controllerEnv, testRunners, type TestRunner } from '../helpers/env';
import { connectRawAgent, type RawAgent } from '../helpers/raw-agent';
import { shared } from '../helpers/shared';
import { openSse } from '../helpers/sse';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * The fleet page over HTTP (real API, Temporal, Postgres; GitLab stand-in):
 * login with the admin token and the session cookie's flags, redirects
 * without a session, the fleet JSON and page (agents, GitLab pauses,
 * checkpoints, holds, last resets), release-hold from a checkpoint page,
 * escaping of what runners and commands write, and the admin token on
 * `GET /checkpoint/{name}/logs`.
 */
const ADMIN = 'admin-token-for-the-fleet-page-test-0123456789';
const R = testRunners(['held', 'broken', 'idle', 'manual']);
const GITLAB = { held: 81, broken: 82, manual: 83 } as const;
const XSS = '<script>alert("pwned")</script>';

describe('fleet page (HTTP)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gitlab: GitLabStandIn;
  const raw: RawAgent[] = [];
  const url = (path: string) => `${c.api.url}${path}`;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);

  /** A request that does not follow redirects, as a browser's first hop. */
  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(url(path), { redirect: 'manual', headers });
  const post = (path: string, form: Record<string, string>, headers: Record<string, string> = {}) =>
    fetch(url(path), {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams(form).toString(),
    });
  /** Logs in and returns the Cookie header to send. */
  const login = async (): Promise<string> => {
    const res = await post('/ui/login', { token: ADMIN });
    expect(res.status).toBe(303);
    const [cookie] = res.headers.getSetCookie();
    return cookie!.split(';')[0]!;
  };
  const fleet = async (cookie: string): Promise<FleetSnapshot> => {
    const res = await get('/ui/api/fleet', { cookie });
    expect(res.status).toBe(200);
    return (await res.json()) as FleetSnapshot;
  };
  const rowOf = (s: FleetSnapshot, r: TestRunner): FleetRow =>
    s.runners.find((x) => x.runner_id === r.id)!;

  beforeAll(async () => {
    for (const r of [R.held, R.broken]) agents.connect(r.id, new Date(0));
    agents.onExec = (runnerId) =>
      runnerId === R.broken.id
        ? { exitCode: 1, stdout: '', stderr: `${XSS}\n` }
        : { exitCode: 0, stdout: 'clean\n', stderr: '' };
    gitlab = await startGitLabStandIn();
    gitlab.addRunner(GITLAB.held);
    gitlab.addRunner(GITLAB.broken);
    gitlab.addRunner(GITLAB.manual, { paused: true });
    c = await startTestController({
      agents,
      inventory: `runners:\n${[
        bareMetalRunnerYaml(R.held, {
          gitlab_runner_id: GITLAB.held,
          hold_on_failure_seconds: 3600,
        }),
        bareMetalRunnerYaml(R.broken, { gitlab_runner_id: GITLAB.broken }),
        // The only runner whose agent has a credential of its own.
        bareMetalRunnerYaml(R.idle, { agent_token: `${R.idle.token}-agent` }),
        bareMetalRunnerYaml(R.manual, { gitlab_runner_id: GITLAB.manual }),
      ].join('')}`,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_POLLER_ENABLED: 'false',
        E2EPOOL_RESET_MAX_ATTEMPTS: '1',
      },
    });
    // Real agent sessions (agent_sessions rows) for the agent column.
    for (const r of [R.held, R.broken]) {
      raw.push(await connectRawAgent(c.api.url, { runnerId: r.id, token: r.token }));
    }
  });
  afterAll(async () => {
    for (const a of raw) a.close();
    await c?.stop();
    await gitlab?.close();
  });

  it('login: redirects without a session, refuses a wrong or empty token, sets a strict cookie that is not the token, logs out', async () => {
    expect([(await get('/ui')).status, (await get('/ui')).headers.get('location')]).toEqual([
      303,
      '/ui/login',
    ]);
    const deep = await get('/ui/checkpoints/job-1-1700000000-abcdef01');
    expect(deep.headers.get('location')).toBe(
      '/ui/login?next=%2Fui%2Fcheckpoints%2Fjob-1-1700000000-abcdef01',
    );
    const form = await get('/ui/login');
    expect(form.status).toBe(200);
    expect(form.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await form.text()).toContain('<form method="post" action="/ui/login"');

    const wrong = await post('/ui/login', { token: 'not-the-token' });
    expect(wrong.status).toBe(403);
    expect(wrong.headers.getSetCookie()).toEqual([]);
    expect(await wrong.text()).toContain('Invalid admin token');
    const empty = await post('/ui/login', { token: '' });
    expect([empty.status, (await empty.text()).includes('Enter the admin token')]).toEqual([
      400,
      true,
    ]);
    // A body that is not a form is a refusal too, never a 500.
    const junk = await fetch(url('/ui/login'), {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/json' },
      body: '{"token":',
    });
    expect(junk.status).toBeGreaterThanOrEqual(400);
    expect(junk.status).toBeLessThan(500);

    const ok = await post('/ui/login', { token: ADMIN });
    expect([ok.status, ok.headers.get('location')]).toEqual([303, '/ui']);
    const [setCookie] = ok.headers.getSetCookie();
    const attrs = setCookie!.split(';').map((s) => s.trim());
    expect(attrs).toEqual(
      expect.arrayContaining(['HttpOnly', 'SameSite=Strict', 'Path=/ui', 'Max-Age=43200']),
    );
    expect(attrs).not.toContain('Secure');
    expect(setCookie).not.toContain(ADMIN);
    expect(setCookie).not.toContain(encodeURIComponent(ADMIN));
    const cookie = attrs[0]!;
    expect((await get('/ui', { cookie })).status).toBe(200);
    // Each login gets its own value.
    expect(await login()).not.toBe(cookie);

    // Behind a TLS-terminating proxy the cookie is Secure.
    const viaHttps = await post('/ui/login', { token: ADMIN }, { 'x-forwarded-proto': 'https' });
    expect(viaHttps.headers.getSetCookie()[0]).toMatch(/; Secure$/);
    // A login form posted from another site (even a sibling subdomain) is refused.
    const crossSite = await post('/ui/login', { token: ADMIN }, { 'sec-fetch-site': 'same-site' });
    expect([crossSite.status, crossSite.headers.getSetCookie()]).toEqual([403, []]);
    // After login the browser goes back where it was headed, but never off the fleet page.
    const back = await post('/ui/login', {
      token: ADMIN,
      next: '/ui/checkpoints/job-1-1700000000-abcdef01',
    });
    expect(back.headers.get('location')).toBe('/ui/checkpoints/job-1-1700000000-abcdef01');
    for (const next of ['//evil.example/ui', 'https://evil.example/', '/ui/../metrics']) {
      const res = await post('/ui/login', { token: ADMIN, next });
      expect([next, res.headers.get('location')]).toEqual([next, '/ui']);
    }

    // A tampered or foreign cookie is no session.
    const [name, value] = cookie.split('=') as [string, string];
    const tampered = `${name}=${value.replace(/^\d/, (d) => String((Number(d) + 1) % 10))}`;
    expect((await get('/ui', { cookie: tampered })).status).toBe(303);
    expect((await get('/ui', { cookie: `${name}=${ADMIN}` })).status).toBe(303);
    const noSession = await get('/ui/api/fleet', { cookie: tampered });
    expect([noSession.status, await noSession.json()]).toEqual([401, { detail: 'Not logged in' }]);

    const out = await post('/ui/logout', {}, { cookie });
    expect([out.status, out.headers.get('location')]).toEqual([303, '/ui/login']);
    expect(out.headers.getSetCookie()[0]).toMatch(/^e2epool_session=; Path=\/ui; Max-Age=0;/);
    expect((await get('/ui/logout')).status).toBe(404);
  });

  it('the fleet: one row per runner with its agent, GitLab pause, checkpoint, hold and last reset; release-hold resets a held runner', async () => {
    const cookie = await login();
    // A job fails on a runner held for debugging: paused, not reset.
    const held = as(R.held);
    const name = (await held.create(R.held.id, '8101')).body.name as string;
    expect((await held.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the hold', async () =>
      (await operations(c.ds, name)).some((o) => o.operation === 'hold'),
    );
    // The hold's end and e2epool's pause are data: the log's words change nothing.
    await rewordLog(c.ds, name);

    // GitLab is asked in the background (again after e2epool's own pause): the page polls.
    const s = await waitFor('GitLab answers in the fleet', async () => {
      const f = await fleet(cookie);
      return (
        f.runners.every((r) => r.gitlab === null || r.gitlab.checked_at !== null) &&
        rowOf(f, R.held).gitlab?.paused === true &&
        f
      );
    });
    expect(s.gitlab_configured).toBe(true);
    expect(s.runners.map((r) => r.runner_id)).toEqual(
      Object.values(R)
        .map((r) => r.id)
        .sort(),
    );
    const h = rowOf(s, R.held);
    expect(h).toMatchObject({
      backend: 'bare_metal',
      agent: 'connected',
      gitlab_runner_id: GITLAB.held,
      gitlab: { paused: true, error: null },
      checkpoint: { name, state: 'finalize_queued', active: true, job_id: '8101' },
      last_reset: null,
    });
    expect(Date.parse(h.paused_by_e2epool_since!)).toBeLessThanOrEqual(Date.now());
    expect(Date.parse(h.held_until!) - Date.now()).toBeGreaterThan(3500_000);
    const heldFacts = (await (await get(`/ui/api/checkpoints/${name}`, { cookie })).json()) as {
      held_until: string | null;
    };
    expect(heldFacts.held_until).toBe(h.held_until);
    expect(rowOf(s, R.idle)).toMatchObject({
      agent: 'never connected',
      agent_last_seen_at: null,
      has_agent_token: true,
      gitlab_runner_id: null,
      gitlab: null,
      paused_by_e2epool_since: null,
      checkpoint: null,
      held_until: null,
      last_reset: null,
    });
    // Paused in GitLab by someone else: GitLab says paused, e2epool's log does not.
    expect(rowOf(s, R.manual)).toMatchObject({
      gitlab: { paused: true },
      paused_by_e2epool_since: null,
    });

    // The page shows the same, and the hold's button.
    const fleetHtml = await (await get('/ui', { cookie })).text();
    expect(fleetHtml).toContain(`<tr data-runner="${R.held.id}">`);
    // A runner whose agent uses the REST token its jobs hold says so; one with an agent_token does not.
    expect(h.has_agent_token).toBe(false);
    const rowHtml = (r: TestRunner) =>
      new RegExp(`<tr data-runner="${r.id}">[\\s\\S]*?</tr>`).exec(fleetHtml)?.[0] ?? '';
    expect(rowHtml(R.held)).toContain('shared credential');
    expect(rowHtml(R.idle)).toMatch(/<tr data-runner=/);
    expect(rowHtml(R.idle)).not.toContain('shared credential');
    expect(fleetHtml).toContain(`href="/ui/checkpoints/${name}"`);
    expect(fleetHtml).toContain('<script src="/ui/assets/fleet.js"></script>');
    const page = await (await get(`/ui/checkpoints/${name}`, { cookie })).text();
    expect(page).toMatch(
      /<form\s+method="post"\s+action="\/ui\/checkpoints\/[^"]+\/release-hold"\s+id="release-hold"\s*>/,
    );

    // Release: from another site refused; from the page, the reset follows.
    const crossSite = await post(
      `/ui/checkpoints/${name}/release-hold`,
      {},
      {
        cookie,
        'sec-fetch-site': 'cross-site',
      },
    );
    expect(crossSite.status).toBe(403);
    expect((await post(`/ui/checkpoints/${name}/release-hold`, {})).status).toBe(303); // to login
    expect((await held.status(name)).body.state).toBe('finalize_queued');
    // The session's cookie alone is not enough: the form carries the page's token.
    const csrf = /name="csrf" value="([^"]+)"/.exec(page)![1]!;
    const sameOrigin = { cookie, 'sec-fetch-site': 'same-origin' };
    const forms: Array<Record<string, string>> = [
      {},
      { csrf: `${csrf}x` },
      { csrf: csrf.slice(1) },
    ];
    for (const form of forms) {
      const refused = await post(`/ui/checkpoints/${name}/release-hold`, form, sameOrigin);
      expect(refused.status).toBe(403);
      expect(await refused.text()).toContain('The form is stale or not from this page');
    }
    // Another session's page has another token.
    const otherPage = await (
      await get(`/ui/checkpoints/${name}`, { cookie: await login() })
    ).text();
    expect(/name="csrf" value="([^"]+)"/.exec(otherPage)![1]).not.toBe(csrf);
    const released = await post(
      `/ui/checkpoints/${name}/release-hold`,
      { csrf },
      {
        cookie,
        'sec-fetch-site': 'same-origin',
      },
    );
    expect([released.status, released.headers.get('location')]).toEqual([
      303,
      `/ui/checkpoints/${name}?released=1`,
    ]);
    await runEnded(c, R.held.id);
    expect((await held.status(name)).body.state).toBe('reset');
    const after = await waitFor(
      'the last reset, and GitLab asked again after the unpause',
      async () => {
        const r = rowOf(await fleet(cookie), R.held);
        return r.last_reset && r.gitlab?.paused === false && r;
      },
    );
    expect(after).toMatchObject({
      checkpoint: { name, state: 'reset', active: false },
      held_until: null,
      paused_by_e2epool_since: null,
      last_reset: { checkpoint: name, state: 'reset' },
    });
    expect(after.last_reset!.duration_ms).toEqual(expect.any(Number));
    // Nothing to release any more.
    const again = await post(`/ui/checkpoints/${name}/release-hold`, { csrf }, { cookie });
    expect([again.status, await again.text()]).toEqual([
      409,
      expect.stringContaining('This checkpoint is not held for debugging'),
    ]);
  }, 90_000);

  it('escapes what commands write; the admin token reads any checkpoint log; the session reads it on /ui', async () => {
    const cookie = await login();
    const broken = as(R.broken);
    const name = (await broken.create(R.broken.id, '8201')).body.name as string;
    expect((await broken.finalize(name, 'failure')).status).toBe(202);
    await waitFor(
      'needs_attention',
      async () => (await broken.status(name)).body.state === 'needs_attention',
      { timeoutMs: 30_000 },
    );

    const res = await get(`/ui/checkpoints/${name}`, { cookie });
    const page = await res.text();
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page).toContain('&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;');
    expect(page).not.toContain(XSS);
    expect(page).toContain('<span class="state state-needs_attention">needs_attention</span>');
    // What the page's scripts fetch answers with the session.
    const sources = [...page.matchAll(/data-src="([^"]+)"/g)].map((m) => m[1]!);
    expect(sources).toEqual([`/ui/api/checkpoints/${name}`, `/ui/checkpoints/${name}/logs`]);
    for (const src of sources)
      expect([src, (await get(src, { cookie })).status]).toEqual([src, 200]);
    const facts = await (await get(`/ui/api/checkpoints/${name}`, { cookie })).json();
    expect(facts).toMatchObject({
      state: 'needs_attention',
      error_detail: expect.stringContaining(XSS),
    });

    // GET /checkpoint/{name}/logs: the admin token reads it (JSON keeps the text as it was).
    const logs = `/checkpoint/${name}/logs`;
    const byAdmin = await get(logs, { authorization: `Bearer ${ADMIN}` });
    expect(byAdmin.status).toBe(200);
    const entries = ((await byAdmin.json()) as { entries: Array<{ step?: string; text?: string }> })
      .entries;
    expect(entries).toContainEqual(
      expect.objectContaining({ step: 'reset_cmd', text: expect.stringContaining(XSS) }),
    );
    // The runner paths are unchanged.
    expect((await get(logs, { authorization: `Bearer ${R.broken.token}` })).status).toBe(200);
    const other = await get(logs, { authorization: `Bearer ${R.held.token}` });
    expect([other.status, await other.json()]).toEqual([
      403,
      { detail: 'Token not authorized for this checkpoint' },
    ]);
    const wrong = await get(logs, { authorization: 'Bearer nobody' });
    expect([wrong.status, await wrong.json()]).toEqual([403, { detail: 'Invalid token' }]);
    expect((await get(logs)).status).toBe(401);
    // The session cookie does not open the REST route (it is not even sent there by browsers).
    expect((await get(logs, { cookie })).status).toBe(401);

    // The page's stream: /ui/checkpoints/{name}/logs with the cookie, the same events.
    const uiLogs = url(`/ui/checkpoints/${name}/logs`);
    const unauth = await get(`/ui/checkpoints/${name}/logs`);
    expect([unauth.status, await unauth.json()]).toEqual([401, { detail: 'Not logged in' }]);
    const sse = openSse(uiLogs, { cookie });
    expect(await sse.status).toBe(200);
    await waitFor('the failed reset_cmd step', () =>
      sse.events.some((e) => e.event === 'step' && JSON.parse(e.data).text?.includes(XSS)),
    );
    sse.close();
    await sse.ended;
    expect((await get(`/ui/checkpoints/job-1-1700000000-abcdef01`, { cookie })).status).toBe(404);
    const nul = await get(`/ui/api/checkpoints/a%00b`, { cookie });
    expect(nul.status).toBe(422);
  }, 60_000);

  it('without E2EPOOL_ADMIN_TOKEN: the login says the admin API is not configured (503); runner tokens still read logs', async () => {
    const env = controllerEnv({});
    const connection = await Connection.connect({ address: shared().temporalAddress });
    const api: ApiServer = await startApiServer({
      settings: { ...c.settings, adminToken: undefined },
      dataSource: c.ds,
      temporal: connection,
      temporalSettings: loadTemporalSettings(env),
      inventory: c.inventory,
      log: pino({ level: 'silent' }),
      gitlab: null,
    });
    try {
      const form = await fetch(`${api.url}/ui/login`);
      expect([form.status, await form.text()]).toEqual([
        503,
        expect.stringContaining('Admin API not configured'),
      ]);
      const refused = await fetch(`${api.url}/ui/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `token=${ADMIN}`,
      });
      expect([refused.status, refused.headers.getSetCookie()]).toEqual([503, []]);
      const bearer = await fetch(`${api.url}/ui/api/fleet`, {
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      expect([bearer.status, await bearer.json()]).toEqual([
        503,
        { detail: 'Admin API not configured' },
      ]);
      // A session from a server with a token means nothing here.
      const cookie = await login();
      expect(
        (await fetch(`${api.url}/ui`, { redirect: 'manual', headers: { cookie } })).status,
      ).toBe(303);
      const logs = await fetch(`${api.url}/checkpoint/job-1-1700000000-abcdef01/logs`, {
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      expect([logs.status, await logs.json()]).toEqual([403, { detail: 'Invalid token' }]);
    } finally {
      await api.close();
      await connection.close();
    }
  });

  it('the admin token as a bearer reads the fleet JSON (for scripts), with SPEC §8 answers', async () => {
    const ok = await get('/ui/api/fleet', { authorization: `Bearer ${ADMIN}` });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as FleetSnapshot).runners).toHaveLength(4);
    const wrong = await get('/ui/api/fleet', { authorization: 'Bearer nope' });
    expect([wrong.status, await wrong.json()]).toEqual([403, { detail: 'Invalid admin token' }]);
    const basic = await get('/ui/api/fleet', { authorization: 'Basic eDp5' });
    expect([basic.status, await basic.json()]).toEqual([
      401,
      { detail: 'Invalid authorization header' },
    ]);
  });
});
