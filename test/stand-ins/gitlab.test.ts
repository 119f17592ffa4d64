import { startGitLabStandIn, type GitLabStandIn } from './gitlab';

/**
 * The GitLab stand-in must behave like GitLab REST v4 as described in
 * /work/shared/reference/external-apis.md section 2; these tests pin that behaviour.
 */

const PROJECT = 380;
const RUNNER = 6;

let gl: GitLabStandIn;

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

async function api(
  method: string,
  path: string,
  opts: {
    form?: Record<string, string>;
    json?: unknown;
    headers?: Record<string, string>;
    token?: string | null;
  } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers };
  const token = opts.token === undefined ? gl.token : opts.token;
  if (token !== null) headers['PRIVATE-TOKEN'] = token;
  let body: string | undefined;
  if (opts.form) {
    body = new URLSearchParams(opts.form).toString();
    headers['Content-Type'] = 'application/x-www-form-urlencoded';
  } else if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(`${gl.url}/api/v4${path}`, { method, headers, body });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

beforeEach(async () => {
  gl = await startGitLabStandIn();
  gl.addProject(PROJECT, 'gitlab-org/gitlab-test');
  gl.addRunner(RUNNER);
});

afterEach(async () => {
  await gl.close();
});

describe('authentication', () => {
  it('answers 401 {"message":"401 Unauthorized"} without a valid token', async () => {
    gl.setJob(PROJECT, 8, 'running');
    for (const token of [null, 'glpat-wrong']) {
      const r = await api('GET', `/projects/${PROJECT}/jobs/8`, { token });
      expect([r.status, r.json]).toEqual([401, { message: '401 Unauthorized' }]);
    }
    const runner = await api('GET', `/runners/${RUNNER}`, { token: null });
    expect(runner.status).toBe(401);
  });

  it('accepts PRIVATE-TOKEN and Authorization: Bearer', async () => {
    expect((await api('GET', `/runners/${RUNNER}`)).status).toBe(200);
    const bearer = await api('GET', `/runners/${RUNNER}`, {
      token: null,
      headers: { Authorization: `Bearer ${gl.token}` },
    });
    expect(bearer.status).toBe(200);
    expect(bearer.headers.get('content-type')).toBe('application/json');
  });
});

describe('token scopes', () => {
  const INSUFFICIENT = {
    error: 'insufficient_scope',
    error_description: 'The request requires higher privileges than provided by the access token.',
    scope: 'api',
  };

  it('GET /personal_access_tokens/self lists the scopes, whatever they are', async () => {
    for (const scopes of [['api'], ['read_api'], ['manage_runner'], ['read_user']]) {
      gl.setScopes(scopes);
      const r = await api('GET', '/personal_access_tokens/self');
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ scopes, active: true, revoked: false });
    }
    expect((await api('GET', '/personal_access_tokens/self', { token: 'bad' })).status).toBe(401);
  });

  it('read_api reads but cannot pause: 403 insufficient_scope', async () => {
    gl.setScopes(['read_api']);
    expect((await api('GET', `/runners/${RUNNER}`)).status).toBe(200);
    const put = await api('PUT', `/runners/${RUNNER}`, { form: { paused: 'true' } });
    expect([put.status, put.json]).toEqual([403, INSUFFICIENT]);
    expect(gl.runner(RUNNER).paused).toBe(false);
  });

  it('manage_runner pauses runners but reads no jobs', async () => {
    gl.setScopes(['manage_runner']);
    gl.setJob(PROJECT, 8, 'running');
    expect((await api('PUT', `/runners/${RUNNER}`, { form: { paused: 'true' } })).status).toBe(200);
    const job = await api('GET', `/projects/${PROJECT}/jobs/8`);
    expect([job.status, job.json]).toEqual([403, INSUFFICIENT]);
  });
});

