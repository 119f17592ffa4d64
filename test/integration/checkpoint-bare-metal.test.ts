import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  stepsBesidesPollerNote,
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

// One runner (so one workflow id on the shared Temporal server) per test.
const R = testRunners([
  'fail',
  'cleanup',
  'resetOnSuccess',
  'pollFailed',
  'pollSkipped',
  'pollSuccess',
  'nextJob',
  'unpauseRefused',
  'pauseCheckFails',
]);
/** The GitLab poller tests: GitLab status → finalize status → state, each on a runner and job of its own. */
const POLL_CASES = [
  {
    gitlabStatus: 'failed',
    status: 'failure',
    state: 'reset',
    cmd: '/opt/reset.sh',
    runner: R.pollFailed,
    gitlabRunner: 32,
    job: 100,
  },
  {
    gitlabStatus: 'skipped',
    status: 'canceled',
    state: 'reset',
    cmd: '/opt/reset.sh',
    runner: R.pollSkipped,
    gitlabRunner: 33,
    job: 101,
  },
  {
    gitlabStatus: 'success',
    status: 'success',
    state: 'deleted',
    cmd: '/opt/cleanup.sh',
    runner: R.pollSuccess,
    gitlabRunner: 34,
    job: 102,
  },
];
const SCRIPTS = { reset_cmd: '/opt/reset.sh', cleanup_cmd: '/opt/cleanup.sh' };
const INVENTORY = `runners:\n${[
  bareMetalRunnerYaml(R.fail, SCRIPTS),
  bareMetalRunnerYaml(R.cleanup, SCRIPTS),
  bareMetalRunnerYaml(R.resetOnSuccess, { reset_cmd: '/opt/reset.sh', reset_on_success: true }),
  bareMetalRunnerYaml(R.nextJob, SCRIPTS),
  bareMetalRunnerYaml(R.unpauseRefused, { ...SCRIPTS, gitlab_runner_id: 35 }),
  bareMetalRunnerYaml(R.pauseCheckFails, { ...SCRIPTS, gitlab_runner_id: 36 }),
  ...POLL_CASES.map((p) =>
    bareMetalRunnerYaml(p.runner, { ...SCRIPTS, gitlab_runner_id: p.gitlabRunner }),
  ),
].join('')}`;

