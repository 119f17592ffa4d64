import { createHmac } from 'node:crypto';
import { request } from 'node:http';
import { gzipSync } from 'node:zlib';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';

/**
 * Webhooks (SPEC §9): GitLab job events and GitHub workflow_job events
 * finalize the matching active checkpoint with source `webhook`; secrets are
 * required and checked in constant time; GitHub's signature covers the raw
 * bytes; answers are fast and duplicates harmless.
 */
const R = testRunners([
  'gitlab',
  'otherRunner',
  'github',
  'race',
  'form',
  'ghActions',
  'ghOther',
  'glTwin',
  'ghTwin',
]);
const GL_SECRET = 'gl-webhook-secret';
const GH_SECRET = "It's a Secret to Everybody";
/** GitHub runners (no GitHub token configured here: their labels are left alone). */
const GH_RUNNER = { ci_adapter: 'github', github_repo: 'acme/app', github_pause_labels: '[e2e]' };
const GITLAB_IDS = { gitlab: 61, otherRunner: 62, race: 64, glTwin: 66 } as const;

describe('webhooks', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let unconfigured: TestController;

  beforeAll(async () => {
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    const inventory = `runners:\n${(Object.keys(GITLAB_IDS) as Array<keyof typeof GITLAB_IDS>)
      .map((k) => bareMetalRunnerYaml(R[k], { gitlab_runner_id: GITLAB_IDS[k] }))
      .join(
        '',
      )}${bareMetalRunnerYaml(R.ghActions, { ...GH_RUNNER, github_runner_id: 81 })}${bareMetalRunnerYaml(R.ghOther, { ...GH_RUNNER, github_runner_id: 82 })}${[
      R.github,
      R.form,
      R.ghTwin,
    ]
      .map((r) => bareMetalRunnerYaml(r, { ci_adapter: 'github', github_repo: 'acme/app' }))
      .join('')}`;
    [c, unconfigured] = await Promise.all([
      startTestController({
        agents,
        inventory,
        env: {
          E2EPOOL_GITLAB_WEBHOOK_SECRET: GL_SECRET,
          E2EPOOL_GITHUB_WEBHOOK_SECRET: GH_SECRET,
        },
      }),
      startTestController({ agents: new FakeAgents(), inventory: 'runners: []\n' }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([c?.stop(), unconfigured?.stop()]);
  });

  const gitlabHook = (url: string, body: string, token: string | null = GL_SECRET) =>
    fetch(`${url}/webhooks/gitlab`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-gitlab-event': 'Job Hook',
        ...(token !== null ? { 'x-gitlab-token': token } : {}),
      },
      body,
    });
  const sign = (body: string, secret = GH_SECRET) =>
    `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
  const githubHook = (
    url: string,
    body: string,
    o: { signature?: string; event?: string; contentType?: string } = {},
  ) =>
    fetch(`${url}/webhooks/github`, {
      method: 'POST',
      headers: {
        'content-type': o.contentType ?? 'application/json',
        'x-github-event': o.event ?? 'workflow_job',
        'x-hub-signature-256': o.signature ?? sign(body),
      },
      body,
    });
  const jobEvent = (buildId: number, status: string, runnerId: number | null) =>
    JSON.stringify({
      object_kind: 'build',
      build_id: buildId,
      build_status: status,
      runner: runnerId === null ? null : { id: runnerId, description: 'ci' },
      project_id: 380,
    });
  const answer = async (res: Response) => ({ status: res.status, body: await res.json() });
  const stateOf = async (r: TestRunner, name: string) =>
    (await restClient(() => c.api.url, r.token).status(name)).body as {
      state: string;
      finalize_source: string | null;
      finalize_status: string | null;
    };

  it('refuses without a configured secret (503), with a wrong one (403), and bad JSON (400)', async () => {
    expect(await answer(await gitlabHook(unconfigured.api.url, '{}'))).toEqual({
      status: 503,
      body: { detail: 'GitLab webhook not configured' },
    });
    expect(await answer(await githubHook(unconfigured.api.url, '{}'))).toEqual({
      status: 503,
      body: { detail: 'GitHub webhook not configured' },
    });
    expect(await answer(await gitlabHook(c.api.url, '{}', 'wrong'))).toEqual({
      status: 403,
      body: { detail: 'Invalid webhook token' },
    });
    expect(await answer(await gitlabHook(c.api.url, '{}', null))).toEqual({
      status: 403,
      body: { detail: 'Invalid webhook token' },
    });
    expect(
      await answer(await githubHook(c.api.url, '{}', { signature: sign('{}', 'not the secret') })),
    ).toEqual({ status: 403, body: { detail: 'Invalid webhook signature' } });
    expect(await answer(await gitlabHook(c.api.url, '{"object_kind":'))).toEqual({
      status: 400,
      body: { detail: 'Invalid JSON' },
    });
    expect((await githubHook(c.api.url, 'not json')).status).toBe(400);
    // Anything else: 200 and nothing happens.
    expect(await answer(await gitlabHook(c.api.url, '{"object_kind":"push"}'))).toEqual({
      status: 200,
      body: { ok: true },
    });
  });

  it('checks the GitLab token before reading the body: a wrong one is refused with the body still unsent', async () => {
    // Declares half a megabyte and sends none of it: only an answer from the headers alone comes back.
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const url = new URL(`${c.api.url}/webhooks/gitlab`);
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          method: 'POST',
          path: url.pathname,
          headers: {
            'content-type': 'application/json',
            'content-length': String(512 * 1024),
            'x-gitlab-token': 'wrong',
          },
          timeout: 15_000,
        },
        (r) => {
          const chunks: Buffer[] = [];
          r.on('data', (b: Buffer) => chunks.push(b));
          r.on('end', () =>
            resolve({ status: r.statusCode!, body: Buffer.concat(chunks).toString() }),
          );
        },
      );
      req.on('timeout', () => req.destroy(new Error('no answer before the body was sent')));
      req.on('error', reject);
      req.flushHeaders();
    });
    expect(res).toEqual({ status: 403, body: JSON.stringify({ detail: 'Invalid webhook token' }) });
  });

  it('reads at most 1 MB of a body (413) and never inflates one (415), whoever signed it', async () => {
    const big = JSON.stringify({ object_kind: 'push', pad: 'x'.repeat(1024 * 1024) });
    expect(await answer(await gitlabHook(c.api.url, big))).toEqual({
      status: 413,
      body: { detail: 'Request body too large (at most 1048576 bytes)' },
    });
    expect((await answer(await githubHook(c.api.url, big))).status).toBe(413);
    // A gzip bomb in miniature: 1 KB that inflates to 4 MB.
    const bomb = gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x20));
    for (const [hook, headers] of [
      ['gitlab', { 'x-gitlab-token': GL_SECRET }],
      [
        'github',
        {
          'x-github-event': 'workflow_job',
          'x-hub-signature-256': `sha256=${createHmac('sha256', GH_SECRET).update(bomb).digest('hex')}`,
        },
      ],
    ] as const) {
      const res = await fetch(`${c.api.url}/webhooks/${hook}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', ...headers },
        body: bomb,
      });
      expect(await answer(res)).toEqual({
        status: 415,
        body: { detail: 'Content-Encoding is not supported: send the body uncompressed' },
      });
    }
  });

  it('a GitLab job event finalizes the job’s checkpoint (source webhook), only on the runner that ran it; duplicates are harmless', async () => {
    const r = R.gitlab;
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '71001')).body.name as string;
    const other = (
      await restClient(() => c.api.url, R.otherRunner.token).create(R.otherRunner.id, '71001')
    ).body.name as string;
    // Still running, or run by another GitLab runner: nothing.
    expect(
      (await gitlabHook(c.api.url, jobEvent(71001, 'running', GITLAB_IDS.gitlab))).status,
    ).toBe(200);
    const t = Date.now();
    const res = await gitlabHook(c.api.url, jobEvent(71001, 'failed', GITLAB_IDS.gitlab));
    expect(await answer(res)).toEqual({ status: 200, body: { ok: true } });
    expect(Date.now() - t).toBeLessThan(1000);
    await waitFor('the reset', async () => (await stateOf(r, name)).state === 'reset');
    expect(await stateOf(r, name)).toMatchObject({
      finalize_status: 'failure',
      finalize_source: 'webhook',
    });
    expect((await stateOf(R.otherRunner, other)).state).toBe('created');
    // A late duplicate changes nothing.
    expect((await gitlabHook(c.api.url, jobEvent(71001, 'failed', GITLAB_IDS.gitlab))).status).toBe(
      200,
    );
    expect((await operations(c.ds, name)).filter((o) => o.operation === 'reset_cmd')).toHaveLength(
      1,
    );
  });

  it('a GitHub workflow_job completed event finalizes; a body re-serialized differently fails the signature', async () => {
    const r = R.github;
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '88001')).body.name as string;
    const event = {
      action: 'completed',
      workflow_job: { id: 88001, conclusion: 'cancelled', runner_id: 5 },
    };
    const raw = JSON.stringify(event, null, 2);
    // Same JSON, other bytes: the signature of the original does not match.
    expect(
      (await githubHook(c.api.url, JSON.stringify(event), { signature: sign(raw) })).status,
    ).toBe(403);
    // Another event type, or not completed: nothing.
    expect((await githubHook(c.api.url, raw, { event: 'check_run' })).status).toBe(200);
    const queued = JSON.stringify({
      action: 'queued',
      workflow_job: { id: 88001, conclusion: null },
    });
    expect((await githubHook(c.api.url, queued)).status).toBe(200);
    expect((await stateOf(r, name)).state).toBe('created');

    expect(await answer(await githubHook(c.api.url, raw))).toEqual({
      status: 200,
      body: { ok: true },
    });
    await waitFor('the reset', async () => (await stateOf(r, name)).state === 'reset');
    expect(await stateOf(r, name)).toMatchObject({
      finalize_status: 'canceled',
      finalize_source: 'webhook',
    });
  });

  it('a GitHub event finalizes only on the runner whose github_runner_id ran it; a GitLab event never on a GitHub runner', async () => {
    const a = restClient(() => c.api.url, R.ghActions.token);
    const b = restClient(() => c.api.url, R.ghOther.token);
    const name = (await a.create(R.ghActions.id, '88003')).body.name as string;
    const other = (await b.create(R.ghOther.id, '88003')).body.name as string;
    // A GitLab job with the same number is another job.
    expect((await gitlabHook(c.api.url, jobEvent(88003, 'success', null))).status).toBe(200);
    const raw = JSON.stringify({
      action: 'completed',
      workflow_job: { id: 88003, conclusion: 'failure', runner_id: 81 },
    });
    expect((await githubHook(c.api.url, raw)).status).toBe(200);
    await waitFor('the reset', async () => (await stateOf(R.ghActions, name)).state === 'reset');
    expect(await stateOf(R.ghActions, name)).toMatchObject({
      finalize_status: 'failure',
      finalize_source: 'webhook',
    });
    expect((await stateOf(R.ghOther, other)).state).toBe('created');
  });

  it('each CI system’s events finalize only its own runners’ checkpoints, whatever the job id', async () => {
    const gl = restClient(() => c.api.url, R.glTwin.token);
    const gh = restClient(() => c.api.url, R.ghTwin.token);
    // The same job number in both CI systems: two different jobs.
    const glName = (await gl.create(R.glTwin.id, '99001')).body.name as string;
    const ghName = (await gh.create(R.ghTwin.id, '99001')).body.name as string;

    // GitHub's job 99001 ended (no runner named): only the GitHub runner's checkpoint.
    const ghEvent = JSON.stringify({
      action: 'completed',
      workflow_job: { id: 99001, conclusion: 'failure' },
    });
    expect((await githubHook(c.api.url, ghEvent)).status).toBe(200);
    await waitFor(
      'the GitHub reset',
      async () => (await stateOf(R.ghTwin, ghName)).state === 'reset',
    );
    expect(await stateOf(R.ghTwin, ghName)).toMatchObject({ finalize_source: 'webhook' });
    expect((await stateOf(R.glTwin, glName)).state).toBe('created');

    // And the other way: GitLab's job 99002 ends only the GitLab runner's checkpoint.
    const ghNext = (await gh.create(R.ghTwin.id, '99002')).body.name as string;
    await gl.finalize(glName, 'success');
    await waitFor(
      'the GitLab cleanup',
      async () => (await stateOf(R.glTwin, glName)).state === 'deleted',
    );
    const glNext = (await gl.create(R.glTwin.id, '99002')).body.name as string;
    expect((await gitlabHook(c.api.url, jobEvent(99002, 'failed', null))).status).toBe(200);
    await waitFor(
      'the GitLab reset',
      async () => (await stateOf(R.glTwin, glNext)).state === 'reset',
    );
    expect((await stateOf(R.ghTwin, ghNext)).state).toBe('created');
  });

  it('GitHub’s form-encoded deliveries are read from their payload field', async () => {
    const r = R.form;
    const name = (await restClient(() => c.api.url, r.token).create(r.id, '88002')).body
      .name as string;
    const body = new URLSearchParams({
      payload: JSON.stringify({
        action: 'completed',
        workflow_job: { id: 88002, conclusion: 'success' },
      }),
    }).toString();
    expect(
      (await githubHook(c.api.url, body, { contentType: 'application/x-www-form-urlencoded' }))
        .status,
    ).toBe(200);
    await waitFor('the cleanup', async () => (await stateOf(r, name)).state === 'deleted');
  });

  it('a webhook, a hook finalize and a repeated webhook racing: exactly one reset', async () => {
    const r = R.race;
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '71002')).body.name as string;
    const results = await Promise.all([
      gitlabHook(c.api.url, jobEvent(71002, 'failed', GITLAB_IDS.race)),
      api.finalize(name, 'failure'),
      gitlabHook(c.api.url, jobEvent(71002, 'failed', GITLAB_IDS.race)),
    ]);
    expect(results.map((x) => x.status)).toEqual([200, 202, 200]);
    await waitFor('the reset', async () => (await stateOf(r, name)).state === 'reset');
    const ops = await operations(c.ds, name);
    expect(ops.filter((o) => o.operation === 'reset_cmd' && o.result === 'ok')).toHaveLength(1);
    expect(ops.filter((o) => o.operation === 'finalize_queued')).toHaveLength(1);
  });
});
