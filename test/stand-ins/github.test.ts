import { request } from 'node:http';
import { startGitHubStandIn, type GitHubStandIn } from './github';

/**
 * The GitHub stand-in must behave like the GitHub REST API as described in
 * /work/shared/reference/external-apis.md section 3; these tests pin that behaviour.
 */

const REPO = 'acme/app';
const RUNNER = 17;
const ORG_RUNNER = 18;

let gh: GitHubStandIn;

interface Reply {
  status: number;
  headers: Headers;
  json: unknown;
}

async function api(
  method: string,
  path: string,
  opts: { json?: unknown; token?: string | null } = {},
): Promise<Reply> {
  const token = opts.token === undefined ? gh.token : opts.token;
  const headers: Record<string, string> = {
    Accept: 'application/vnd.github+json',
    'X-GitHub-Api-Version': '2022-11-28',
    'User-Agent': 'stand-in-test',
  };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  if (opts.json !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`${gh.url}${path}`, {
    method,
    headers,
    body: opts.json === undefined ? undefined : JSON.stringify(opts.json),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

const labelsPath = (id = RUNNER) => `/repos/${REPO}/actions/runners/${id}/labels`;

beforeEach(async () => {
  gh = await startGitHubStandIn();
  gh.addRunner({ repo: REPO }, RUNNER, { labels: ['e2e', 'gpu'] });
  gh.addRunner({ org: 'acme' }, ORG_RUNNER, { labels: ['e2e'] });
});
afterEach(async () => gh.close());

describe('jobs: GET /repos/{owner}/{repo}/actions/jobs/{job_id}', () => {
  it('answers the job schema; runner_* are null while it is queued', async () => {
    gh.setJob(REPO, 289782451, 'queued');
    const queued = await api('GET', `/repos/${REPO}/actions/jobs/289782451`);
    expect(queued.status).toBe(200);
    expect(queued.json).toMatchObject({
      id: 289782451,
      run_id: expect.any(Number),
      run_attempt: 1,
      url: `${gh.url}/repos/${REPO}/actions/jobs/289782451`,
      check_run_url: `${gh.url}/repos/${REPO}/check-runs/289782451`,
      status: 'queued',
      conclusion: null,
      labels: ['self-hosted', 'e2e'],
      runner_id: null,
      runner_name: null,
      runner_group_id: null,
      runner_group_name: null,
      workflow_name: 'CI',
      completed_at: null,
    });
    gh.setJob(REPO, 289782451, 'in_progress', { runnerId: RUNNER });
    expect((await api('GET', `/repos/${REPO}/actions/jobs/289782451`)).json).toMatchObject({
      status: 'in_progress',
      runner_id: RUNNER,
      runner_name: `gh-runner-${RUNNER}`,
    });
  });

  it("a finished job has its conclusion, spelled GitHub's way (`cancelled`)", async () => {
    gh.setJob(REPO, 5, 'completed', { conclusion: 'cancelled', runnerId: RUNNER });
    expect((await api('GET', `/repos/${REPO}/actions/jobs/5`)).json).toMatchObject({
      status: 'completed',
      conclusion: 'cancelled',
      completed_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/),
    });
    expect(() => gh.setJob(REPO, 6, 'completed', { conclusion: 'canceled' })).toThrow(
      /unknown GitHub job conclusion 'canceled'/,
    );
  });

  it('an unknown job, or one of another repository, is 404 Not Found', async () => {
    gh.setJob(REPO, 5, 'queued');
    for (const path of [`/repos/${REPO}/actions/jobs/6`, `/repos/acme/other/actions/jobs/5`]) {
      const r = await api('GET', path);
      expect(r.status).toBe(404);
      expect(r.json).toMatchObject({ message: 'Not Found' });
    }
  });
});

describe('self-hosted runner labels', () => {
  it('lists read-only (self-hosted, OS, arch) and custom labels with ids', async () => {
    const r = await api('GET', labelsPath());
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      total_count: 5,
      labels: [
        { id: expect.any(Number), name: 'self-hosted', type: 'read-only' },
        { id: expect.any(Number), name: 'Linux', type: 'read-only' },
        { id: expect.any(Number), name: 'X64', type: 'read-only' },
        { id: expect.any(Number), name: 'e2e', type: 'custom' },
        { id: expect.any(Number), name: 'gpu', type: 'custom' },
      ],
    });
  });

  it('DELETE .../labels/{name} removes one custom label and answers the remaining ones; 404 when not carried', async () => {
    const r = await api('DELETE', `${labelsPath()}/e2e`);
    expect(r.status).toBe(200);
    expect((r.json as { labels: Array<{ name: string }> }).labels.map((l) => l.name)).toEqual([
      'self-hosted',
      'Linux',
      'X64',
      'gpu',
    ]);
    expect(gh.runnersMatching(['self-hosted', 'e2e'])).toEqual([ORG_RUNNER]);
    expect((await api('DELETE', `${labelsPath()}/e2e`)).status).toBe(404);
    // Read-only labels are not custom labels: they cannot be removed.
    expect((await api('DELETE', `${labelsPath()}/self-hosted`)).status).toBe(404);
    expect(gh.runner(RUNNER).changes).toEqual([{ method: 'DELETE', labels: ['e2e'] }]);
  });

  it('POST adds custom labels (one it has already stays once); PUT replaces them; DELETE clears them', async () => {
    await api('DELETE', `${labelsPath()}/e2e`);
    const added = await api('POST', labelsPath(), { json: { labels: ['e2e', 'gpu'] } });
    expect(added.status).toBe(200);
    expect(gh.runner(RUNNER).custom).toEqual(['gpu', 'e2e']);
    await api('PUT', labelsPath(), { json: { labels: ['only'] } });
    expect(gh.runner(RUNNER).labels).toEqual(['self-hosted', 'Linux', 'X64', 'only']);
    const cleared = await api('DELETE', labelsPath());
    expect((cleared.json as { total_count: number }).total_count).toBe(3);
    expect(gh.runner(RUNNER).custom).toEqual([]);
    expect((await api('POST', labelsPath(), { json: { labels: [] } })).status).toBe(422);
    expect((await api('POST', labelsPath(), { json: { nope: 1 } })).status).toBe(422);
  });

  it('organization runners live under /orgs/{org}; a runner is not found in another scope', async () => {
    expect((await api('GET', `/orgs/acme/actions/runners/${ORG_RUNNER}/labels`)).status).toBe(200);
    expect((await api('GET', `/repos/${REPO}/actions/runners/${ORG_RUNNER}/labels`)).status).toBe(
      404,
    );
    expect((await api('GET', `/orgs/acme/actions/runners/${RUNNER}`)).status).toBe(404);
    const runner = await api('GET', `/repos/${REPO}/actions/runners/${RUNNER}`);
    expect(runner.json).toMatchObject({
      id: RUNNER,
      name: `gh-runner-${RUNNER}`,
      os: 'Linux',
      status: 'online',
      busy: false,
      labels: expect.arrayContaining([{ id: expect.any(Number), name: 'e2e', type: 'custom' }]),
    });
    const list = await api('GET', `/repos/${REPO}/actions/runners`);
    expect(list.json).toMatchObject({ total_count: 1, runners: [{ id: RUNNER }] });
  });
});

