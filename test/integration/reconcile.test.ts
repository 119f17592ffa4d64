import pino from 'pino';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  rewordLog,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, proxmoxRunnerYaml, testRunners, uniqueId } from '../helpers/env';
import { scrape, sumOf } from '../helpers/metrics';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';
import type { ReconcileFinding } from '../../activities/reconcile';
import { checkpointWorkflowId, releaseSignal, snapshotNameFor } from '../../common/checkpoint';
import { SA_CHECKPOINT_NAME } from '../../common/search-attributes';
import { loadSettings } from '../../config/settings';
import { ensureReconcileSchedule, scheduleReconciler } from '../../worker/reconcile-schedule';

/**
 * The reconciler: an active checkpoint whose run ended without finishing it
 * (an operator terminated it) is adopted by a new run that resets and
 * unpauses the runner; a runner e2epool left paused with nobody responsible
 * is unpaused; a snapshot whose checkpoint ended is deleted; with repair off
 * each is only reported.
 */
const METAL = ['terminated', 'reportOnly', 'leftover', 'released', 'foreign', 'young'] as const;
const R = testRunners([...METAL, 'vm']);
const GITLAB = {
  terminated: 95,
  reportOnly: 96,
  leftover: 97,
  released: 98,
  foreign: 99,
  young: 100,
} as const;
const VMID = 181;

