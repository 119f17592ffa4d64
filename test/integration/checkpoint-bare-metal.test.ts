import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

const INVENTORY = `runners:
  - runner_id: metal-1
    backend: bare_metal
    token: tok-metal-1
    reset_cmd: /opt/reset.sh
    cleanup_cmd: /opt/cleanup.sh
  - runner_id: metal-2
    backend: bare_metal
    token: tok-metal-2
    reset_cmd: /opt/reset.sh
    reset_on_success: true
  - runner_id: metal-poll
    backend: bare_metal
    token: tok-metal-poll
    reset_cmd: /opt/reset.sh
    cleanup_cmd: /opt/cleanup.sh
    gitlab_runner_id: 32
`;

describe('bare-metal checkpoints over REST (real Temporal, real Postgres)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gitlab: GitLabStandIn;
  const rest = (token: string) => restClient(() => c.api.url, token);
  const as = (runner: string) => rest(`tok-${runner}`);

  beforeAll(async () => {
    for (const r of ['metal-1', 'metal-2', 'metal-poll']) agents.connect(r, new Date(0));
    gitlab = await startGitLabStandIn();
    gitlab.addRunner(32);
    c = await startTestController({
      inventory: INVENTORY,
      agents,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.1',
        E2EPOOL_POLLER_MIN_AGE_SECONDS: '0',
      },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await gitlab?.close();
  });

  async function until(name: string, token: string, state: string) {
    return waitFor(`${name} to reach ${state}`, async () => {
      const r = await rest(token).status(name);
      return r.body?.state === state ? r.body : undefined;
    });
  }

  it('creates (201), refuses a second active checkpoint (409), resets on failure and logs every step', async () => {
    const api = rest('tok-metal-1');
    const created = await api.create('metal-1', '1001', { caller: 'ci' });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      name: expect.stringMatching(/^job-1001-\d+-[0-9a-f]{8}$/),
      runner_id: 'metal-1',
      job_id: '1001',
      state: 'created',
      finalize_status: null,
      finalize_source: null,
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      finalized_at: null,
    });
    const name = created.body.name as string;

    const again = await api.create('metal-1', '1002');
    expect(again).toEqual({
      status: 409,
      body: { detail: `Active checkpoint '${name}' already exists for runner 'metal-1'` },
    });

    const fin = await api.finalize(name, 'failure');
    expect(fin).toEqual({
      status: 202,
      body: { detail: 'Finalize queued', checkpoint_name: name },
    });
    const done = await until(name, 'tok-metal-1', 'reset');
    expect(done).toMatchObject({
      finalize_status: 'failure',
      finalize_source: 'hook',
      finalized_at: expect.any(String),
    });

    expect(agents.commandsFor('metal-1')).toEqual(['/opt/reset.sh']);
    const ops = await operations(c.ds, name);
    expect(ops.map((o) => `${o.operation}:${o.result}`)).toEqual([
      'create:ok',
      'poller:skipped',
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

  it('takes the cleanup path on success (state deleted), and the reset path when reset_on_success is set', async () => {
    const one = rest('tok-metal-1');
    const a = (await one.create('metal-1', '2001')).body.name as string;
    expect((await one.finalize(a, 'success')).status).toBe(202);
    await until(a, 'tok-metal-1', 'deleted');
    expect(agents.commandsFor('metal-1').slice(-1)).toEqual(['/opt/cleanup.sh']);

    const two = rest('tok-metal-2');
    const b = (await two.create('metal-2', '2002')).body.name as string;
    expect((await two.finalize(b, 'success')).status).toBe(202);
    await until(b, 'tok-metal-2', 'reset');
    expect(agents.commandsFor('metal-2')).toEqual(['/opt/reset.sh']);
  });

  it.each([
    ['failed', 'failure', 'reset', '/opt/reset.sh'],
    ['skipped', 'canceled', 'reset', '/opt/reset.sh'],
    ['success', 'success', 'deleted', '/opt/cleanup.sh'],
  ])('the GitLab poller maps GitLab %s to %s → %s', async (gitlabStatus, status, state, cmd) => {
    const job = 100 + ['failed', 'skipped', 'success'].indexOf(gitlabStatus);
    gitlab.setJob(9, job, 'running');
    const name = (await as('metal-poll').create('metal-poll', String(job), { project_id: '9' }))
      .body.name as string;
    // `canceling` is not an end: the job may still be on the runner.
    gitlab.setJob(9, job, 'canceling');
    await waitFor(
      'a few polls',
      () => gitlab.calls.filter((x) => x.path === `/api/v4/projects/9/jobs/${job}`).length >= 2,
    );
    expect((await as('metal-poll').status(name)).body.state).toBe('created');
    gitlab.setJob(9, job, gitlabStatus);
    const done = await until(name, 'tok-metal-poll', state);
    expect(done).toMatchObject({ finalize_status: status, finalize_source: 'poller' });
    expect(agents.commandsFor('metal-poll').slice(-1)).toEqual([cmd]);
    expect(gitlab.runner(32).pausedHistory.slice(-2)).toEqual([true, false]);
  });
});