describe('authentication', () => {
  it('401 without a token or with a wrong one', async () => {
    expect(await api('GET', labelsPath(), { token: null })).toMatchObject({
      status: 401,
      json: { message: 'Requires authentication' },
    });
    expect(await api('GET', labelsPath(), { token: 'ghp_wrong' })).toMatchObject({
      status: 401,
      json: { message: 'Bad credentials' },
    });
  });

  it('a token without admin rights reads labels but may not change them (403)', async () => {
    expect((await api('GET', labelsPath(), { token: gh.readToken })).status).toBe(200);
    const r = await api('DELETE', `${labelsPath()}/e2e`, { token: gh.readToken });
    expect(r).toMatchObject({
      status: 403,
      json: { message: 'Must have admin rights to Repository.' },
    });
    expect(r.headers.get('x-ratelimit-remaining')).not.toBe('0');
    expect(gh.runner(RUNNER).custom).toEqual(['e2e', 'gpu']);
  });

  it('refuses a request without a User-Agent (403)', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const u = new URL(`${gh.url}${labelsPath()}`);
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          headers: { Authorization: `Bearer ${gh.token}` },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(403);
  });
});

describe('rate limits', () => {
  it('every answer carries x-ratelimit-* headers; each request uses one of the quota', async () => {
    const a = await api('GET', labelsPath());
    const b = await api('GET', labelsPath());
    expect(a.headers.get('x-ratelimit-limit')).toBe('5000');
    expect(Number(a.headers.get('x-ratelimit-remaining')) - 1).toBe(
      Number(b.headers.get('x-ratelimit-remaining')),
    );
    expect(b.headers.get('x-ratelimit-resource')).toBe('core');
    expect(Number(b.headers.get('x-ratelimit-reset'))).toBeGreaterThan(Date.now() / 1000);
  });

  it('a used-up primary quota is 403 with remaining 0 until its reset; then requests pass again', async () => {
    gh.setRateLimit({ remaining: 0, resetInSeconds: 1 });
    const limited = await api('GET', labelsPath());
    expect(limited.status).toBe(403);
    expect(limited.headers.get('x-ratelimit-remaining')).toBe('0');
    expect(limited.json).toMatchObject({ message: expect.stringMatching(/rate limit exceeded/) });
    const reset = Number(limited.headers.get('x-ratelimit-reset'));
    await new Promise((r) => setTimeout(r, Math.max(0, reset * 1000 - Date.now()) + 50));
    expect((await api('GET', labelsPath())).status).toBe(200);
  });

  it.each([403, 429] as const)(
    'a forced secondary limit is %i with retry-after, once; the next request passes',
    async (status) => {
      gh.failNext(
        { pathIncludes: '/labels' },
        { kind: 'secondary-rate-limit', retryAfterSeconds: 3, status },
      );
      const r = await api('GET', labelsPath());
      expect(r.status).toBe(status);
      expect(r.headers.get('retry-after')).toBe('3');
      expect(r.json).toMatchObject({ message: expect.stringMatching(/secondary rate limit/) });
      expect((await api('GET', labelsPath())).status).toBe(200);
    },
  );

  it('a forced primary limit (429 variant) says remaining 0 and when it resets', async () => {
    gh.failNext({ method: 'GET' }, { kind: 'primary-rate-limit', resetInSeconds: 60, status: 429 });
    const r = await api('GET', labelsPath());
    expect(r.status).toBe(429);
    expect(r.headers.get('x-ratelimit-remaining')).toBe('0');
    expect(Number(r.headers.get('x-ratelimit-reset')) - Date.now() / 1000).toBeGreaterThan(55);
  });
});

describe('recorded calls and faults', () => {
  it('records method, path, body, which token came and the status sent', async () => {
    gh.failNext({ method: 'POST' }, { kind: 'http', status: 502 });
    await api('POST', labelsPath(), { json: { labels: ['x'] } });
    await api('POST', labelsPath(), { json: { labels: ['x'] }, token: gh.readToken });
    expect(gh.calls.map((c) => [c.method, c.path, c.auth, c.status])).toEqual([
      ['POST', labelsPath(), 'admin', 502],
      ['POST', labelsPath(), 'read', 403],
    ]);
    expect(gh.calls[1]!.body).toEqual({ labels: ['x'] });
  });

  it('a delay fault holds the answer back', async () => {
    gh.failNext({}, { kind: 'delay', ms: 300 });
    const t0 = Date.now();
    expect((await api('GET', labelsPath())).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
  });
});
