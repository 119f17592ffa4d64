import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import type { FleetSnapshot } from '../../api/ui/fleet';
import { FakeAgents } from '../helpers/fake-agents';
import {
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import {
  proxmoxRunnerBody,
  proxmoxRunnerYaml,
  testRunners,
  uniqueId,
  type TestRunner,
} from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';
import { workflowMetadataQuery } from '@temporalio/workflow';

/**
 * Baseline refresh and fleet rollout on the Proxmox stand-in (docs/operators.md,
 * "Baseline refresh"): registry runners with a golden baseline, and `file`,
 * one of the inventory file, refreshed by baselineRefreshWorkflow and
 * baselineRolloutWorkflow on real Temporal.
 */
const LABELS = ['ok', 'bad', 'roll1', 'roll2', 'roll3', 'file', 'lost', 'ci'] as const;
type Label = (typeof LABELS)[number];
const R = testRunners(LABELS);
const vmid = (l: Label) => 401 + LABELS.indexOf(l);
const BASELINE = 'golden-base';
const OLD = ['e2epool-baseline-20200101000000', 'e2epool-baseline-20210101000000'];
const JOB_FILE = '/tmp/left-by-the-job';
const ADMIN = 'admin-token-baseline-refresh-0123456789abcdef';
const REFRESHED = /^e2epool-baseline-\d{14}$/;
/** The GitLab runner of `ci` (the others have none). */
const CI_GITLAB = 471;
const FILE_GITLAB = 472;
const CLI = join(__dirname, '..', '..', 'bin', 'e2epool.js');
const run = promisify(execFile);

describe('baseline refresh and rollout on Proxmox', () => {
  const agents = new FakeAgents();
  let pve: ProxmoxStandIn;
  let gitlab: GitLabStandIn;
  /** Runners whose e2epool agent stays away, running VM or not. */
  const agentAway = new Set<Label>();
  let c: TestController;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);
  const admin = () => restClient(() => c.api.url, ADMIN).call;
  const vm = (l: Label) => pve.vm('pve1', vmid(l));
  /** The fleet page's data, as its script reads it (logged in with the admin token). */
  const fleet = async (): Promise<FleetSnapshot> => {
    const login = await fetch(`${c.api.url}/ui/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: ADMIN }).toString(),
    });
    const cookie = login.headers.getSetCookie()[0]!.split(';')[0]!;
    return (await (
      await fetch(`${c.api.url}/ui/api/fleet`, { headers: { cookie } })
    ).json()) as FleetSnapshot;
  };
  const runner = async (l: Label) => (await admin()('GET', `/api/runners/${R[l].id}`)).body;
  const snapshots = (l: Label) => vm(l).snapshots.map((s) => s.name);
  const result = (workflowId: string) => c.client.workflow.getHandle(workflowId).result();
  const failureOf = async (workflowId: string) => {
    const err = await result(workflowId).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    return (err as WorkflowFailedError).cause as Error & { details?: unknown[] };
  };

  beforeAll(async () => {
    [pve, gitlab] = await Promise.all([
      startProxmoxStandIn({ taskDurationMs: 20 }),
      startGitLabStandIn(),
    ]);
    gitlab.addRunner(CI_GITLAB);
    gitlab.addRunner(FILE_GITLAB);
    for (const l of LABELS)
      pve.addVm('pve1', vmid(l), {
        status: 'running',
        snapshots: [BASELINE, ...(l === 'ok' ? OLD : [])].map((name) => ({
          name,
          description: 'baseline',
        })),
        agent: '1',
      });
    const labelOf = new Map(LABELS.map((l) => [R[l].id, l]));
    agents.connectedWhen = (runnerId) => {
      const l = labelOf.get(runnerId);
      return l ? vm(l).status === 'running' && !agentAway.has(l) : undefined;
    };
    for (const l of LABELS) agents.connect(R[l].id, new Date(0));
    c = await startTestController({
      inventory: fileInventory(BASELINE),
      agents,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_SECRET_KEY: 'baseline-refresh-secret-key-0123456789',
        E2EPOOL_RESET_MAX_ATTEMPTS: '1',
        E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS: '3',
        // How often a refresh looks whether the runner's checkpoint has ended.
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.2',
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
      },
    });
    for (const l of LABELS) {
      if (l === 'file') continue;
      const res = await admin()(
        'POST',
        '/api/runners',
        proxmoxRunnerBody(pve, R[l].id, vmid(l), {
          baseline_snapshot: BASELINE,
          ...(l === 'ci' ? { gitlab_runner_id: CI_GITLAB } : {}),
        }),
      );
      if (res.status !== 201) throw new Error(JSON.stringify(res.body));
      R[l].token = res.body.token as string;
    }
  });
  afterAll(async () => {
    await c?.stop();
    await Promise.all([pve?.close(), gitlab?.close()]);
  });

  /** The inventory file: `file` with `baseline`. */
  function fileInventory(baseline: string): string {
    return `runners:\n${proxmoxRunnerYaml(pve, {
      runnerId: R.file.id,
      token: R.file.token,
      vmid: vmid('file'),
      extra: { baseline_snapshot: baseline, gitlab_runner_id: FILE_GITLAB },
    })}`;
  }

  const until = (r: TestRunner, name: string, state: string) =>
    waitFor(`${name} to reach ${state}`, async () => {
      const res = await as(r).status(name);
      return res.body?.state === state ? res.body : undefined;
    });
  /** Creates once the API sees the runner undrained. */
  const createWhenUndrained = (l: Label, jobId: string) =>
    waitFor(`a create on ${R[l].id}`, async () => {
      const res = await as(R[l]).create(R[l].id, jobId);
      return res.status === 201 ? (res.body.name as string) : undefined;
    });

  /** The next checkpoint resets to `baseline`: the update (`version`) is there, the job's file is not. */
  async function nextResetsTo(l: Label, jobId: string, baseline: string, version: string) {
    const r = R[l];
    const name = await createWhenUndrained(l, jobId);
    vm(l).files.set(JOB_FILE, 'left by the job');
    vm(l).files.delete('/etc/e2e-version');
    await as(r).finalize(name, 'failure');
    expect(await until(r, name, 'reset')).toMatchObject({ verified: true });
    expect(vm(l).currentParent).toBe(baseline);
    expect(vm(l).files.get('/etc/e2e-version')).toBe(version);
    expect(vm(l).files.has(JOB_FILE)).toBe(false);
    await runEnded(c, r.id);
  }

  it('a refresh waits for the active checkpoint, bakes update_cmd into a new baseline, prunes beyond keep; the next checkpoint resets to it', async () => {
    const r = R.ok;
    expect((await runner('ok')).current_baseline).toBe(BASELINE);
    const busy = await as(r).create(r.id, '9301');
    expect(busy.status).toBe(201);
    const res = await admin()('POST', `/api/runners/${r.id}/baseline`, {
      update_cmd: 'echo v2 > /etc/e2e-version',
      keep: 2,
    });
    expect(res).toEqual({ status: 202, body: { workflow_id: `e2epool-baseline-${r.id}` } });
    // One refresh per runner at a time.
    expect(await admin()('POST', `/api/runners/${r.id}/baseline`, {})).toMatchObject({
      status: 409,
      body: { detail: expect.stringContaining('runs already') },
    });
    await waitFor('the runner drained', async () =>
      (await runner('ok')).draining ? true : undefined,
    );
    const refused = await as(r).create(r.id, '9302');
    expect(refused.status).toBe(423);
    // The refresh waits for the checkpoint; it ends and resets to the old baseline.
    expect(vm('ok').rollbacks).toBe(0);
    await as(r).finalize(busy.body.name as string, 'success');
    const done = (await result(res.body.workflow_id as string)) as {
      baseline: string;
      previous: string;
      deleted: string[];
    };
    expect(done.baseline).toMatch(REFRESHED);
    expect(done).toMatchObject({ previous: BASELINE, deleted: [OLD[0]] });
    expect(snapshots('ok').sort()).toEqual([BASELINE, OLD[1], done.baseline].sort());
    expect(await runner('ok')).toMatchObject({ current_baseline: done.baseline, draining: false });
    // The fleet page shows it once the API has re-read the registry.
    await waitFor('the fleet page to show the new baseline', async () => {
      const row = (await fleet()).runners.find((x) => x.runner_id === r.id);
      return row?.baseline === done.baseline && !row.draining ? row : undefined;
    });
    expect(vm('ok').currentParent).toBe(done.baseline);
    const audit = await c.ds.query(
      `SELECT action, actor FROM admin_audit WHERE runner_id = $1 ORDER BY id`,
      [r.id],
    );
    expect(audit.map((a: { action: string }) => a.action)).toEqual(
      expect.arrayContaining(['baseline-refresh', 'drain', 'baseline', 'undrain']),
    );

    await runEnded(c, r.id);
    await nextResetsTo('ok', '9303', done.baseline, 'v2\n');
  });

  it('a refresh pauses the runner in GitLab while it works, and undrains only once its e2epool agent is back; then unpauses it', async () => {
    const r = R.ci;
    // One checkpoint first: e2epool's pause of an idle runner is recorded on its newest one.
    const first = await as(r).create(r.id, '9321');
    expect(first.status).toBe(201);
    await as(r).finalize(first.body.name as string, 'success');
    await until(r, first.body.name as string, 'reset');
    await runEnded(c, r.id);
    expect(gitlab.runner(CI_GITLAB)).toMatchObject({ paused: false, pausedHistory: [true, false] });

    agentAway.add('ci');
    const res = await admin()('POST', `/api/runners/${r.id}/baseline`, {});
    expect(res.status).toBe(202);
    const handle = c.client.workflow.getHandle(res.body.workflow_id as string);
    await waitFor('the refresh to wait for the agent', async () =>
      ((await handle.query(workflowMetadataQuery)).currentDetails ?? '').includes(
        'waiting for its e2epool agent',
      ),
    );
    // The VM is up on the new snapshot, qemu-ga answers; without the agent it stays drained and paused.
    expect(vm('ci').status).toBe('running');
    expect(await runner('ci')).toMatchObject({ draining: true, current_baseline: BASELINE });
    expect(gitlab.runner(CI_GITLAB)).toMatchObject({
      paused: true,
      pausedHistory: [true, false, true],
    });
    expect((await as(r).create(r.id, '9322')).status).toBe(423);

    agentAway.delete('ci');
    const done = (await handle.result()) as { baseline: string };
    expect(done.baseline).toMatch(REFRESHED);
    expect(await runner('ci')).toMatchObject({ draining: false, current_baseline: done.baseline });
    expect(gitlab.runner(CI_GITLAB)).toMatchObject({
      paused: false,
      pausedHistory: [true, false, true, false],
    });
    const ops = (
      await c.ds.query(
        `SELECT o.operation, o.detail FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
          WHERE c.name = $1 ORDER BY o.started_at, o.id`,
        [first.body.name],
      )
    ).slice(-2) as Array<{ operation: string; detail: string }>;
    expect(ops).toEqual([
      {
        operation: 'pause',
        detail: `GitLab runner ${CI_GITLAB} paused: runner '${r.id}' is drained for a baseline refresh`,
      },
      { operation: 'unpause', detail: `GitLab runner ${CI_GITLAB} unpaused` },
    ]);
  });

  it('a failing update_cmd restores the old baseline and undrains', async () => {
    const r = R.bad;
    const res = await admin()('POST', `/api/runners/${r.id}/baseline`, {
      update_cmd: 'echo half > /etc/half-done && exit 3',
    });
    expect(res.status).toBe(202);
    const cause = await failureOf(res.body.workflow_id as string);
    expect(cause.message).toMatch(/update_cmd exited with 3/);
    expect(cause.message).toContain(`the previous baseline ${BASELINE} is restored`);
    expect(await runner('bad')).toMatchObject({
      current_baseline: BASELINE,
      draining: false,
      quarantined: false,
    });
    expect(snapshots('bad')).toEqual([BASELINE]);
    expect(vm('bad').currentParent).toBe(BASELINE);
    expect(vm('bad').files.has('/etc/half-done')).toBe(false);
    expect(vm('bad').status).toBe('running');
    const name = await createWhenUndrained('bad', '9311');
    await as(r).finalize(name, 'success');
    await until(r, name, 'reset');
    await runEnded(c, r.id);
  });

  it('a refresh whose restore fails too quarantines the runner (source refresh), left drained', async () => {
    const r = R.lost;
    // The update fails, and the previous baseline is gone by then: nothing to restore.
    pve.setExecHandler('pve1', vmid('lost'), () => {
      const snaps = vm('lost').snapshots;
      snaps.splice(
        snaps.findIndex((x) => x.name === BASELINE),
        1,
      );
      return { exitCode: 1, stderr: 'disk gone' };
    });
    const res = await admin()('POST', `/api/runners/${r.id}/baseline`, { update_cmd: 'upgrade' });
    expect(res.status).toBe(202);
    const cause = await failureOf(res.body.workflow_id as string);
    expect(cause.message).toContain('the previous baseline could not be restored');
    expect(await runner('lost')).toMatchObject({
      quarantined: true,
      quarantine_source: 'refresh',
      quarantine_reason: expect.stringContaining('could not be restored'),
      draining: true,
    });
    expect(await as(r).create(r.id, '9501')).toEqual({
      status: 423,
      body: { detail: `Runner '${r.id}' is quarantined` },
    });
    pve.setExecHandler('pve1', vmid('lost'), undefined);
  });

  it("a rollout stops at its canary's failure: the other runners are not touched", async () => {
    pve.setExecHandler('pve1', vmid('roll1'), () => ({ exitCode: 1, stderr: 'apt: broken' }));
    const res = await admin()('POST', '/api/baseline-rollouts', {
      runners: [R.roll2.id, R.roll1.id, R.roll3.id],
      canary: R.roll1.id,
      max_unavailable: 2,
      update_cmd: 'echo v3 > /etc/e2e-version',
    });
    expect(res.status).toBe(202);
    expect(res.body.workflow_id).toMatch(/^e2epool-baseline-rollout-\d{14}-[0-9a-f]{8}$/);
    const cause = await failureOf(res.body.workflow_id as string);
    expect(cause.details?.[0]).toMatchObject({
      refreshed: [],
      failed: [
        { runnerId: R.roll1.id, error: expect.stringContaining('update_cmd exited with 1') },
      ],
      notStarted: [R.roll2.id, R.roll3.id],
    });
    for (const l of ['roll2', 'roll3'] as const) {
      expect(vm(l).rollbacks).toBe(0);
      expect(snapshots(l)).toEqual([BASELINE]);
      expect(await runner(l)).toMatchObject({ current_baseline: BASELINE, draining: false });
      await expect(
        c.client.workflow.getHandle(`e2epool-baseline-${R[l].id}`).describe(),
      ).rejects.toBeInstanceOf(WorkflowNotFoundError);
    }
    expect(await runner('roll1')).toMatchObject({ current_baseline: BASELINE, draining: false });
    pve.setExecHandler('pve1', vmid('roll1'), undefined);
  });

  it('the CLI: a rollout without a canary refreshes every runner; refusals exit 1, usage errors 2', async () => {
    const env = { ...process.env, E2EPOOL_URL: c.api.url, E2EPOOL_ADMIN_TOKEN: ADMIN };
    const cli = (...args: string[]) =>
      run('node', [CLI, 'baseline', ...args], { env }).catch(
        (err: { code: number; stderr: string }) => err,
      );
    expect(await cli('rollout', '--max-unavailable', '1')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--runners a,b or --all'),
    });
    expect(await cli('refresh', R.roll2.id, '--keep', '0')).toMatchObject({ code: 2 });
    expect(await cli('refresh', 'nobody')).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("Runner 'nobody' not found"),
    });
    const { stdout } = (await cli(
      'rollout',
      '--runners',
      `${R.roll2.id},${R.roll3.id}`,
      '--max-unavailable',
      '1',
    )) as { stdout: string };
    const done = await result(JSON.parse(stdout).workflow_id as string);
    expect(done).toEqual({ refreshed: [R.roll2.id, R.roll3.id], failed: [], notStarted: [] });
    for (const l of ['roll2', 'roll3'] as const)
      expect((await runner(l)).current_baseline).toMatch(REFRESHED);
    // A PATCH keeps the refreshed baseline, unless it sets baseline_snapshot: the operator's choice wins.
    const refreshed = (await runner('roll2')).current_baseline;
    const tagged = await admin()('PATCH', `/api/runners/${R.roll2.id}`, { tags: ['e2e'] });
    expect(tagged.body.current_baseline).toBe(refreshed);
    const chosen = await admin()('PATCH', `/api/runners/${R.roll3.id}`, {
      baseline_snapshot: 'hand-made',
    });
    expect(chosen.body).toMatchObject({
      baseline_snapshot: 'hand-made',
      current_baseline: 'hand-made',
    });
  });

  it("an inventory-file runner: refreshed as a registry one, its next checkpoint resets to the new baseline; editing the file's baseline_snapshot makes that current", async () => {
    const r = R.file;
    expect(await runner('file')).toMatchObject({ source: 'inventory', current_baseline: BASELINE });
    const res = await admin()('POST', `/api/runners/${r.id}/baseline`, {
      update_cmd: 'echo v4 > /etc/e2e-version',
    });
    expect(res).toEqual({ status: 202, body: { workflow_id: `e2epool-baseline-${r.id}` } });
    const done = (await result(res.body.workflow_id as string)) as { baseline: string };
    expect(done).toMatchObject({ baseline: expect.stringMatching(REFRESHED), previous: BASELINE });
    expect(await runner('file')).toMatchObject({
      source: 'inventory',
      current_baseline: done.baseline,
      draining: false,
      quarantined: false,
    });
    const audit = await c.ds.query(
      `SELECT action FROM admin_audit WHERE runner_id = $1 ORDER BY id`,
      [r.id],
    );
    expect(audit.map((a: { action: string }) => a.action)).toEqual([
      'baseline-refresh',
      'drain',
      'baseline',
      'undrain',
    ]);

    await nextResetsTo('file', '9401', done.baseline, 'v4\n');

    // The operator edits the file: the new value is current, and stays so when set back.
    const edit = (baseline: string) => {
      writeFileSync(c.inventory.path, fileInventory(baseline));
      expect(c.inventory.reload()).toBe(true);
    };
    edit('hand-made');
    expect((await runner('file')).current_baseline).toBe('hand-made');
    await waitFor('the refreshed baseline forgotten', async () => {
      const [row] = await c.ds.query(
        `SELECT current_baseline FROM runner_state WHERE runner_id = $1`,
        [r.id],
      );
      return row.current_baseline === null;
    });
    edit(BASELINE);
    expect((await runner('file')).current_baseline).toBe(BASELINE);

    // Drained by an operator before a refresh (its drain in runner_state): the
    // refresh leaves it drained, so it stays paused in GitLab (kept_for_drain)
    // until the undrain.
    await runEnded(c, r.id);
    expect((await admin()('POST', `/api/runners/${r.id}/drain`)).body).toMatchObject({
      draining: true,
    });
    const again = await admin()('POST', `/api/runners/${r.id}/baseline`, {});
    expect(again.status).toBe(202);
    await result(again.body.workflow_id as string);
    expect(await runner('file')).toMatchObject({ draining: true });
    expect(gitlab.runner(FILE_GITLAB)).toMatchObject({ paused: true });
    const [kept] = await c.ds.query(
      `SELECT p.state FROM runner_pauses p JOIN checkpoints c ON c.id = p.checkpoint_id
        WHERE c.runner_id = $1 ORDER BY c.id DESC LIMIT 1`,
      [r.id],
    );
    expect(kept).toEqual({ state: 'kept_for_drain' });
    expect((await admin()('POST', `/api/runners/${r.id}/undrain`)).status).toBe(200);
    // A reconciler pass, as the schedule the undrain triggers runs it, unpauses it.
    await c.client.workflow.execute('reconcileWorkflow', {
      taskQueue: c.taskQueue,
      workflowId: uniqueId('reconcile-pass'),
      args: [{ repair: true, minAgeSeconds: 0 }],
    });
    expect(gitlab.runner(FILE_GITLAB)).toMatchObject({ paused: false });
  });

  it('bad input: 422; unknown runner: 404; no admin token: 403', async () => {
    const path = `/api/runners/${R.roll1.id}/baseline`;
    for (const body of [
      { keep: 0 },
      { keep: 1.5 },
      { keep: '2' },
      { update_cmd: '' },
      { update_cmd: 7 },
      { surprise: true },
    ])
      expect((await admin()('POST', path, body)).status).toBe(422);
    expect((await admin()('POST', path, [])).status).toBe(422);
    expect(await admin()('POST', '/api/runners/nobody/baseline', {})).toEqual({
      status: 404,
      body: { detail: "Runner 'nobody' not found" },
    });
    const rollouts = '/api/baseline-rollouts';
    for (const body of [
      {},
      { runners: [] },
      { runners: 'some' },
      { runners: [R.roll1.id], max_unavailable: 0 },
      { runners: [R.roll1.id], canary: R.roll2.id },
      { runners: [R.roll1.id, R.roll1.id] },
    ])
      expect((await admin()('POST', rollouts, body)).status).toBe(422);
    expect((await admin()('POST', rollouts, { runners: ['nobody'] })).status).toBe(404);
    const anon = restClient(() => c.api.url, 'not-the-admin-token-0123456789abcdefgh').call;
    expect((await anon('POST', path, {})).status).toBe(403);
    expect((await anon('POST', rollouts, { runners: 'all' })).status).toBe(403);
  });
});
