import type { ReconcileFinding } from '../../activities/reconcile';
import { checkpointWorkflowId } from '../../common/checkpoint';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  rewordLog,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, uniqueId, type TestRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitHubStandIn, type GitHubStandIn } from '../stand-ins/github';

/**
 * GitHub Actions runners end to end: real Temporal, real Postgres, the
 * controller in-process with fake agents (bare metal), and the GitHub
 * stand-in for the jobs API and the runners' labels.
 */
const R = testRunners([
  'polled',
  'rateLimited',
  'operatorRemoved',
  'refused',
  'terminated',
  'leftover',
  'lateRemoval',
]);
const REPO = 'acme/app';
/** The GitHub runner id and scope of each e2epool runner. */
const GH = {
  polled: { id: 71, yaml: { github_repo: REPO } },
  rateLimited: { id: 72, yaml: { github_repo: REPO } },
  operatorRemoved: { id: 73, yaml: { github_org: 'acme' } },
  refused: { id: 74, yaml: { github_repo: REPO } },
  terminated: { id: 75, yaml: { github_repo: REPO } },
  leftover: { id: 76, yaml: { github_repo: REPO } },
  lateRemoval: { id: 77, yaml: { github_repo: REPO } },
} as const;
const SCRIPTS = { reset_cmd: '/opt/reset.sh', cleanup_cmd: '/opt/cleanup.sh' };
const INVENTORY = `runners:\n${(Object.keys(GH) as Array<keyof typeof GH>)
  .map((k) =>
    bareMetalRunnerYaml(R[k], {
      ...SCRIPTS,
      ci_adapter: 'github',
      github_runner_id: GH[k].id,
      github_pause_labels: k === 'operatorRemoved' ? '[e2e, gpu]' : '[e2e]',
      ...GH[k].yaml,
    }),
  )
  .join('')}`;
/** What a job of the e2e suite asks for. */
const RUNS_ON = ['self-hosted', 'e2e'];

