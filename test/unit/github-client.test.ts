import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GitHubClient, rateLimitWaitMs } from '../../activities/github/client';

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A GitHub whose next answers the test sets; it records every request. */
async function fakeGitHub() {
  const seen: Seen[] = [];
  let answer: (r: Seen) => {
    status: number;
    body?: unknown;
    headers?: Record<string, string>;
  } = () => ({ status: 200, body: {} });
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c));
    req.on('end', () => {
      const r = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      seen.push(r);
      const a = answer(r);
      res.writeHead(a.status, { 'Content-Type': 'application/json', ...a.headers });
      res.end(a.body === undefined ? '' : JSON.stringify(a.body));
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    answer: (fn: typeof answer) => (answer = fn),
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}

describe('GitHubClient', () => {
  let gh: Awaited<ReturnType<typeof fakeGitHub>>;
  let client: GitHubClient;
  const counted: Array<[string, string]> = [];

  beforeAll(async () => {
    gh = await fakeGitHub();
    client = new GitHubClient(`${gh.url}/`, 'ghp_secret', 5000, {
      onResponse: (op, code) => counted.push([op, code]),
    });
  });
  afterAll(() => gh.close());
  beforeEach(() => {
    gh.seen.length = 0;
    counted.length = 0;
  });

  it('asks for a job at /repos/{owner}/{repo}/actions/jobs/{id} with the token, API version and a User-Agent', async () => {
    gh.answer(() => ({ status: 200, body: { id: 5, status: 'in_progress', conclusion: null } }));
    await expect(client.jobState('acme/app', '5')).resolves.toBe('running');
    expect(gh.seen).toHaveLength(1);
    expect(gh.seen[0]).toMatchObject({ method: 'GET', url: '/repos/acme/app/actions/jobs/5' });
    expect(gh.seen[0]!.headers).toMatchObject({
      authorization: 'Bearer ghp_secret',
      accept: 'application/vnd.github+json',
      'x-github-api-version': '2022-11-28',
      'user-agent': 'e2epool',
    });
    expect(counted).toEqual([['job_status', '200']]);
  });

  it.each([
    ['queued', null, 'running'],
    ['waiting', null, 'running'],
    ['pending', null, 'running'],
    ['in_progress', null, 'running'],
    ['completed', 'success', 'success'],
    ['completed', 'failure', 'failure'],
    ['completed', 'timed_out', 'failure'],
    ['completed', 'cancelled', 'canceled'],
    // A finished job that ended no other way: the runner is reset, not left to the TTL.
    ['completed', 'skipped', 'canceled'],
    ['completed', 'action_required', 'canceled'],
  ])('maps status %s, conclusion %s to %s', async (status, conclusion, state) => {
    gh.answer(() => ({ status: 200, body: { id: 6, status, conclusion } }));
    await expect(client.jobState('acme/app', '6')).resolves.toBe(state);
  });

  it.each([
    ['acme', '5'],
    ['acme/app/x', '5'],
    ['../app', '5'],
    ['acme/..', '5'],
    ['acme/app', '..'],
    ['acme/app', ''],
  ])('refuses repository %j job %j without a request', async (repo, job) => {
    await expect(client.jobState(repo, job)).rejects.toMatchObject({
      type: 'PermanentFailure',
      nonRetryable: true,
    });
    expect(gh.seen).toEqual([]);
  });

  it('reads, removes and adds runner labels at the repository or organization runner', async () => {
    const labels = [
      { id: 1, name: 'self-hosted', type: 'read-only' },
      { id: 9, name: 'e2e', type: 'custom' },
    ];
    gh.answer(() => ({ status: 200, body: { total_count: 2, labels } }));
    await expect(client.runnerLabels({ repo: 'acme/app' }, 7)).resolves.toEqual(labels);
    await expect(client.removeLabel({ org: 'acme' }, 7, 'e2e')).resolves.toBe(true);
    await client.addLabels({ repo: 'acme/app' }, 7, ['e2e']);
    expect(gh.seen.map((s) => `${s.method} ${s.url} ${s.body}`)).toEqual([
      'GET /repos/acme/app/actions/runners/7/labels ',
      'DELETE /orgs/acme/actions/runners/7/labels/e2e ',
      'POST /repos/acme/app/actions/runners/7/labels {"labels":["e2e"]}',
    ]);
    expect(counted).toEqual([
      ['runner_labels', '200'],
      ['label_remove', '200'],
      ['label_add', '200'],
    ]);
  });

  it("removing a label the runner does not carry answers false (GitHub's 404), not a failure", async () => {
    gh.answer(() => ({ status: 404, body: { message: 'Not Found' } }));
    await expect(client.removeLabel({ repo: 'acme/app' }, 7, 'e2e')).resolves.toBe(false);
    // Anywhere else a 404 is permanent: the runner or the job is not there.
    await expect(client.runnerLabels({ repo: 'acme/app' }, 7)).rejects.toMatchObject({
      type: 'PermanentFailure',
      message: expect.stringContaining('404'),
    });
  });

  it.each([
    [401, 'PermanentFailure', { message: 'Bad credentials' }],
    [403, 'PermanentFailure', { message: 'Resource not accessible by personal access token' }],
    [404, 'PermanentFailure', { message: 'Not Found' }],
    [422, 'PermanentFailure', { message: 'Validation Failed' }],
    [500, 'GitHubUnavailable', { message: 'Server Error' }],
    [503, 'GitHubUnavailable', 'upstream down'],
  ])('classifies %i as %s', async (status, type, body) => {
    gh.answer(() => ({ status, body }));
    const err = await client.jobState('acme/app', '5').catch((e: unknown) => e);
    expect(err).toMatchObject({ type, nonRetryable: type === 'PermanentFailure' });
    // The token is never part of an error.
    expect(String((err as Error).message)).not.toContain('ghp_secret');
  });

  it('a rate-limited answer is transient and asks the next attempt to wait (Retry-After)', async () => {
    gh.answer(() => ({
      status: 403,
      body: { message: 'You have exceeded a secondary rate limit.' },
      headers: { 'retry-after': '7' },
    }));
    await expect(client.jobState('acme/app', '5')).rejects.toMatchObject({
      type: 'GitHubRateLimited',
      nonRetryable: false,
      nextRetryDelay: 7000,
    });
  });

  it('a call that gets no answer is GitHubUnavailable, counted as "error"', async () => {
    const closed = createServer();
    await new Promise<void>((ok) => closed.listen(0, '127.0.0.1', ok));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((ok) => closed.close(() => ok()));
    const seen: Array<[string, string]> = [];
    const c = new GitHubClient(`http://127.0.0.1:${port}`, 't', 5000, {
      onResponse: (op, code) => seen.push([op, code]),
    });
    await expect(c.runnerLabels({ org: 'acme' }, 7)).rejects.toMatchObject({
      type: 'GitHubUnavailable',
    });
    expect(seen).toEqual([['runner_labels', 'error']]);
  });
});

describe('rateLimitWaitMs', () => {
  const now = 1_800_000_000_000;
  const res = (status: number, headers: Record<string, string>, message?: string) => ({
    status,
    headers,
    data: message === undefined ? {} : { message },
  });

  it.each([
    ['429 with retry-after', res(429, { 'retry-after': '30' }), 30_000],
    ['403 with retry-after (secondary limit)', res(403, { 'retry-after': '0' }), 0],
    [
      '403 primary limit: remaining 0, wait until the reset',
      res(403, { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(now / 1000 + 90) }),
      90_000,
    ],
    [
      '429 primary limit whose reset has passed: a second',
      res(429, { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(now / 1000 - 5) }),
      1000,
    ],
    ['429 with no header: a minute', res(429, {}), 60_000],
    [
      '403 saying secondary rate limit, no header: a minute',
      res(403, {}, 'You have exceeded a secondary rate limit'),
      60_000,
    ],
    [
      '403 refusal with a quota left: no rate limit',
      res(403, { 'x-ratelimit-remaining': '4999' }, 'Must have admin rights to Repository.'),
      undefined,
    ],
    ['500: no rate limit', res(500, { 'retry-after': '5' }), undefined],
  ])('%s', (_what, r, expected) => {
    expect(rateLimitWaitMs(r, now)).toBe(expected);
  });
});
