import { FakeAgents } from '../helpers/fake-agents';
import { restClient, startTestController, type TestController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, uniqueId } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import type { ReconcileFinding } from '../../activities/reconcile';
import { checkpointWorkflowId } from '../../common/checkpoint';
import { ensureReconcileSchedule } from '../../worker/reconcile-schedule';

/**
 * The reconciler: an active checkpoint whose run ended without finishing it
 * (an operator terminated it) is adopted by a new run that resets and
 * unpauses the runner; with repair off it is only reported.
 */
const R = testRunners(['terminated', 'reportOnly']);
const GITLAB = { terminated: 95, reportOnly: 96 } as const;

describe('the reconciler', () => {
  const agents = new FakeAgents();
  let gitlab: GitLabStandIn;
  let c: TestController;
  let release!: () => void;
  const held = new Promise<void>((res) => (release = res));
  let resets = 0;

  beforeAll(async () => {
    gitlab = await startGitLabStandIn();
    for (const id of Object.values(GITLAB)) gitlab.addRunner(id);
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    // The first reset of the terminated runner hangs (its run is terminated meanwhile).
    agents.onExec = async (runnerId, cmd) => {
      if (runnerId === R.terminated.id && cmd === '/opt/reset.sh' && ++resets === 1) await held;
      return { exitCode: 0, stdout: `ran ${cmd}`, stderr: '' };
    };
    c = await startTestController({
      agents,
      inventory: `runners:\n${(['terminated', 'reportOnly'] as const)
        .map((k) =>
          bareMetalRunnerYaml(R[k], { reset_cmd: '/opt/reset.sh', gitlab_runner_id: GITLAB[k] }),
        )
        .join('')}`,
      env: { E2EPOOL_GITLAB_URL: gitlab.url, E2EPOOL_GITLAB_TOKEN: gitlab.token },
    });
  });
  afterAll(async () => {
    release();
    await c?.stop();
    await gitlab?.close();
  });

  const pass = (
    repair: boolean,
  ): Promise<{ findings: ReconcileFinding[]; pruned: { commands: number; logs: number } }> =>
    c.client.workflow.execute('reconcileWorkflow', {
      taskQueue: c.taskQueue,
      workflowId: uniqueId('reconcile-pass'),
      args: [{ repair, minAgeSeconds: 0 }],
    });
  const reconcile = async (repair: boolean) => (await pass(repair)).findings;

  it('adopts the checkpoint of a terminated run: the runner is reset and unpaused', async () => {
    const r = R.terminated;
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '9920')).body.name as string;
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset running', () => resets === 1);
    await c.client.workflow
      .getHandle(checkpointWorkflowId(r.id))
      .terminate('chaos: terminated by hand');
    release();
    expect(gitlab.runner(GITLAB.terminated).paused).toBe(true);
    expect((await api.status(name)).body.state).toBe('finalize_queued');

    const findings = await reconcile(true);
    expect(findings.filter((f) => f.checkpoint === name)).toEqual([
      expect.objectContaining({ kind: 'orphan_checkpoint', runnerId: r.id, action: 'adopted' }),
    ]);
    await waitFor(
      'the adopted reset',
      async () => (await api.status(name)).body.state === 'reset',
      {
        timeoutMs: 60_000,
      },
    );
    expect(resets).toBe(2);
    expect(gitlab.runner(GITLAB.terminated)).toMatchObject({
      paused: false,
      pausedHistory: [true, false],
    });
    // A second pass finds nothing left to repair.
    expect((await reconcile(true)).filter((f) => f.checkpoint === name)).toEqual([]);
    const metrics = await (await fetch(`${c.api.url}/metrics`)).text();
    expect(metrics).toMatch(
      /e2epool_reconcile_findings_total\{[^}]*kind="orphan_checkpoint"[^}]*action="repaired"[^}]*\} 1/,
    );
  }, 90_000);

  it('with repair off it reports and changes nothing; a healthy checkpoint is never a finding', async () => {
    const r = R.reportOnly;
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '9930')).body.name as string;
    expect((await reconcile(true)).filter((f) => f.checkpoint === name)).toEqual([]);
    await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).terminate('chaos');

    const findings = await reconcile(false);
    expect(findings.filter((f) => f.checkpoint === name)).toEqual([
      expect.objectContaining({ action: 'reported' }),
    ]);
    expect((await api.status(name)).body.state).toBe('created');

    // Repaired: the adopted run waits for the job again, and finalize reaches it.
    expect((await reconcile(true)).filter((f) => f.checkpoint === name)).toEqual([
      expect.objectContaining({ action: 'adopted' }),
    ]);
    await waitFor('finalize accepted by the adopted run', async () => {
      const res = await api.finalize(name, 'failure');
      return res.status === 202 && res.body.detail === 'Finalize queued';
    });
    await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset');
    expect(gitlab.runner(GITLAB.reportOnly).paused).toBe(false);
  }, 90_000);

  it('every worker keeps one schedule per task queue up to date', async () => {
    const taskQueue = uniqueId('tq-schedule');
    const id = await ensureReconcileSchedule(c.client, {
      taskQueue,
      intervalSeconds: 60,
      repair: true,
    });
    expect(id).toBe(`e2epool-reconcile-${taskQueue}`);
    await ensureReconcileSchedule(c.client, { taskQueue, intervalSeconds: 90, repair: false });
    const handle = c.client.schedule.getHandle(id);
    try {
      const d = await handle.describe();
      expect(d.spec.intervals?.map((x) => x.every)).toEqual([90_000]);
      expect(d.action).toMatchObject({
        workflowType: 'reconcileWorkflow',
        taskQueue,
        args: [{ repair: false }],
      });
    } finally {
      await handle.delete();
    }
  });

  it('retention prunes finished commands and the logs of ended checkpoints older than E2EPOOL_RETENTION_DAYS, nothing else', async () => {
    const old = `now() - interval '31 days'`;
    const [{ id: ended }] = await c.ds.query(
      `INSERT INTO checkpoints (name, runner_id, job_id, backend, state, workflow_id, created_at, ended_at)
       VALUES ($1, $2, '1', 'bare_metal', 'reset', 'wf-old', ${old}, ${old}) RETURNING id`,
      [`job-1-1-${uniqueId('').slice(1)}`, R.reportOnly.id],
    );
    const log = (checkpointId: number, key: string, when: string) =>
      c.ds.query(
        `INSERT INTO operation_logs (checkpoint_id, idempotency_key, operation, runner_id, result, attempt, started_at)
         VALUES ($1, $2, 'reset_cmd', $3, 'ok', 1, ${when})`,
        [checkpointId, key, R.reportOnly.id],
      );
    const oldKey = uniqueId('old-log');
    const recentKey = uniqueId('recent-log');
    await log(ended, oldKey, old);
    await log(ended, recentKey, 'now()');
    const cmd = (id: string, state: string, when: string) =>
      c.ds.query(
        `INSERT INTO agent_commands (id, runner_id, cmd, timeout_seconds, state, created_at, updated_at)
         VALUES ($1, $2, 'true', 5, $3, ${when}, ${when})`,
        [id, R.reportOnly.id, state],
      );
    const oldDone = uniqueId('old-done');
    const oldPending = uniqueId('old-pending');
    const recentDone = uniqueId('recent-done');
    await cmd(oldDone, 'done', old);
    await cmd(oldPending, 'pending', old);
    await cmd(recentDone, 'done', 'now()');

    expect((await pass(false)).pruned).toEqual({ commands: 0, logs: 0 });
    const { pruned } = await pass(true);
    expect(pruned.commands).toBeGreaterThanOrEqual(1);
    expect(pruned.logs).toBeGreaterThanOrEqual(1);
    const keys = (await c.ds.query(`SELECT idempotency_key AS k FROM operation_logs`)).map(
      (r: { k: string }) => r.k,
    );
    expect(keys).toContain(recentKey);
    expect(keys).not.toContain(oldKey);
    const ids = (await c.ds.query(`SELECT id FROM agent_commands`)).map(
      (r: { id: string }) => r.id,
    );
    expect(ids).toEqual(expect.arrayContaining([oldPending, recentDone]));
    expect(ids).not.toContain(oldDone);
  });
});