describe('jobs', () => {
  it('follows a job from pending (no runner yet) to running to success', async () => {
    gl.setJob(PROJECT, 8, 'pending', { runnerId: RUNNER });
    const pending = (await api('GET', `/projects/${PROJECT}/jobs/8`)).json;
    expect(pending).toMatchObject({
      id: 8,
      status: 'pending',
      started_at: null,
      finished_at: null,
      runner: null,
      pipeline: { project_id: PROJECT, status: 'pending' },
      web_url: `${gl.url}/gitlab-org/gitlab-test/-/jobs/8`,
    });

    gl.setJob(PROJECT, 8, 'running');
    const running = (await api('GET', `/projects/${PROJECT}/jobs/8`)).json;
    expect(running).toMatchObject({
      status: 'running',
      started_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT.*Z$/),
      finished_at: null,
      runner: { id: RUNNER, paused: false, active: true, status: 'online' },
    });

    gl.setJob(PROJECT, 8, 'success');
    const done = (await api('GET', `/projects/${PROJECT}/jobs/8`)).json as Record<string, unknown>;
    expect(done).toMatchObject({ status: 'success', finished_at: expect.any(String) });
    expect(done).not.toHaveProperty('failure_reason');
  });

  it('reports failure_reason only for failed jobs, and accepts every GitLab status', async () => {
    gl.setJob(PROJECT, 9, 'failed');
    expect((await api('GET', `/projects/${PROJECT}/jobs/9`)).json).toMatchObject({
      status: 'failed',
      failure_reason: 'script_failure',
    });
    for (const status of ['canceling', 'canceled', 'manual', 'scheduled', 'skipped']) {
      gl.setJob(PROJECT, 10, status);
      expect((await api('GET', `/projects/${PROJECT}/jobs/10`)).json).toMatchObject({ status });
    }
    expect(() => gl.setJob(PROJECT, 10, 'cancelled')).toThrow(/unknown GitLab job status/);
  });

  it('finds a project by URL-encoded path', async () => {
    gl.setJob(PROJECT, 8, 'running');
    const r = await api('GET', `/projects/${encodeURIComponent('gitlab-org/gitlab-test')}/jobs/8`);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ id: 8 });
    gl.setJob('gitlab-org/gitlab-test', 11, 'created');
    expect((await api('GET', `/projects/${PROJECT}/jobs/11`)).status).toBe(200);
  });

  it('answers 404 for a missing job or project, and 400 for a non-numeric job id', async () => {
    const job = await api('GET', `/projects/${PROJECT}/jobs/404`);
    expect([job.status, job.json]).toEqual([404, { message: '404 Not found' }]);
    const project = await api('GET', '/projects/999/jobs/1');
    expect([project.status, project.json]).toEqual([404, { message: '404 Project Not Found' }]);
    const invalid = await api('GET', `/projects/${PROJECT}/jobs/abc`);
    expect([invalid.status, invalid.json]).toEqual([400, { error: 'job_id is invalid' }]);
  });

  it('has no GET /api/v4/jobs/:id for tokens: an unknown route', async () => {
    gl.setJob(PROJECT, 8, 'running');
    const r = await api('GET', '/jobs/8');
    expect([r.status, r.json]).toEqual([404, { error: '404 Not Found' }]);
    const other = await api('GET', '/projects/380/pipelines/1/bogus', { token: null });
    expect([other.status, other.json]).toEqual([404, { error: '404 Not Found' }]);
  });
});

describe('runners', () => {
  it('returns runner details; unknown runners are 404', async () => {
    const r = await api('GET', `/runners/${RUNNER}`);
    expect(r.json).toMatchObject({
      id: RUNNER,
      active: true,
      paused: false,
      status: 'online',
      tag_list: expect.any(Array),
    });
    const missing = await api('GET', '/runners/77');
    expect([missing.status, missing.json]).toEqual([404, { message: '404 Not found' }]);
  });

  it('pauses with paused=true (form) and unpauses with paused=false (JSON)', async () => {
    const pause = await api('PUT', `/runners/${RUNNER}`, { form: { paused: 'true' } });
    expect(pause.status).toBe(200);
    expect(pause.json).toMatchObject({ id: RUNNER, paused: true, active: false, status: 'paused' });
    expect((await api('GET', `/runners/${RUNNER}`)).json).toMatchObject({ status: 'paused' });

    const resume = await api('PUT', `/runners/${RUNNER}`, { json: { paused: false } });
    expect(resume.json).toMatchObject({ paused: false, active: true, status: 'online' });
    expect(gl.runner(RUNNER)).toEqual({ id: RUNNER, paused: false, pausedHistory: [true, false] });
  });

  it('still accepts the deprecated active flag', async () => {
    await api('PUT', `/runners/${RUNNER}`, { json: { active: false } });
    await api('PUT', `/runners/${RUNNER}`, { form: { active: 'true' } });
    expect(gl.runner(RUNNER).pausedHistory).toEqual([true, false]);
  });

  it('rejects active together with paused, an empty update and a non-boolean', async () => {
    const both = await api('PUT', `/runners/${RUNNER}`, { json: { active: false, paused: true } });
    expect([both.status, both.json]).toEqual([
      400,
      { error: 'active, paused are mutually exclusive' },
    ]);
    const none = await api('PUT', `/runners/${RUNNER}`, { json: {} });
    expect([none.status, none.json]).toEqual([
      400,
      {
        error:
          'description, active, paused, tag_list, run_untagged, locked, access_level, maximum_timeout, maintenance_note are missing, at least one parameter must be provided',
      },
    ]);
    const junk = await api('PUT', `/runners/${RUNNER}`, { form: { paused: 'maybe' } });
    expect([junk.status, junk.json]).toEqual([400, { error: 'paused is invalid' }]);
    expect(gl.runner(RUNNER)).toEqual({ id: RUNNER, paused: false, pausedHistory: [] });
  });

  it('does not record updates that leave paused alone', async () => {
    const r = await api('PUT', `/runners/${RUNNER}`, { form: { description: 'ci-vm-6b' } });
    expect(r.json).toMatchObject({ description: 'ci-vm-6b', paused: false });
    expect(gl.runner(RUNNER).pausedHistory).toEqual([]);
    const missing = await api('PUT', '/runners/77', { form: { paused: 'true' } });
    expect([missing.status, missing.json]).toEqual([404, { message: '404 Not found' }]);
  });

  it('lists the jobs of a runner, filtered by status', async () => {
    gl.setJob(PROJECT, 20, 'running', { runnerId: RUNNER });
    gl.setJob(PROJECT, 21, 'success', { runnerId: RUNNER });
    const r = await api('GET', `/runners/${RUNNER}/jobs?status=running`);
    expect((r.json as Array<{ id: number }>).map((j) => j.id)).toEqual([20]);
  });
});