describe('bare-metal checkpoints over REST (real Temporal, real Postgres)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gitlab: GitLabStandIn;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);

  beforeAll(async () => {
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    gitlab = await startGitLabStandIn();
    for (const p of POLL_CASES) gitlab.addRunner(p.gitlabRunner);
    gitlab.addRunner(35);
    gitlab.addRunner(36, { paused: true }); // paused by someone else
    c = await startTestController({
      inventory: INVENTORY,
      agents,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.1',
        // A GitLab budget whose poll share lets every runner here poll that often
        // (a smaller fleet budget would stretch the interval: config/checkpoint-input.ts).
        E2EPOOL_GITLAB_MAX_RPS: '1000',
        E2EPOOL_POLLER_MIN_AGE_SECONDS: '0',
      },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await gitlab?.close();
  });

  async function until(name: string, runner: TestRunner, state: string) {
    return waitFor(`${name} to reach ${state}`, async () => {
      const r = await as(runner).status(name);
      return r.body?.state === state ? r.body : undefined;
    });
  }

  it('creates (201), refuses a second active checkpoint (409), resets on failure and logs every step', async () => {
    const r = R.fail;
    const api = as(r);
    const created = await api.create(r.id, '1001', { caller: 'ci' });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      name: expect.stringMatching(/^job-1001-\d+-[0-9a-f]{8}$/),
      runner_id: r.id,
      job_id: '1001',
      state: 'created',
      finalize_status: null,
      finalize_source: null,
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      finalized_at: null,
      verified: null,
      verify_detail: null,
    });
    const name = created.body.name as string;

    const again = await api.create(r.id, '1002');
    expect(again).toEqual({
      status: 409,
      body: { detail: `Active checkpoint '${name}' already exists for runner '${r.id}'` },
    });

    const fin = await api.finalize(name, 'failure');
    expect(fin).toEqual({
      status: 202,
      body: { detail: 'Finalize queued', checkpoint_name: name },
    });
    const done = await until(name, r, 'reset');
    expect(done).toMatchObject({
      finalize_status: 'failure',
      finalize_source: 'hook',
      finalized_at: expect.any(String),
    });

    expect(agents.commandsFor(r.id)).toEqual(['/opt/reset.sh']);
    await runEnded(c, r.id); // the state's own log row is written just after the state
    const ops = await operations(c.ds, name);
    const { steps, pollerNotes } = await stepsBesidesPollerNote(c.ds, name);
    expect(pollerNotes).toBe(1);
    expect(steps).toEqual([
      'create:ok',
      'finalize_queued:ok',
      'reset_cmd:ok',
      'readiness:ok',
      'reset:ok',
    ]);
    expect(ops.find((o) => o.operation === 'reset_cmd')!.detail).toContain(
      'exit 0; stdout: ran /opt/reset.sh',
    );

    const repeat = await api.finalize(name, 'success');
    expect(repeat).toEqual({ status: 202, body: { detail: 'Already finalized', state: 'reset' } });
  });

  it('the next job can create the moment the previous checkpoint shows its terminal state (no cooldown)', async () => {
    // The row turns terminal a moment before the workflow's own state does; a
    // create in between must not be told that the old checkpoint is active.
    const r = R.nextJob;
    const api = as(r);
    let name = (await api.create(r.id, '1200')).body.name as string;
    for (let job = 1201; job <= 1205; job++) {
      expect((await api.finalize(name, 'failure')).status).toBe(202);
      await waitFor(
        'the terminal state',
        async () => (await api.status(name)).body.state === 'reset',
        {
          intervalMs: 5,
        },
      );
      const next = await api.create(r.id, String(job));
      expect(next).toMatchObject({ status: 201, body: { job_id: String(job), state: 'created' } });
      name = next.body.name as string;
    }
  });

  it('GitLab answering 401 to the unpause parks the checkpoint in needs_attention (visible in /metrics); `retry` after the fix unpauses', async () => {
    const r = R.unpauseRefused;
    const api = as(r);
    const name = (await api.create(r.id, '1300')).body.name as string;
    gitlab.failNext(
      { method: 'PUT', pathIncludes: '/runners/35' },
      { kind: 'http', status: 401, body: { message: '401 Unauthorized' } },
      Infinity,
    );
    // The pause is refused too: the reset goes on, and the unpause must not be skipped.
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    const parked = await until(name, r, 'needs_attention');
    expect(parked.state).toBe('needs_attention');
    const [row] = await c.ds.query(`SELECT error_detail FROM checkpoints WHERE name = $1`, [name]);
    expect(row.error_detail).toMatch(
      /^GitLab runner 35 is still paused: unpausing it failed .*401/,
    );
    const metrics = await (await fetch(`${c.api.url}/metrics`)).text();
    expect(metrics).toMatch(
      /e2epool_checkpoints_active\{[^}]*state="needs_attention"[^}]*\} [1-9]/,
    );

    gitlab.clearFaults();
    await c.client.workflow.getHandle(`e2epool-runner-${r.id}`).signal('retry');
    await until(name, r, 'reset');
    expect(gitlab.runner(35).paused).toBe(false);
  });

  it('when GitLab cannot say whether the runner is paused, e2epool neither pauses nor unpauses it (it may be paused by someone else)', async () => {
    const r = R.pauseCheckFails;
    const api = as(r);
    const name = (await api.create(r.id, '1400')).body.name as string;
    gitlab.failNext(
      { method: 'GET', pathIncludes: '/runners/36' },
      { kind: 'http', status: 500, body: { message: '500 Internal Server Error' } },
      Infinity,
    );
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    // The pause is tried with backoff (about 30 s in all), then the reset goes ahead.
    await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset', {
      timeoutMs: 80_000,
    });
    gitlab.clearFaults();
    expect(gitlab.runner(36)).toMatchObject({ paused: true, pausedHistory: [] });
    const ops = await operations(c.ds, name);
    expect(ops.find((o) => o.operation === 'pause')).toMatchObject({
      result: 'error',
      error: expect.stringContaining('cannot tell whether GitLab runner 36 is paused'),
    });
    expect(ops.map((o) => o.operation)).not.toContain('unpause');
  }, 90_000);

  it('takes the cleanup path on success (state deleted), and the reset path when reset_on_success is set', async () => {
    const one = R.cleanup;
    const a = (await as(one).create(one.id, '2001')).body.name as string;
    expect((await as(one).finalize(a, 'success')).status).toBe(202);
    await until(a, one, 'deleted');
    expect(agents.commandsFor(one.id)).toEqual(['/opt/cleanup.sh']);

    const two = R.resetOnSuccess;
    const b = (await as(two).create(two.id, '2002')).body.name as string;
    expect((await as(two).finalize(b, 'success')).status).toBe(202);
    await until(b, two, 'reset');
    expect(agents.commandsFor(two.id)).toEqual(['/opt/reset.sh']);
  });

  it.each(POLL_CASES)(
    'the GitLab poller maps GitLab $gitlabStatus to $status → $state',
    async ({ gitlabStatus, status, state, cmd, runner, gitlabRunner, job }) => {
      gitlab.setJob(9, job, 'running');
      const name = (await as(runner).create(runner.id, String(job), { project_id: '9' })).body
        .name as string;
      // `canceling` is not an end: the job may still be on the runner.
      gitlab.setJob(9, job, 'canceling');
      await waitFor(
        'a few polls',
        () => gitlab.calls.filter((x) => x.path === `/api/v4/projects/9/jobs/${job}`).length >= 2,
      );
      expect((await as(runner).status(name)).body.state).toBe('created');
      gitlab.setJob(9, job, gitlabStatus);
      const done = await until(name, runner, state);
      expect(done).toMatchObject({ finalize_status: status, finalize_source: 'poller' });
      expect(agents.commandsFor(runner.id)).toEqual([cmd]);
      expect(gitlab.runner(gitlabRunner).pausedHistory).toEqual([true, false]);
    },
  );
});
