import { FakeAgents } from '../helpers/fake-agents';
import { restClient, startTestController, type TestController } from '../helpers/controller';
import { waitFor } from '../helpers/wait';

const INVENTORY = `runners:
  - runner_id: r-1
    backend: bare_metal
    token: tok-r-1
    reset_cmd: /opt/reset.sh
  - runner_id: r-2
    backend: bare_metal
    token: tok-r-2
    reset_cmd: /opt/reset.sh
    readiness_cmd: /opt/ready.sh
  - runner_id: r-race
    backend: bare_metal
    token: tok-r-race
    reset_cmd: /opt/reset.sh
  - runner_id: r-cool
    backend: bare_metal
    token: tok-r-cool
    reset_cmd: /opt/reset.sh
`;

describe('REST API status paths (SPEC §3)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  const as = (token: string) => restClient(() => c.api.url, token);
  let r1Checkpoint: string;

  beforeAll(async () => {
    agents.connect('r-1', new Date(0));
    agents.connect('r-race', new Date(0));
    agents.connect('r-cool', new Date(0));
    c = await startTestController({
      inventory: INVENTORY,
      agents,
      env: { E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '2' },
    });
    const created = await as('tok-r-1').create('r-1', '77');
    expect(created.status).toBe(201);
    r1Checkpoint = created.body.name;
  });
  afterAll(async () => c?.stop());

  describe('authentication', () => {
    it.each([
      ['no Authorization header', 401, {}, 'Invalid authorization header'],
      [
        'a non-Bearer scheme',
        401,
        { authorization: 'Basic dXNlcjpwdw==' },
        'Invalid authorization header',
      ],
      // HTTP trims trailing white space, so `Bearer ` arrives as `Bearer`.
      [
        '"Bearer" without a token',
        401,
        { authorization: 'Bearer ' },
        'Invalid authorization header',
      ],
      ['an unknown token', 403, { authorization: 'Bearer nope' }, 'Invalid token'],
      ['a prefix of a real token', 403, { authorization: 'Bearer tok-r' }, 'Invalid token'],
      ['a real token with a suffix', 403, { authorization: 'Bearer tok-r-1x' }, 'Invalid token'],
    ])('%s → %i', async (_what, status, headers, detail) => {
      const res = await fetch(`${c.api.url}/checkpoint/create`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ runner_id: 'r-1', job_id: '1' }),
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
      const res = await as('tok-r-1').call('POST', '/checkpoint/create', {});
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
      ['a runner id with bad characters', { runner_id: 'bad runner!', job_id: '1' }, 'runner_id'],
      ['a job id with a space', { runner_id: 'r-1', job_id: 'job 1' }, 'job_id'],
      ['a job id that is too long', { runner_id: 'r-1', job_id: 'x'.repeat(201) }, 'job_id'],
      ['a numeric job id', { runner_id: 'r-1', job_id: 12 }, 'job_id'],
      ['a null runner id', { runner_id: null, job_id: '1' }, 'runner_id'],
      [
        'a project id with bad characters',
        { runner_id: 'r-1', job_id: '1', project_id: 'a b' },
        'project_id',
      ],
    ])('answers 422 for %s', async (_what, body, field) => {
      const res = await as('tok-r-1').call('POST', '/checkpoint/create', body);
      expect(res.status).toBe(422);
      expect(res.body.detail[0].loc).toEqual(['body', field]);
      expect(res.body.detail[0].msg).not.toBe('Field required');
    });

    it('answers 422 for a body that is not JSON', async () => {
      expect(await as('tok-r-1').call('POST', '/checkpoint/create', '{"runner_id":')).toEqual({
        status: 422,
        body: { detail: 'Request body is not valid JSON' },
      });
    });

    it('answers 404 for a runner that is not in the inventory', async () => {
      expect(await as('tok-r-1').create('r-9', '1')).toEqual({
        status: 404,
        body: { detail: 'Runner not found in inventory' },
      });
    });

    it("answers 403 for another runner's id", async () => {
      expect(await as('tok-r-1').create('r-2', '1')).toEqual({
        status: 403,
        body: { detail: 'Token not authorized for this runner' },
      });
    });

    it('gives exactly one 201 to 20 concurrent creates through two API instances; the rest get 409', async () => {
      const second = await c.startAnotherApi();
      const apis = [
        restClient(() => c.api.url, 'tok-r-race'),
        restClient(() => second.url, 'tok-r-race'),
      ];
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => apis[i % 2]!.create('r-race', `race-${i}`)),
      );
      const created = results.filter((r) => r.status === 201);
      expect(created).toHaveLength(1);
      const name = created[0]!.body.name;
      const others = results.filter((r) => r.status !== 201);
      expect(others.map((r) => r.status)).toEqual(Array(19).fill(409));
      for (const r of others)
        expect(r.body).toEqual({
          detail: `Active checkpoint '${name}' already exists for runner 'r-race'`,
        });
      const [{ count }] = await c.ds.query(
        `SELECT count(*)::int AS count FROM checkpoints WHERE runner_id = 'r-race'`,
      );
      expect(count).toBe(1);
    });

    it('answers 429 during the cooldown after a checkpoint ended, then 201', async () => {
      const api = as('tok-r-cool');
      const name = (await api.create('r-cool', '500')).body.name;
      await api.finalize(name, 'failure');
      await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset');
      expect(await api.create('r-cool', '501')).toEqual({
        status: 429,
        body: { detail: 'Cooldown period active, try again later' },
      });
      const later = await waitFor(
        'the cooldown to pass',
        async () => {
          const r = await api.create('r-cool', '502');
          return r.status === 201 ? r : undefined;
        },
        { timeoutMs: 10_000, intervalMs: 250 },
      );
      expect(later.body.job_id).toBe('502');
    });
  });

  describe('POST /checkpoint/finalize', () => {
    it.each([
      [
        "GitLab's 'failed' (the CLI maps it; REST takes SPEC values)",
        { checkpoint_name: 'job-1-1700000000-abcdef01', status: 'failed' },
        'status',
      ],
      [
        'a malformed checkpoint name',
        { checkpoint_name: 'job-1-abc', status: 'failure' },
        'checkpoint_name',
      ],
      [
        'a source with bad characters',
        { checkpoint_name: 'job-1-1700000000-abcdef01', status: 'failure', source: 'a b' },
        'source',
      ],
      ['a missing status', { checkpoint_name: 'job-1-1700000000-abcdef01' }, 'status'],
    ])('answers 422 for %s', async (_what, body, field) => {
      const res = await as('tok-r-1').call('POST', '/checkpoint/finalize', body);
      expect(res.status).toBe(422);
      expect(res.body.detail[0].loc).toEqual(['body', field]);
    });

    it('answers 404 for an unknown checkpoint', async () => {
      expect(await as('tok-r-1').finalize('job-1-1700000000-abcdef01', 'failure')).toEqual({
        status: 404,
        body: { detail: 'Checkpoint not found' },
      });
    });

    it("answers 403 for another runner's checkpoint", async () => {
      expect(await as('tok-r-2').finalize(r1Checkpoint, 'failure')).toEqual({
        status: 403,
        body: { detail: 'Token not authorized for this checkpoint' },
      });
    });
  });

  describe('GET /checkpoint/status/{name}', () => {
    it('answers 200 with the checkpoint object', async () => {
      const res = await as('tok-r-1').status(r1Checkpoint);
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
        ].sort(),
      );
      expect(res.body).toMatchObject({
        name: r1Checkpoint,
        runner_id: 'r-1',
        job_id: '77',
        state: 'created',
      });
    });

    it("answers 404 for an unknown name and 403 for another runner's", async () => {
      expect(await as('tok-r-1').status('job-x-1-00000000')).toEqual({
        status: 404,
        body: { detail: 'Checkpoint not found' },
      });
      expect(await as('tok-r-2').status(r1Checkpoint)).toEqual({
        status: 403,
        body: { detail: 'Token not authorized for this checkpoint' },
      });
    });

    it('records a custom finalize source', async () => {
      expect(
        (await as('tok-r-1').finalize(r1Checkpoint, 'canceled', { source: 'manual' })).status,
      ).toBe(202);
      const done = await waitFor('the reset', async () => {
        const r = await as('tok-r-1').status(r1Checkpoint);
        return r.body.state === 'reset' ? r.body : undefined;
      });
      expect(done).toMatchObject({ finalize_status: 'canceled', finalize_source: 'manual' });
    });
  });

  describe('GET /runner/readiness', () => {
    it('answers 200 when the agent is connected and 503 with the reason when not', async () => {
      expect(await as('tok-r-1').call('GET', '/runner/readiness')).toEqual({
        status: 200,
        body: { runner_id: 'r-1', ready: true, detail: null },
      });
      expect(await as('tok-r-2').call('GET', '/runner/readiness')).toEqual({
        status: 503,
        body: { runner_id: 'r-2', ready: false, detail: 'agent not connected' },
      });
    });

    it('runs readiness_cmd and reports its failure', async () => {
      agents.connect('r-2', new Date(0));
      agents.onExec = (runnerId, cmd) =>
        runnerId === 'r-2' && cmd === '/opt/ready.sh'
          ? { exitCode: 3, stdout: '', stderr: 'disk full' }
          : { exitCode: 0, stdout: '', stderr: '' };
      const res = await as('tok-r-2').call('GET', '/runner/readiness');
      expect(res).toEqual({
        status: 503,
        body: { runner_id: 'r-2', ready: false, detail: 'readiness_cmd exited with 3: disk full' },
      });
    });
  });
});
