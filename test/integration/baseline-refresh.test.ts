import { execFile } from 'node:child_process';
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
import { proxmoxRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Baseline refresh and fleet rollout on the Proxmox stand-in
 * (docs/operators.md, "Baseline refresh"): registry runners with a golden baseline, refreshed by
 * baselineRefreshWorkflow and baselineRolloutWorkflow on real Temporal.
 */
const LABELS = ['ok', 'bad', 'roll1', 'roll2', 'roll3', 'file'] as const;
type Label = (typeof LABELS)[number];
const R = testRunners(LABELS);
const vmid = (l: Label) => 401 + LABELS.indexOf(l);
const BASELINE = 'golden-base';
const OLD = ['e2epool-baseline-20200101000000', 'e2epool-baseline-20210101000000'];
const JOB_FILE = '/tmp/left-by-the-job';
const ADMIN = 'admin-token-baseline-refresh-0123456789abcdef';
const REFRESHED = /^e2epool-baseline-\d{14}$/;
const CLI = join(__dirname, '..', '..', 'bin', 'e2epool.js');
const run = promisify(execFile);

describe('baseline refresh and rollout on Proxmox', () => {
  const agents = new FakeAgents();
  let pve: ProxmoxStandIn;
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
    pve = await startProxmoxStandIn({ taskDurationMs: 20 });
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
      return l ? vm(l).status === 'running' : undefined;
    };
    for (const l of LABELS) agents.connect(R[l].id, new Date(0));
    c = await startTestController({
      inventory: `runners:\n${proxmoxRunnerYaml(pve, {
        runnerId: R.file.id,
        token: R.file.token,
        vmid: vmid('file'),
        extra: { baseline_snapshot: BASELINE },
      })}`,
      agents,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_SECRET_KEY: 'baseline-refresh-secret-key-0123456789',
        E2EPOOL_RESET_MAX_ATTEMPTS: '1',
        E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS: '3',
        // How often a refresh looks whether the runner's checkpoint has ended.
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.2',
      },
    });
    const [user, tokenName] = pve.tokenId.split('!');
    for (const l of LABELS) {
      if (l === 'file') continue;
      const res = await admin()('POST', '/api/runners', {
        runner_id: R[l].id,
        backend: 'proxmox',
        proxmox_host: pve.url,
        proxmox_user: user,
        proxmox_token_name: tokenName,
        proxmox_token_value: pve.tokenSecret,
        proxmox_node: 'pve1',
        proxmox_vmid: vmid(l),
        baseline_snapshot: BASELINE,
      });
      if (res.status !== 201) throw new Error(JSON.stringify(res.body));
      R[l].token = res.body.token as string;
    }
  });
  afterAll(async () => {
    await c?.stop();
    await pve?.close();
  });

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

    // The next checkpoint resets to the new baseline: the update is there, the job's file is not.
    await runEnded(c, r.id);
    const name = await createWhenUndrained('ok', '9303');
    vm('ok').files.set(JOB_FILE, 'left by the job');
    vm('ok').files.delete('/etc/e2e-version');
    await as(r).finalize(name, 'failure');
    expect(await until(r, name, 'reset')).toMatchObject({ verified: true });
    expect(vm('ok').currentParent).toBe(done.baseline);
    expect(vm('ok').files.get('/etc/e2e-version')).toBe('v2\n');
    expect(vm('ok').files.has(JOB_FILE)).toBe(false);
    await runEnded(c, r.id);
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

  it('bad input: 422; unknown runner: 404; a file or non-Proxmox runner: 409; no admin token: 403', async () => {
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
    expect((await admin()('POST', `/api/runners/${R.file.id}/baseline`, {})).status).toBe(409);
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
