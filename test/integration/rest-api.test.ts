import { checkpointWorkflowId, stateQuery } from '../../common/checkpoint';
import { FakeAgents } from '../helpers/fake-agents';
import { restClient, startTestController, type TestController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';

/**
 * One runner per test (so one workflow id on the shared Temporal server per
 * test), including the tests whose request is refused before any workflow is
 * touched: a refusal that wrongly went through must not disturb another test.
 */
const AUTH = ['noHeader', 'basic', 'bearerOnly', 'unknownToken', 'prefix', 'suffix'] as const;
const INVALID_CREATE = [
  'badRunnerId',
  'jobIdSpace',
  'jobIdLong',
  'jobIdNumber',
  'runnerIdNull',
  'projectIdBad',
  'projectIdDotDot',
  'projectIdDot',
  'projectIdSlash',
  'projectIdRepoDotDot',
  'projectIdNul',
  'runnerIdNul',
  'jobIdNul',
  'callerNul',
] as const;
const INVALID_FINALIZE = [
  'finGitlabStatus',
  'finBadName',
  'finBadSource',
  'finNoStatus',
  'finNameNul',
  'finStatusNul',
  'finSourceNul',
] as const;
const R = testRunners([
  ...AUTH,
  ...INVALID_CREATE,
  ...INVALID_FINALIZE,
  'missingFields',
  'notJson',
  'unknownRunner',
  'otherRunner',
  'otherRunnerVictim',
  'race',
  'cool',
  'finUnknown',
  'finOther',
  'finOtherOwner',
  'statusOk',
  'statusOther',
  'statusOtherOwner',
  'statusNul',
  'source',
  'ready',
  'notConnected',
  'readinessFails',
]);
const CONNECTED: TestRunner[] = [R.race, R.cool, R.source, R.ready];

describe('REST API status paths (every status of /checkpoint/create, /finalize, /status, /runner/readiness)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  const as = (r: TestRunner | string) =>
    restClient(() => c.api.url, typeof r === 'string' ? r : r.token);

  beforeAll(async () => {
    for (const r of CONNECTED) agents.connect(r.id, new Date(0));
    agents.onExec = (runnerId, cmd) =>
      runnerId === R.readinessFails.id && cmd === '/opt/ready.sh'
        ? { exitCode: 3, stdout: '', stderr: 'disk full' }
        : { exitCode: 0, stdout: '', stderr: '' };
    c = await startTestController({
      inventory: `runners:\n${Object.values(R)
        .map((r) =>
          bareMetalRunnerYaml(r, {
            reset_cmd: '/opt/reset.sh',
            ...(r === R.readinessFails || r === R.notConnected
              ? { readiness_cmd: '/opt/ready.sh' }
              : {}),
          }),
        )
        .join('')}`,
      agents,
      env: { E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '2' },
    });
  });
  afterAll(async () => c?.stop());

  /** A checkpoint of this test's own, still `created`. */
  async function created(r: TestRunner, jobId = '77'): Promise<string> {
    const res = await as(r).create(r.id, jobId);
    expect(res.status).toBe(201);
    return res.body.name as string;
  }

  describe('authentication', () => {
    it.each([
      ['no Authorization header', 'noHeader', 401, () => ({}), 'Invalid authorization header'],
      [
        'a non-Bearer scheme',
        'basic',
        401,
        () => ({ authorization: 'Basic dXNlcjpwdw==' }),
        'Invalid authorization header',
      ],
      // HTTP trims trailing white space, so `Bearer ` arrives as `Bearer`.
      [
        '"Bearer" without a token',
        'bearerOnly',
        401,
        () => ({ authorization: 'Bearer ' }),
        'Invalid authorization header',
      ],
      [
        'an unknown token',
        'unknownToken',
        403,
        () => ({ authorization: 'Bearer nope' }),
        'Invalid token',
      ],
      [
        'a prefix of a real token',
        'prefix',
        403,
        () => ({ authorization: `Bearer ${R.prefix.token.slice(0, -1)}` }),
        'Invalid token',
      ],
      [
        'a real token with a suffix',
        'suffix',
        403,
        () => ({ authorization: `Bearer ${R.suffix.token}x` }),
        'Invalid token',
      ],
    ] as const)('%s → %i', async (_what, label, status, headers, detail) => {
      const res = await fetch(`${c.api.url}/checkpoint/create`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers() },
        body: JSON.stringify({ runner_id: R[label].id, job_id: '1' }),
      });
      expect(res.status).toBe(status);
      expect(await res.json()).toEqual({ detail });
    });

    it('checks the token before the body', async () => {
      expect(await as('wrong').call('POST', '/checkpoint/create', {})).toEqual({
        status: 403,
        body: { detail: 'Invalid token' },
      });
    });
  });

  describe('POST /checkpoint/create', () => {
    it('answers 422 with a list naming each missing field', async () => {
      const res = await as(R.missingFields).call('POST', '/checkpoint/create', {});
      expect(res.status).toBe(422);
      expect(res.body.detail).toEqual([
        expect.objectContaining({
          type: 'missing',
          loc: ['body', 'runner_id'],
          msg: 'Field required',
        }),
        expect.objectContaining({
          type: 'missing',
          loc: ['body', 'job_id'],
          msg: 'Field required',
        }),
      ]);
    });

    it.each([
      [
        'a runner id with bad characters',
        'badRunnerId',
        () => ({ runner_id: 'bad runner!', job_id: '1' }),
        'runner_id',
      ],
      [
        'a job id with a space',
        'jobIdSpace',
        () => ({ runner_id: R.jobIdSpace.id, job_id: 'job 1' }),
        'job_id',
      ],
      [
        'a job id that is too long',
        'jobIdLong',
        () => ({ runner_id: R.jobIdLong.id, job_id: 'x'.repeat(201) }),
        'job_id',
      ],
      [
        'a numeric job id',
        'jobIdNumber',
        () => ({ runner_id: R.jobIdNumber.id, job_id: 12 }),
        'job_id',
      ],
      ['a null runner id', 'runnerIdNull', () => ({ runner_id: null, job_id: '1' }), 'runner_id'],
      [
        'a project id with bad characters',
        'projectIdBad',
        () => ({ runner_id: R.projectIdBad.id, job_id: '1', project_id: 'a b' }),
        'project_id',
      ],
      // project_id goes into GitLab URL paths: nothing may climb out of /projects/:id.
      [
        "a project id with '..'",
        'projectIdDotDot',
        () => ({ runner_id: R.projectIdDotDot.id, job_id: '1', project_id: '..' }),
        'project_id',
      ],
      [
        "a project id '.'",
        'projectIdDot',
        () => ({ runner_id: R.projectIdDot.id, job_id: '1', project_id: '.' }),
        'project_id',
      ],
      // One '/' is a GitHub repository (owner/name); more would be more path segments.
      [
        "a project id with two '/'",
        'projectIdSlash',
        () => ({ runner_id: R.projectIdSlash.id, job_id: '1', project_id: 'group/sub/project' }),
        'project_id',
      ],
      [
        "a repository with a '..' segment",
        'projectIdRepoDotDot',
        () => ({ runner_id: R.projectIdRepoDotDot.id, job_id: '1', project_id: 'acme/..' }),
        'project_id',
      ],
      // Postgres cannot store a NUL in text: a 4xx naming the field, never a 500.
      [
        'a NUL in the project id',
        'projectIdNul',
        () => ({ runner_id: R.projectIdNul.id, job_id: '1', project_id: 'p\u0000' }),
        'project_id',
      ],
      [
        'a NUL in the runner id',
        'runnerIdNul',
        () => ({ runner_id: `${R.runnerIdNul.id}\u0000`, job_id: '1' }),
        'runner_id',
      ],
      [
        'a NUL in the job id',
        'jobIdNul',
        () => ({ runner_id: R.jobIdNul.id, job_id: '1\u0000' }),
        'job_id',
      ],
      [
        'a NUL in the caller',
        'callerNul',
        () => ({ runner_id: R.callerNul.id, job_id: '1', caller: 'ci\u0000job' }),
        'caller',
      ],
    ] as const)('answers 422 for %s', async (_what, label, body, field) => {
      const res = await as(R[label]).call('POST', '/checkpoint/create', body());
      expect(res.status).toBe(422);
      expect(res.body.detail[0].loc).toEqual(['body', field]);
      expect(res.body.detail[0].msg).not.toBe('Field required');
    });

    it('answers 422 for a body that is not JSON', async () => {
      expect(await as(R.notJson).call('POST', '/checkpoint/create', '{"runner_id":')).toEqual({
        status: 422,
        body: { detail: 'Request body is not valid JSON' },
      });
    });

    it('answers 404 for a runner that is not in the inventory', async () => {
      expect(await as(R.unknownRunner).create(`${R.unknownRunner.id}-gone`, '1')).toEqual({
        status: 404,
        body: { detail: 'Runner not found in inventory' },
      });
    });

    it("answers 403 for another runner's id", async () => {
      expect(await as(R.otherRunner).create(R.otherRunnerVictim.id, '1')).toEqual({
        status: 403,
        body: { detail: 'Token not authorized for this runner' },
      });
    });

    it('gives exactly one 201 to 20 concurrent creates through two API instances; the rest get 409', async () => {
      const r = R.race;
      const second = await c.startAnotherApi();
      const apis = [restClient(() => c.api.url, r.token), restClient(() => second.url, r.token)];
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => apis[i % 2]!.create(r.id, `race-${i}`)),
      );
      const ok = results.filter((x) => x.status === 201);
      expect(ok).toHaveLength(1);
      const name = ok[0]!.body.name;
      const others = results.filter((x) => x.status !== 201);
      expect(others.map((x) => x.status)).toEqual(Array(19).fill(409));
      for (const x of others)
        expect(x.body).toEqual({
          detail: `Active checkpoint '${name}' already exists for runner '${r.id}'`,
        });
      const [{ count }] = await c.ds.query(
        `SELECT count(*)::int AS count FROM checkpoints WHERE runner_id = $1`,
        [r.id],
      );
      expect(count).toBe(1);
    });

    it('answers 429 with Retry-After during the cooldown after a reset, then 201', async () => {
      const r = R.cool;
      const api = as(r);
      const name = await created(r, '500');
      await api.finalize(name, 'failure');
      // The cooldown follows the reset and comes before the unpause and the terminal state.
      const handle = c.client.workflow.getHandle(checkpointWorkflowId(r.id));
      await waitFor(
        'the run to enter its cooldown',
        async () => (await handle.query(stateQuery)).phase === 'cooldown',
        { intervalMs: 50 },
      );
      const res = await fetch(`${c.api.url}/checkpoint/create`, {
        method: 'POST',
        headers: { authorization: `Bearer ${r.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ runner_id: r.id, job_id: '501' }),
      });
      expect([res.status, await res.json()]).toEqual([
        429,
        { detail: 'Cooldown period active, try again later' },
      ]);
      // The seconds left of the 2 s cooldown, rounded up.
      expect(res.headers.get('retry-after')).toMatch(/^[12]$/);
      const later = await waitFor(
        'the cooldown to pass',
        async () => {
          const res = await api.create(r.id, '502');
          return res.status === 201 ? res : undefined;
        },
        { intervalMs: 250 },
      );
      expect(later.body.job_id).toBe('502');
    });
  });

  describe('POST /checkpoint/finalize', () => {
    it.each([
      [
        "GitLab's 'failed' (the CLI maps it; REST takes SPEC values)",
        'finGitlabStatus',
        { checkpoint_name: 'job-1-1700000000-abcdef01', status: 'failed' },
        'status',
      ],
      [
        'a malformed checkpoint name',
        'finBadName',
        { checkpoint_name: 'job-1-abc', status: 'failure' },
        'checkpoint_name',
      ],
      [
        'a source with bad characters',
        'finBadSource',
        { checkpoint_name: 'job-1-1700000000-abcdef01', status: 'failure', source: 'a b' },
        'source',
      ],
      [
        'a missing status',
        'finNoStatus',
        { checkpoint_name: 'job-1-1700000000-abcdef01' },
        'status',
      ],
      [
        'a NUL in the checkpoint name',
        'finNameNul',
        { checkpoint_name: 'job-1-1700000000-abcdef01\u0000', status: 'failure' },
        'checkpoint_name',
      ],
      [
        'a NUL in the status',
        'finStatusNul',
        { checkpoint_name: 'job-1-1700000000-abcdef01', status: 'failure\u0000' },
        'status',
      ],
      [
        'a NUL in the source',
        'finSourceNul',
        { checkpoint_name: 'job-1-1700000000-abcdef01', status: 'failure', source: 'hook\u0000' },
        'source',
      ],
    ] as const)('answers 422 for %s', async (_what, label, body, field) => {
      const res = await as(R[label]).call('POST', '/checkpoint/finalize', body);
      expect(res.status).toBe(422);
      expect(res.body.detail[0].loc).toEqual(['body', field]);
    });

    it('answers 404 for an unknown checkpoint', async () => {
      expect(await as(R.finUnknown).finalize('job-1-1700000000-abcdef01', 'failure')).toEqual({
        status: 404,
        body: { detail: 'Checkpoint not found' },
      });
    });

    it("answers 403 for another runner's checkpoint", async () => {
      agents.connect(R.finOtherOwner.id, new Date(0));
      const name = await created(R.finOtherOwner);
      expect(await as(R.finOther).finalize(name, 'failure')).toEqual({
        status: 403,
        body: { detail: 'Token not authorized for this checkpoint' },
      });
      expect((await as(R.finOtherOwner).status(name)).body.state).toBe('created');
    });
  });

  describe('GET /checkpoint/status/{name}', () => {
    it('answers 200 with the checkpoint object', async () => {
      const r = R.statusOk;
      const name = await created(r);
      const res = await as(r).status(name);
      expect(res.status).toBe(200);
      expect(Object.keys(res.body).sort()).toEqual(
        [
          'created_at',
          'finalize_status',
          'finalize_source',
          'finalized_at',
          'job_id',
          'name',
          'runner_id',
          'state',
          'verified',
          'verify_detail',
        ].sort(),
      );
      expect(res.body).toMatchObject({
        name,
        runner_id: r.id,
        job_id: '77',
        state: 'created',
      });
    });

    it("answers 404 for an unknown name and 403 for another runner's", async () => {
      const name = await created(R.statusOtherOwner);
      expect(await as(R.statusOther).status('job-x-1-00000000')).toEqual({
        status: 404,
        body: { detail: 'Checkpoint not found' },
      });
      expect(await as(R.statusOther).status(name)).toEqual({
        status: 403,
        body: { detail: 'Token not authorized for this checkpoint' },
      });
    });

    it('answers 422 naming the path parameter for a NUL in the name, never a 500', async () => {
      const name = await created(R.statusNul);
      for (const bad of ['\u0000', `${name}\u0000`, `job-\u0000-1-00000000`]) {
        const res = await as(R.statusNul).status(bad);
        expect(res.status).toBe(422);
        expect(res.body.detail).toEqual([
          expect.objectContaining({ loc: ['path', 'name'], msg: expect.any(String) }),
        ]);
      }
      expect((await as(R.statusNul).call('GET', '/checkpoint/status/%00')).status).toBe(422);
      // Not UTF-8: a 4xx with a JSON detail too.
      const notUtf8 = await as(R.statusNul).call('GET', '/checkpoint/status/%FF%FE');
      expect(notUtf8.status).toBeGreaterThanOrEqual(400);
      expect(notUtf8.status).toBeLessThan(500);
      expect(notUtf8.body).toEqual({ detail: expect.any(String) });
      // The name itself still answers.
      expect((await as(R.statusNul).status(name)).status).toBe(200);
    });

    it('records a custom finalize source', async () => {
      const r = R.source;
      const name = await created(r);
      expect((await as(r).finalize(name, 'canceled', { source: 'manual' })).status).toBe(202);
      const done = await waitFor('the reset', async () => {
        const res = await as(r).status(name);
        return res.body.state === 'reset' ? res.body : undefined;
      });
      expect(done).toMatchObject({ finalize_status: 'canceled', finalize_source: 'manual' });
    });
  });

  describe('GET /runner/readiness', () => {
    it('answers 200 when the agent is connected and 503 with the reason when not', async () => {
      expect(await as(R.ready).call('GET', '/runner/readiness')).toEqual({
        status: 200,
        body: { runner_id: R.ready.id, ready: true, detail: null },
      });
      expect(await as(R.notConnected).call('GET', '/runner/readiness')).toEqual({
        status: 503,
        body: { runner_id: R.notConnected.id, ready: false, detail: 'agent not connected' },
      });
    });

    it('runs readiness_cmd and reports its failure', async () => {
      const r = R.readinessFails;
      agents.connect(r.id, new Date(0));
      const res = await as(r).call('GET', '/runner/readiness');
      expect(res).toEqual({
        status: 503,
        body: { runner_id: r.id, ready: false, detail: 'readiness_cmd exited with 3: disk full' },
      });
    });
  });
});
