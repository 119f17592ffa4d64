import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  rewordLog,
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { testRunners, uniqueId } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitHubStandIn, type GitHubStandIn } from '../stand-ins/github';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { ensureReconcileSchedule } from '../../worker/reconcile-schedule';

/**
 * Draining (SPEC §8): a draining runner finishes its job and is reset, but
 * stays paused in its CI system (GitLab: paused; GitHub: its pause labels
 * stay off) until `undrain`, which unpauses it through a reconciler pass.
 * Registry runners, created through the admin API.
 */
const ADMIN = 'admin-token-drain-test-0123456789abcdef';
const R = testRunners(['gitlab', 'github']);
const GITLAB_ID = 311;
const GITHUB_ID = 312;
const REPO = 'acme/drain';

describe('a draining runner stays paused after its reset until undrain', () => {
  const agents = new FakeAgents();
  let gitlab: GitLabStandIn;
  let github: GitHubStandIn;
  let c: TestController;
  const admin = () => restClient(() => c.api.url, ADMIN).call;
  /** Registry runners: id → token. */
  const tokens = new Map<string, string>();

  beforeAll(async () => {
    [gitlab, github] = await Promise.all([startGitLabStandIn(), startGitHubStandIn()]);
    gitlab.addRunner(GITLAB_ID);
    github.addRunner({ repo: REPO }, GITHUB_ID, { labels: ['e2e'] });
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    c = await startTestController({
      inventory: 'runners: []\n',
      agents,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_GITHUB_URL: github.url,
        E2EPOOL_GITHUB_TOKEN: github.token,
      },
    });
    // Only `undrain` starts a pass here: the interval is far longer than the test.
    await ensureReconcileSchedule(c.client, {
      taskQueue: c.taskQueue,
      intervalSeconds: 3600,
      repair: true,
      minAgeSeconds: 0,
    });
    const bodies = {
      [R.gitlab.id]: { gitlab_runner_id: GITLAB_ID },
      [R.github.id]: {
        ci_adapter: 'github',
        github_repo: REPO,
        github_runner_id: GITHUB_ID,
        github_pause_labels: ['e2e'],
      },
    };
    for (const [id, extra] of Object.entries(bodies)) {
      const res = await admin()('POST', '/api/runners', {
        runner_id: id,
        backend: 'bare_metal',
        reset_cmd: '/opt/reset.sh',
        ...extra,
      });
      expect(res.status).toBe(201);
      tokens.set(id, res.body.token);
    }
  });
  afterAll(async () => {
    await c?.client.schedule
      .getHandle(`e2epool-reconcile-${c.taskQueue}`)
      .delete()
      .catch(() => undefined);
    await c?.stop();
    await Promise.all([gitlab?.close(), github?.close()]);
  });

  /** Creates a checkpoint, drains the runner, finalizes the job: returns the checkpoint's name. */
  async function drainDuringJob(runnerId: string): Promise<string> {
    const api = restClient(() => c.api.url, tokens.get(runnerId)!);
    const cp = await api.create(runnerId, uniqueId('job'));
    expect(cp.status).toBe(201);
    expect(await admin()('POST', `/api/runners/${runnerId}/drain`)).toMatchObject({
      status: 200,
      body: { draining: true },
    });
    expect((await api.finalize(cp.body.name, 'failure')).status).toBe(202);
    await runEnded(c, runnerId);
    expect((await api.status(cp.body.name)).body).toMatchObject({ state: 'reset' });
    expect((await api.create(runnerId, uniqueId('job'))).status).toBe(423);
    return cp.body.name as string;
  }

  /** A reconciler pass, as the schedule runs it. */
  const pass = () =>
    c.client.workflow.execute('reconcileWorkflow', {
      taskQueue: c.taskQueue,
      workflowId: uniqueId('reconcile-pass'),
      args: [{ repair: true, minAgeSeconds: 0 }],
    });

  it('GitLab: the runner is reset and stays paused; undrain unpauses it', async () => {
    const name = await drainDuringJob(R.gitlab.id);
    expect(gitlab.runner(GITLAB_ID)).toMatchObject({ paused: true, pausedHistory: [true] });
    expect((await operations(c.ds, name)).find((o) => o.operation === 'unpause')).toEqual(
      expect.objectContaining({
        result: 'skipped',
        detail: `runner '${R.gitlab.id}' is draining: GitLab runner ${GITLAB_ID} stays paused until it is undrained`,
      }),
    );
    // The reconciler leaves a draining runner alone; the log's words change nothing.
    await rewordLog(c.ds, name);
    await pass();
    expect(gitlab.runner(GITLAB_ID).paused).toBe(true);

    expect((await admin()('POST', `/api/runners/${R.gitlab.id}/undrain`)).status).toBe(200);
    await waitFor('the undrained runner to be unpaused', () => !gitlab.runner(GITLAB_ID).paused);
    expect(gitlab.runner(GITLAB_ID).pausedHistory).toEqual([true, false]);
    await waitFor('the reconciler to log the unpause', async () =>
      (await operations(c.ds, name)).find(
        (o) =>
          o.operation === 'reconcile:paused_runner' &&
          o.result === 'ok' &&
          o.detail?.includes('while its runner drained; it is undrained now'),
      ),
    );
    // Back in rotation: a checkpoint is taken and its reset unpauses as usual.
    const api = restClient(() => c.api.url, tokens.get(R.gitlab.id)!);
    const next = await api.create(R.gitlab.id, uniqueId('job'));
    expect(next.status).toBe(201);
    await api.finalize(next.body.name, 'failure');
    await runEnded(c, R.gitlab.id);
    expect(gitlab.runner(GITLAB_ID)).toMatchObject({
      paused: false,
      pausedHistory: [true, false, true, false],
    });
  });

  it('GitHub: the pause labels stay off; undrain puts them back', async () => {
    const name = await drainDuringJob(R.github.id);
    expect(github.runner(GITHUB_ID).custom).toEqual([]);
    expect((await operations(c.ds, name)).find((o) => o.operation === 'unpause')).toMatchObject({
      result: 'skipped',
      detail: `runner '${R.github.id}' is draining: GitHub runner ${GITHUB_ID} of ${REPO} stays paused until it is undrained`,
    });
    await rewordLog(c.ds, name);
    await pass();
    expect(github.runner(GITHUB_ID).custom).toEqual([]);

    expect((await admin()('POST', `/api/runners/${R.github.id}/undrain`)).status).toBe(200);
    await waitFor('the labels to be put back', () =>
      github.runner(GITHUB_ID).custom.includes('e2e'),
    );
  });

  it('a GitHub runner made through the admin API keeps its CI fields; a bad combination is 422', async () => {
    const got = await admin()('GET', `/api/runners/${R.github.id}`);
    expect(got.body).toMatchObject({
      ci_adapter: 'github',
      github_repo: REPO,
      github_runner_id: GITHUB_ID,
      github_pause_labels: ['e2e'],
    });
    expect(
      await admin()('POST', '/api/runners', {
        runner_id: uniqueId('bad'),
        backend: 'bare_metal',
        reset_cmd: '/opt/reset.sh',
        github_repo: REPO,
      }),
    ).toEqual({ status: 422, body: { detail: 'github_repo: only for ci_adapter: github' } });
  });
});