describe('GitHub Actions runners (real Temporal, real Postgres, GitHub stand-in)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gh: GitHubStandIn;
  /** For each reset or cleanup command: the GitHub runner's labels while it ran. */
  const labelsDuringCommand = new Map<string, string[]>();
  /** Runners whose next command hangs until released (see hangNextCommand). */
  const hangs = new Map<string, { started: boolean; held: Promise<void>; release(): void }>();
  const hangNextCommand = (runnerId: string) => {
    let release!: () => void;
    const held = new Promise<void>((res) => (release = res));
    hangs.set(runnerId, { started: false, held, release });
  };
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);

  beforeAll(async () => {
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    gh = await startGitHubStandIn();
    gh.addRunner({ repo: REPO }, GH.polled.id, { labels: ['e2e'] });
    gh.addRunner({ repo: REPO }, GH.rateLimited.id, { labels: ['e2e'] });
    gh.addRunner({ org: 'acme' }, GH.operatorRemoved.id, { labels: ['e2e', 'gpu'] });
    gh.addRunner({ repo: REPO }, GH.refused.id, { labels: ['e2e'] });
    gh.addRunner({ repo: REPO }, GH.terminated.id, { labels: ['e2e'] });
    gh.addRunner({ repo: REPO }, GH.leftover.id, { labels: ['e2e'] });
    gh.addRunner({ repo: REPO }, GH.lateRemoval.id, { labels: ['e2e'] });
    const ghIdOf = new Map(
      (Object.keys(GH) as Array<keyof typeof GH>).map((k) => [R[k].id, GH[k].id]),
    );
    agents.onExec = async (runnerId, cmd) => {
      labelsDuringCommand.set(runnerId, gh.runner(ghIdOf.get(runnerId)!).labels);
      const hang = hangs.get(runnerId);
      if (hang && !hang.started) {
        hang.started = true;
        await hang.held;
      }
      return { exitCode: 0, stdout: `ran ${cmd}\n`, stderr: '' };
    };
    c = await startTestController({
      inventory: INVENTORY,
      agents,
      env: {
        E2EPOOL_GITHUB_URL: gh.url,
        E2EPOOL_GITHUB_TOKEN: gh.token,
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.1',
        E2EPOOL_POLLER_MIN_AGE_SECONDS: '0',
      },
    });
  });
  afterAll(async () => {
    for (const h of hangs.values()) h.release();
    await c?.stop();
    await gh?.close();
  });

  async function until(name: string, runner: TestRunner, state: string) {
    return waitFor(`${name} to reach ${state}`, async () => {
      const r = await as(runner).status(name);
      return r.body?.state === state ? r.body : undefined;
    });
  }

  it("the job's end comes from GitHub's jobs API (poller); its pause label is off during the reset and back after", async () => {
    const r = R.polled;
    gh.setJob(REPO, 5001, 'in_progress', { runnerId: GH.polled.id });
    const created = await as(r).create(r.id, '5001', { project_id: REPO });
    expect(created.status).toBe(201);
    const name = created.body.name as string;
    const jobPath = `/repos/${REPO}/actions/jobs/5001`;
    await waitFor('a few polls', () => gh.calls.filter((x) => x.path === jobPath).length >= 2);
    expect((await as(r).status(name)).body.state).toBe('created');

    gh.setJob(REPO, 5001, 'completed', { conclusion: 'failure' });
    const done = await until(name, r, 'reset');
    expect(done).toMatchObject({ finalize_status: 'failure', finalize_source: 'poller' });
    expect(agents.commandsFor(r.id)).toEqual(['/opt/reset.sh']);
    // During the reset no e2e job could have been given to it: it lacked the label.
    expect(labelsDuringCommand.get(r.id)).toEqual(['self-hosted', 'Linux', 'X64']);
    expect(gh.runner(GH.polled.id)).toMatchObject({
      custom: ['e2e'],
      changes: [
        { method: 'DELETE', labels: ['e2e'] },
        { method: 'POST', labels: ['e2e'] },
      ],
    });
    expect(gh.runnersMatching(RUNS_ON)).toContain(GH.polled.id);

    await runEnded(c, r.id);
    const ops = await operations(c.ds, name);
    expect(ops.map((o) => `${o.operation}:${o.result}`)).toEqual([
      'create:ok',
      'pause:ok',
      'finalize_queued:ok',
      'reset_cmd:ok',
      'readiness:ok',
      'unpause:ok',
      'reset:ok',
    ]);
    expect(ops.find((o) => o.operation === 'pause')!.detail).toBe(
      `removed labels ["e2e"] from GitHub runner ${GH.polled.id} of ${REPO}`,
    );
    expect(ops.find((o) => o.operation === 'unpause')!.detail).toBe(
      `put back labels ["e2e"] on GitHub runner ${GH.polled.id} of ${REPO}`,
    );
    // Every call carried the admin token.
    expect(new Set(gh.calls.map((x) => x.auth))).toEqual(new Set(['admin']));
  });

  it('a label removal that lands after the labels were put back (an earlier attempt’s, late) is undone, and logged', async () => {
    const r = R.lateRemoval;
    gh.removalLandsAfterRestore(GH.lateRemoval.id);
    const name = (await as(r).create(r.id, '5077')).body.name as string;
    expect((await as(r).finalize(name, 'failure')).status).toBe(202);
    await until(name, r, 'reset');
    await runEnded(c, r.id);
    expect(gh.runner(GH.lateRemoval.id)).toMatchObject({
      custom: ['e2e'],
      changes: [
        { method: 'DELETE', labels: ['e2e'] },
        { method: 'POST', labels: ['e2e'] },
        { method: 'DELETE', labels: ['e2e'] },
        { method: 'POST', labels: ['e2e'] },
      ],
    });
    expect((await operations(c.ds, name)).find((o) => o.operation === 'unpause')).toMatchObject({
      result: 'ok',
      detail: `put back labels ["e2e"] on GitHub runner ${GH.lateRemoval.id} of ${REPO}; labels ["e2e"] were off again after being put back (a removal of an earlier attempt that landed late): put back again`,
    });
  });

  it('a rate-limited poll (429, Retry-After) is tried again after the wait; the repository comes from the inventory', async () => {
    const r = R.rateLimited;
    const jobPath = `/repos/${REPO}/actions/jobs/5002`;
    gh.setJob(REPO, 5002, 'completed', { conclusion: 'success', runnerId: GH.rateLimited.id });
    gh.failNext(
      { pathIncludes: jobPath },
      { kind: 'secondary-rate-limit', retryAfterSeconds: 2, status: 429 },
    );
    // No project_id: the runner's github_repo says where its jobs are.
    const name = (await as(r).create(r.id, '5002')).body.name as string;
    const done = await until(name, r, 'deleted');
    expect(done).toMatchObject({ finalize_status: 'success', finalize_source: 'poller' });
    const polls = gh.calls.filter((x) => x.path === jobPath);
    expect(polls.map((p) => p.status)).toEqual([429, 200]);
    // The retry waited as GitHub asked (2 s), not the retry policy's 1 s.
    expect(polls[1]!.at - polls[0]!.at).toBeGreaterThanOrEqual(1900);
    expect(agents.commandsFor(r.id)).toEqual(['/opt/cleanup.sh']);
  });

  it('a pause label the operator took off themselves stays off: e2epool removes and puts back only the other (organization runner)', async () => {
    const r = R.operatorRemoved;
    gh.setJob(REPO, 5003, 'in_progress', { runnerId: GH.operatorRemoved.id });
    // The operator took gpu off this runner themselves.
    gh.setCustomLabels(GH.operatorRemoved.id, ['e2e']);
    const name = (await as(r).create(r.id, '5003', { project_id: REPO })).body.name as string;
    expect((await as(r).finalize(name, 'failure')).status).toBe(202);
    await until(name, r, 'reset');
    expect(labelsDuringCommand.get(r.id)).toEqual(['self-hosted', 'Linux', 'X64']);
    expect(gh.runner(GH.operatorRemoved.id)).toMatchObject({
      custom: ['e2e'],
      changes: [
        { method: 'DELETE', labels: ['e2e'] },
        { method: 'POST', labels: ['e2e'] },
      ],
    });
    expect(gh.calls.some((x) => x.path.startsWith('/orgs/acme/actions/runners/73/labels'))).toBe(
      true,
    );
  });

  it('GitHub refusing to put the label back (no admin rights) parks the checkpoint in needs_attention, saying what to fix; `retry` after the fix ends it', async () => {
    const r = R.refused;
    gh.setJob(REPO, 5004, 'in_progress', { runnerId: GH.refused.id });
    const labelsPath = `/runners/${GH.refused.id}/labels`;
    gh.failNext(
      { method: 'POST', pathIncludes: labelsPath },
      { kind: 'http', status: 403, body: { message: 'Must have admin rights to Repository.' } },
      Infinity,
    );
    const name = (await as(r).create(r.id, '5004', { project_id: REPO })).body.name as string;
    expect((await as(r).finalize(name, 'failure')).status).toBe(202);
    await until(name, r, 'needs_attention');
    const [row] = await c.ds.query(`SELECT error_detail FROM checkpoints WHERE name = $1`, [name]);
    expect(row.error_detail).toMatch(
      new RegExp(
        `^GitHub runner ${GH.refused.id} of acme/app without its labels \\["e2e"\\]: putting them back failed \\(PermanentFailure: GitHub POST .*: 403 .*Must have admin rights to Repository.*\\)\\. Fix GitHub access \\(E2EPOOL_GITHUB_TOKEN needs admin rights`,
      ),
    );
    expect(gh.runner(GH.refused.id).custom).toEqual([]);

    gh.clearFaults();
    await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).signal('retry');
    await until(name, r, 'reset');
    expect(gh.runner(GH.refused.id).custom).toEqual(['e2e']);
  });

  /** One reconciler pass (what the schedule runs), repairing. */
  const reconcile = async (): Promise<ReconcileFinding[]> =>
    (
      await c.client.workflow.execute('reconcileWorkflow', {
        taskQueue: c.taskQueue,
        workflowId: uniqueId('reconcile-pass'),
        args: [{ repair: true, minAgeSeconds: 0 }],
      })
    ).findings as ReconcileFinding[];

  /** Finalizes a fresh checkpoint and terminates its run while the reset hangs (label off). */
  async function terminateMidReset(r: TestRunner, jobId: number): Promise<string> {
    gh.setJob(REPO, jobId, 'in_progress');
    const name = (await as(r).create(r.id, String(jobId))).body.name as string;
    hangNextCommand(r.id);
    expect((await as(r).finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset running', () => hangs.get(r.id)?.started === true);
    await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).terminate('chaos');
    hangs.get(r.id)!.release();
    return name;
  }

  it('a run terminated mid-reset is adopted by the reconciler; the adopting run puts back the label e2epool removed', async () => {
    const r = R.terminated;
    const name = await terminateMidReset(r, 5005);
    expect(gh.runner(GH.terminated.id).custom).toEqual([]);
    // Which labels are e2epool's is data (runner_pauses), not the log's words.
    await rewordLog(c.ds, name);
    expect((await reconcile()).filter((f) => f.checkpoint === name)).toEqual([
      expect.objectContaining({ kind: 'orphan_checkpoint', action: 'adopted' }),
    ]);
    await until(name, r, 'reset');
    expect(gh.runner(GH.terminated.id)).toMatchObject({
      custom: ['e2e'],
      changes: [
        { method: 'DELETE', labels: ['e2e'] },
        { method: 'POST', labels: ['e2e'] },
      ],
    });
  }, 60_000);

  it('a label left off with no checkpoint responsible is put back by the reconciler, once', async () => {
    const r = R.leftover;
    const name = await terminateMidReset(r, 5006);
    // An operator closes the row by hand: no run will put the label back.
    await c.ds.query(
      `UPDATE checkpoints SET state = 'reset_failed', ended_at = now(), error_detail = 'closed by hand' WHERE name = $1`,
      [name],
    );
    await rewordLog(c.ds, name);
    expect((await reconcile()).filter((f) => f.runnerId === r.id)).toEqual([
      expect.objectContaining({
        kind: 'paused_runner',
        checkpoint: name,
        action: 'unpaused',
        detail: `GitHub runner ${GH.leftover.id} of ${REPO} was left without its labels ["e2e"] by checkpoint ${name}, and no active checkpoint is responsible for it: put back labels ["e2e"]`,
      }),
    ]);
    expect(gh.runner(GH.leftover.id).custom).toEqual(['e2e']);
    expect((await reconcile()).filter((f) => f.runnerId === r.id)).toEqual([]);
  }, 60_000);
});
