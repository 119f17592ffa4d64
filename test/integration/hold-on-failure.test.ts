import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { ReconcileFinding } from '../../activities/reconcile';
import { checkpointWorkflowId, stateQuery } from '../../common/checkpoint';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, uniqueId, type TestRunner } from '../helpers/env';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * Hold for debugging on a bare-metal runner (`hold_on_failure_seconds`): after
 * a failed job the runner stays paused in GitLab and un-reset, the reconciler
 * leaves it alone, and `release-hold` (sent with the real temporal CLI) lets
 * the reset and the unpause follow; a job the GitLab poll finds failed is held
 * for its seconds, then reset.
 */
const R = testRunners(['held', 'polled']);
const GITLAB = { held: 71, polled: 72 } as const;
const RESET = '/opt/reset.sh';

describe('hold for debugging after a failed job (real Temporal, real Postgres, GitLab stand-in)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gitlab: GitLabStandIn;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);
  /** The real temporal CLI, as an operator runs it (asynchronously: this process runs the worker). */
  const temporal = async (...args: string[]): Promise<string> =>
    (
      await promisify(execFile)(
        shared().temporalBin,
        [...args, '--address', shared().temporalAddress, '--namespace', 'default'],
        { encoding: 'utf8' },
      )
    ).stdout;

  beforeAll(async () => {
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    gitlab = await startGitLabStandIn();
    for (const id of Object.values(GITLAB)) gitlab.addRunner(id);
    c = await startTestController({
      inventory: `runners:\n${[
        bareMetalRunnerYaml(R.held, {
          reset_cmd: RESET,
          gitlab_runner_id: GITLAB.held,
          hold_on_failure_seconds: 3600,
        }),
        bareMetalRunnerYaml(R.polled, {
          reset_cmd: RESET,
          gitlab_runner_id: GITLAB.polled,
          hold_on_failure_seconds: 2,
        }),
      ].join('')}`,
      agents,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.2',
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

  it('keeps the runner paused and un-reset, untouched by the reconciler, until `release-hold`; then resets and unpauses', async () => {
    const r = R.held;
    const api = as(r);
    const name = (await api.create(r.id, '7101')).body.name as string;
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    const hold = await waitFor('the hold row', async () =>
      (await operations(c.ds, name)).find((o) => o.operation === 'hold'),
    );
    const handle = c.client.workflow.getHandle(checkpointWorkflowId(r.id));
    const view = await handle.query(stateQuery);
    expect(view).toMatchObject({ phase: 'held', state: 'finalize_queued', runnerPaused: true });
    expect(Date.parse(view.heldUntil!) - Date.now()).toBeGreaterThan(3500_000);
    expect(hold).toMatchObject({
      result: 'ok',
      detail: `held for debugging until ${view.heldUntil}; signal release-hold to reset now`,
    });
    // What the Web UI shows, as the CLI prints it.
    expect(
      await temporal('workflow', 'metadata', '--workflow-id', checkpointWorkflowId(r.id)),
    ).toContain(`held for debugging until ${view.heldUntil}`);

    // A reconciler pass during the hold finds nothing and changes nothing.
    const pass: { findings: ReconcileFinding[] } = await c.client.workflow.execute(
      'reconcileWorkflow',
      {
        taskQueue: c.taskQueue,
        workflowId: uniqueId('reconcile-pass'),
        args: [{ repair: true, minAgeSeconds: 0 }],
      },
    );
    expect(pass.findings).toEqual([]);
    expect((await api.status(name)).body).toMatchObject({
      state: 'finalize_queued',
      finalize_status: 'failure',
    });
    expect(agents.commandsFor(r.id)).toEqual([]);
    expect(gitlab.runner(GITLAB.held)).toMatchObject({ paused: true, pausedHistory: [true] });
    expect((await handle.query(stateQuery)).phase).toBe('held');
    expect((await operations(c.ds, name)).map((o) => o.operation)).not.toContain(
      'reconcile:orphan_checkpoint',
    );

    await temporal(
      'workflow',
      'signal',
      '--workflow-id',
      checkpointWorkflowId(r.id),
      '--name',
      'release-hold',
    );
    await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset');
    expect(agents.commandsFor(r.id)).toEqual([RESET]);
    expect(gitlab.runner(GITLAB.held)).toMatchObject({
      paused: false,
      pausedHistory: [true, false],
    });
    await runEnded(c, r.id);
    const ops = (await operations(c.ds, name)).map((o) => o.operation);
    expect(ops.filter((o) => o !== 'poller')).toEqual([
      'create',
      'pause',
      'finalize_queued',
      'hold',
      'hold',
      'reset_cmd',
      'readiness',
      'unpause',
      'reset',
    ]);
    expect((await operations(c.ds, name)).filter((o) => o.operation === 'hold')[1]!.detail).toBe(
      `release-hold: the hold ended early (it was to last until ${view.heldUntil}); resetting now`,
    );
  }, 60_000);

  it('a job the GitLab poll finds failed is held for hold_on_failure_seconds, then reset', async () => {
    const r = R.polled;
    gitlab.setJob(9, 7102, 'running');
    const name = (await as(r).create(r.id, '7102', { project_id: '9' })).body.name as string;
    gitlab.setJob(9, 7102, 'failed');
    const held = await waitFor('the hold', async () => {
      const v = await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).query(stateQuery);
      return v.phase === 'held' ? v : undefined;
    });
    const heldAt = Date.now();
    expect(held).toMatchObject({ finalizeStatus: 'failure', finalizeSource: 'poller' });
    expect(agents.commandsFor(r.id)).toEqual([]);
    expect(gitlab.runner(GITLAB.polled).paused).toBe(true);

    await waitFor('the reset', async () => (await as(r).status(name)).body.state === 'reset');
    expect(Date.now() - heldAt).toBeGreaterThanOrEqual(1000);
    const resetAt = agents.commands.find((x) => x.runnerId === r.id)!.at.getTime();
    expect(resetAt).toBeGreaterThanOrEqual(Date.parse(held.heldUntil!) - 1000);
    expect(gitlab.runner(GITLAB.polled).pausedHistory).toEqual([true, false]);
    await runEnded(c, r.id);
    expect((await operations(c.ds, name)).filter((o) => o.operation === 'hold')).toEqual([
      expect.objectContaining({
        detail: `held for debugging until ${held.heldUntil}; signal release-hold to reset now`,
      }),
    ]);
  }, 60_000);
});