describe('faults', () => {
  it('rate-limit: 429 text/plain "Retry later" with Retry-After and RateLimit-* headers', async () => {
    gl.failNext({ pathIncludes: '/runners/' }, { kind: 'rate-limit', retryAfterSeconds: 30 });
    const t0 = Math.floor(Date.now() / 1000);
    const r = await api('GET', `/runners/${RUNNER}`);
    expect(r.status).toBe(429);
    expect(r.headers.get('content-type')).toBe('text/plain');
    expect(r.text).toBe('Retry later\n');
    expect(r.headers.get('retry-after')).toBe('30');
    expect(r.headers.get('ratelimit-remaining')).toBe('0');
    expect(r.headers.get('ratelimit-name')).toBe('throttle_authenticated_api');
    const reset = Number(r.headers.get('ratelimit-reset'));
    expect(reset).toBeGreaterThanOrEqual(t0 + 30);
    expect(new Date(r.headers.get('ratelimit-resettime')!).getTime()).toBe(reset * 1000);
    expect((await api('GET', `/runners/${RUNNER}`)).status).toBe(200);
  });

  it('http: custom status, body and headers, `times` times, only for matching methods', async () => {
    gl.failNext(
      { method: 'PUT' },
      {
        kind: 'http',
        status: 502,
        body: '<html>502 Bad Gateway</html>',
        headers: { 'X-Fake': '1' },
      },
      2,
    );
    expect((await api('GET', `/runners/${RUNNER}`)).status).toBe(200);
    for (let i = 0; i < 2; i++) {
      const r = await api('PUT', `/runners/${RUNNER}`, { form: { paused: 'true' } });
      expect([r.status, r.text, r.headers.get('x-fake')]).toEqual([
        502,
        '<html>502 Bad Gateway</html>',
        '1',
      ]);
    }
    expect(gl.runner(RUNNER).pausedHistory).toEqual([]);
    expect((await api('PUT', `/runners/${RUNNER}`, { form: { paused: 'true' } })).status).toBe(200);
  });

  it('http: a default JSON message body; clearFaults drops pending faults', async () => {
    gl.failNext({}, { kind: 'http', status: 500 }, Infinity);
    const r = await api('GET', `/runners/${RUNNER}`);
    expect([r.status, r.json]).toEqual([500, { message: '500 Internal Server Error' }]);
    gl.clearFaults();
    expect((await api('GET', `/runners/${RUNNER}`)).status).toBe(200);
  });

  it('delay: holds the response, then handles the request', async () => {
    gl.failNext({ pathIncludes: '/runners' }, { kind: 'delay', ms: 120 });
    const t0 = Date.now();
    const r = await api('PUT', `/runners/${RUNNER}`, { form: { paused: 'true' } });
    expect(r.status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(110);
    expect(gl.runner(RUNNER).paused).toBe(true);
  });
});

describe('call log', () => {
  it('records every request in order, with query, body and final status', async () => {
    gl.failNext({ method: 'GET' }, { kind: 'rate-limit', retryAfterSeconds: 1 });
    await api('GET', `/runners/${RUNNER}`);
    await api('PUT', `/runners/${RUNNER}`, { json: { paused: true } });
    await api('GET', '/jobs/5?x=1', { token: null });
    expect(
      gl.calls.map(({ method, path, query, body, status }) => ({
        method,
        path,
        query,
        body,
        status,
      })),
    ).toEqual([
      { method: 'GET', path: `/api/v4/runners/${RUNNER}`, query: {}, body: {}, status: 429 },
      {
        method: 'PUT',
        path: `/api/v4/runners/${RUNNER}`,
        query: {},
        body: { paused: true },
        status: 200,
      },
      { method: 'GET', path: '/api/v4/jobs/5', query: { x: '1' }, body: {}, status: 404 },
    ]);
  });
});
