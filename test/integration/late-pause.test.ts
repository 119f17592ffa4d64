import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

const R = testRunners(['late', 'keeps']);
const GITLAB_IDS = { late: 91, keeps: 92 } as const;

/**
 * A pause that lands after the unpause (the request of an earlier, crashed
 * attempt arriving late) would leave the runner paused with nobody to undo
 * it: the unpause reads the runner back from GitLab and undoes it, and says so.
 */
describe('a pause that lands after the unpause', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gitlab: GitLabStandIn;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);

  beforeAll(async () => {
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    gitlab = await startGitLabStandIn();
    for (const id of Object.values(GITLAB_IDS)) gitlab.addRunner(id);
    c = await startTestController({
      inventory: `runners:\n${(Object.keys(GITLAB_IDS) as Array<keyof typeof GITLAB_IDS>)
        .map((k) => bareMetalRunnerYaml(R[k], { gitlab_runner_id: GITLAB_IDS[k] }))
        .join('')}`,
      agents,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_GITLAB_MAX_RPS: '1000',
      },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await gitlab?.close();
  });

  /** Runs one checkpoint to its reset and returns its unpause log row. */
  async function resetOnce(r: TestRunner, jobId: string) {
    const api = as(r);
    const created = await api.create(r.id, jobId);
    expect(created.status).toBe(201);
    const name = created.body.name as string;
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset');
    await runEnded(c, r.id);
    return (await operations(c.ds, name)).find((o) => o.operation === 'unpause');
  }

  it('the runner reads paused again after the unpause: it is unpaused again, and the log says why', async () => {
    const id = GITLAB_IDS.late;
    gitlab.pauseLandsAfterUnpause(id);
    const row = await resetOnce(R.late, '95001');
    expect(gitlab.runner(id)).toEqual({
      id,
      paused: false,
      // Our pause, our unpause, the late pause, its undo.
      pausedHistory: [true, false, true, false],
    });
    expect(row).toMatchObject({
      result: 'ok',
      detail: `unpaused GitLab runner ${id}; it read paused again after the unpause (a pause of an earlier attempt that landed late): unpaused it again`,
    });
  });

  it('a runner paused again after every unpause is left paused after a few tries, and the log says so', async () => {
    const id = GITLAB_IDS.keeps;
    gitlab.pauseLandsAfterUnpause(id, 100);
    const row = await resetOnce(R.keeps, '95002');
    // Our pause, then four unpauses (the first and three undos), each paused again.
    expect(gitlab.runner(id)).toEqual({
      id,
      paused: true,
      pausedHistory: [true, ...Array<boolean[]>(4).fill([false, true]).flat()],
    });
    expect(row).toMatchObject({
      result: 'ok',
      detail: `unpaused GitLab runner ${id}; it read paused again after 4 unpauses: left paused (someone else pauses it?)`,
    });
  });
});