describe('the reconciler', () => {
  const agents = new FakeAgents();
  let gitlab: GitLabStandIn;
  let pve: ProxmoxStandIn;
  let c: TestController;
  /** Runners whose next reset hangs until `releaseReset(runner)`. */
  const hangs = new Map<string, { held: Promise<void>; release: () => void; started: boolean }>();
  const hangNextReset = (runnerId: string) => {
    let release!: () => void;
    const held = new Promise<void>((res) => (release = res));
    hangs.set(runnerId, { held, release, started: false });
  };
  const resetHanging = (runnerId: string) => hangs.get(runnerId)?.started === true;
  const releaseReset = (runnerId: string) => {
    hangs.get(runnerId)?.release();
    hangs.delete(runnerId);
  };
  let resets = 0;

  beforeAll(async () => {
    [gitlab, pve] = await Promise.all([
      startGitLabStandIn(),
      startProxmoxStandIn({ taskDurationMs: 30 }),
    ]);
    for (const id of Object.values(GITLAB)) gitlab.addRunner(id, { paused: id === GITLAB.foreign });
    pve.addVm('pve1', VMID, {
      status: 'running',
      snapshots: [{ name: 'before-upgrade', description: 'taken by hand' }],
    });
    agents.connectedWhen = (runnerId) =>
      runnerId === R.vm.id ? pve.vm('pve1', VMID).status === 'running' : undefined;
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    agents.onExec = async (runnerId, cmd) => {
      if (cmd === '/opt/reset.sh') {
        if (runnerId === R.terminated.id) resets++;
        const hang = hangs.get(runnerId);
        if (hang && !hang.started) {
          hang.started = true;
          await hang.held;
        }
      }
      return { exitCode: 0, stdout: `ran ${cmd}`, stderr: '' };
    };
    c = await startTestController({
      agents,
      inventory: `runners:\n${METAL.map((k) =>
        bareMetalRunnerYaml(R[k], { reset_cmd: '/opt/reset.sh', gitlab_runner_id: GITLAB[k] }),
      ).join('')}${proxmoxRunnerYaml(pve, { runnerId: R.vm.id, token: R.vm.token, vmid: VMID })}`,
      env: { E2EPOOL_GITLAB_URL: gitlab.url, E2EPOOL_GITLAB_TOKEN: gitlab.token },
    });
  });
  afterAll(async () => {
    for (const h of hangs.values()) h.release();
    await c?.stop();
    await Promise.all([gitlab?.close(), pve?.close()]);
  });
  afterEach(() => gitlab.clearFaults());

  const pass = (
    repair: boolean,
  ): Promise<{ findings: ReconcileFinding[]; pruned: { commands: number; logs: number } }> =>
    c.client.workflow.execute('reconcileWorkflow', {
      taskQueue: c.taskQueue,
      workflowId: uniqueId('reconcile-pass'),
      args: [{ repair, minAgeSeconds: 0 }],
    });
  const reconcile = async (repair: boolean) => (await pass(repair)).findings;
  /** e2epool_runner_paused_seconds_total of a runner, from the worker's /metrics. */
  const pausedSeconds = async (runnerId: string) =>
    sumOf(await scrape(c.worker.metricsUrl), 'e2epool_runner_paused_seconds_total', {
      runner_id: runnerId,
    });

  it('adopts the checkpoint of a terminated run: the runner is reset and unpaused', async () => {
    const r = R.terminated;
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '9920')).body.name as string;
    hangNextReset(r.id);
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset running', () => resets === 1);
    await c.client.workflow
      .getHandle(checkpointWorkflowId(r.id))
      .terminate('chaos: terminated by hand');
    releaseReset(r.id);
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
    // The adopting run's unpause counts the pause the terminated run made.
    expect(await pausedSeconds(r.id)).toBeGreaterThan(0);
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
    const named = async () =>
      (
        await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).describe()
      ).typedSearchAttributes.get(SA_CHECKPOINT_NAME);
    expect(await named()).toBe(name);
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
    // The adopting run is named too (the Web UI finds it by checkpoint), and
    // the next pass sees it holds the checkpoint.
    expect(await named()).toBe(name);
    expect((await reconcile(true)).filter((f) => f.checkpoint === name)).toEqual([]);
    await waitFor('finalize accepted by the adopted run', async () => {
      const res = await api.finalize(name, 'failure');
      return res.status === 202 && res.body.detail === 'Finalize queued';
    });
    await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset');
    expect(gitlab.runner(GITLAB.reportOnly).paused).toBe(false);
  }, 90_000);

  /** Finalizes a fresh checkpoint of `r` and terminates its run while the reset hangs (runner paused). */
  async function terminateMidReset(r: (typeof R)[keyof typeof R], jobId: string) {
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, jobId)).body.name as string;
    hangNextReset(r.id);
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset running', () => resetHanging(r.id));
    await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).terminate('chaos');
    releaseReset(r.id);
    return name;
  }
  /** An operator closes a checkpoint row by hand (as one did with the Python e2epool). */
  const closeByHand = (name: string) =>
    c.ds.query(
      `UPDATE checkpoints SET state = 'reset_failed', ended_at = now(), error_detail = 'closed by hand' WHERE name = $1`,
      [name],
    );
  const mine = (findings: ReconcileFinding[], runnerId: string) =>
    findings.filter((f) => f.runnerId === runnerId);

  it('unpauses a runner e2epool left paused with no checkpoint responsible, after asking GitLab', async () => {
    const r = R.leftover;
    const name = await terminateMidReset(r, '9940');
    expect(gitlab.runner(GITLAB.leftover).paused).toBe(true);
    // Its checkpoint is still active: adopting it is the repair, not an unpause.
    await closeByHand(name);
    // Who paused the runner is data (runner_pauses), not the log's words.
    await rewordLog(c.ds, name);

    expect(mine(await reconcile(false), r.id)).toEqual([
      expect.objectContaining({ kind: 'paused_runner', checkpoint: name, action: 'reported' }),
    ]);
    expect(gitlab.runner(GITLAB.leftover).paused).toBe(true);
    expect(await pausedSeconds(r.id)).toBe(0);
    expect(mine(await reconcile(true), r.id)).toEqual([
      expect.objectContaining({ kind: 'paused_runner', checkpoint: name, action: 'unpaused' }),
    ]);
    // The reconciler's unpause counts the time since e2epool's pause.
    expect(await pausedSeconds(r.id)).toBeGreaterThan(0);
    expect(gitlab.runner(GITLAB.leftover).pausedHistory).toEqual([true, false]);
    expect(mine(await reconcile(true), r.id)).toEqual([]);
    expect((await operations(c.ds, name)).map((o) => [o.operation, o.result])).toEqual(
      expect.arrayContaining([
        ['reconcile:paused_runner', 'skipped'],
        ['reconcile:paused_runner', 'ok'],
      ]),
    );
  }, 60_000);

  it('never unpauses a runner an operator released still paused, nor one somebody else paused', async () => {
    // released: the unpause is refused (token revoked), the operator releases it paused.
    const r = R.released;
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '9950')).body.name as string;
    hangNextReset(r.id);
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset running', () => resetHanging(r.id));
    gitlab.failNext(
      { method: 'PUT', pathIncludes: `/runners/${GITLAB.released}` },
      { kind: 'http', status: 401, body: { message: '401 Unauthorized' } },
      Infinity,
    );
    releaseReset(r.id);
    await waitFor(
      'needs_attention',
      async () => (await api.status(name)).body.state === 'needs_attention',
    );
    await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).signal(releaseSignal);
    await waitFor('the release', async () => (await api.status(name)).body.state === 'reset');
    gitlab.clearFaults();

    // foreign: paused in GitLab before the checkpoint; e2epool's pause was skipped.
    const f = R.foreign;
    const fApi = restClient(() => c.api.url, f.token);
    const fName = (await fApi.create(f.id, '9951')).body.name as string;
    expect((await fApi.finalize(fName, 'failure')).status).toBe(202);
    await waitFor('the reset', async () => (await fApi.status(fName)).body.state === 'reset');

    const findings = await reconcile(true);
    expect(mine(findings, r.id)).toEqual([]);
    expect(mine(findings, f.id)).toEqual([]);
    expect(gitlab.runner(GITLAB.released).paused).toBe(true);
    expect(gitlab.runner(GITLAB.foreign)).toMatchObject({ paused: true, pausedHistory: [] });
    expect((await operations(c.ds, name)).map((o) => o.operation)).toContain('left_paused');
  }, 60_000);

  it("deletes a snapshot whose checkpoint ended; never one e2epool did not make, nor an active checkpoint's", async () => {
    const r = R.vm;
    const api = restClient(() => c.api.url, r.token);
    const snapshots = () =>
      pve
        .vm('pve1', VMID)
        .snapshots.map((s) => s.name)
        .sort();
    const name = (await api.create(r.id, '9960')).body.name as string;
    const snap = snapshotNameFor(name);
    expect(snapshots()).toContain(snap);
    // Its run is terminated before the reset, and the row closed by hand: the snapshot stays.
    await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).terminate('chaos');
    await closeByHand(name);
    // Looks like e2epool's, but no checkpoint of this runner made it.
    pve.vm('pve1', VMID).snapshots.push({
      name: 'forged',
      description: 'e2epool checkpoint job-1-1700000000-deadbeef',
      snaptime: 1700000000,
      vmstate: 0,
    });

    expect(mine(await reconcile(false), r.id)).toEqual([
      expect.objectContaining({ kind: 'orphan_snapshot', checkpoint: name, action: 'reported' }),
    ]);
    expect(snapshots()).toContain(snap);
    expect(mine(await reconcile(true), r.id)).toEqual([
      expect.objectContaining({ kind: 'orphan_snapshot', checkpoint: name, action: 'deleted' }),
    ]);
    expect(snapshots()).toEqual(['before-upgrade', 'forged']);

    // The snapshot of an active checkpoint stays (its create removed the forged one as a stray).
    const next = (await api.create(r.id, '9961')).body.name as string;
    expect(mine(await reconcile(true), r.id)).toEqual([]);
    expect(snapshots()).toEqual(['before-upgrade', snapshotNameFor(next)].sort());
    const metrics = await (await fetch(`${c.api.url}/metrics`)).text();
    expect(metrics).toMatch(
      /e2epool_reconcile_findings_total\{[^}]*kind="orphan_snapshot"[^}]*action="repaired"[^}]*\} 1/,
    );
  }, 60_000);

  it('leaves an orphaned checkpoint younger than E2EPOOL_RECONCILE_MIN_AGE_SECONDS alone, and adopts it once older', async () => {
    const r = R.young;
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '9990')).body.name as string;
    await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).terminate('chaos');
    // The schedule `e2epool worker` makes from its settings, on this test's queue.
    const settings = loadSettings({
      E2EPOOL_TASK_QUEUE: c.taskQueue,
      E2EPOOL_RECONCILE_INTERVAL_SECONDS: '86400',
      E2EPOOL_RECONCILE_MIN_AGE_SECONDS: '3600',
    });
    await scheduleReconciler(c.client, settings, pino({ level: 'silent' }));
    const schedule = c.client.schedule.getHandle(`e2epool-reconcile-${c.taskQueue}`);
    /** Runs one pass of the schedule now, with its arguments; its findings of this runner. */
    const scheduledPass = async () => {
      const before = (await schedule.describe()).info.recentActions.length;
      await schedule.trigger();
      const action = await waitFor('the triggered pass', async () => {
        const actions = (await schedule.describe()).info.recentActions;
        return actions.length > before ? actions[actions.length - 1] : undefined;
      });
      const result = (await c.client.workflow
        .getHandle(action.action.workflow.workflowId)
        .result()) as { findings: ReconcileFinding[] };
      return mine(result.findings, r.id);
    };
    try {
      expect(await scheduledPass()).toEqual([]);
      expect((await api.status(name)).body.state).toBe('created');
      // An hour and a bit later (as Postgres sees it): old enough.
      await c.ds.query(
        `UPDATE checkpoints SET created_at = created_at - interval '61 minutes' WHERE name = $1`,
        [name],
      );
      expect(await scheduledPass()).toEqual([
        expect.objectContaining({ kind: 'orphan_checkpoint', checkpoint: name, action: 'adopted' }),
      ]);
      const held = await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).describe();
      expect(held.status.name).toBe('RUNNING');
    } finally {
      await schedule.delete();
    }
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
