import { checkpointWorkflowId, releaseSignal, retrySignal } from '../../common/checkpoint';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { proxmoxRunnerYaml } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Proxmox runners end to end: REST → Temporal → activities → Proxmox and
 * GitLab over HTTP (stand-ins that behave like the real APIs) → Postgres.
 */
describe('proxmox checkpoints over REST', () => {
  const agents = new FakeAgents();
  let pve: ProxmoxStandIn;
  let gitlab: GitLabStandIn;
  let c: TestController;
  const vms = ['vm-1', 'vm-2', 'vm-3', 'vm-4', 'vm-5', 'vm-6', 'vm-7', 'vm-8'];
  const vmid = (runner: string) => 100 + Number(runner.split('-')[1]);
  const gitlabRunner = (runner: string) => 40 + Number(runner.split('-')[1]);
  const as = (runner: string) => restClient(() => c.api.url, `tok-${runner}`);

  beforeAll(async () => {
    [pve, gitlab] = await Promise.all([
      startProxmoxStandIn({ taskDurationMs: 30 }),
      startGitLabStandIn(),
    ]);
    const inventory = ['runners:\n'];
    for (const r of vms) {
      pve.addVm('pve1', vmid(r), { status: 'running' });
      gitlab.addRunner(gitlabRunner(r));
      inventory.push(
        proxmoxRunnerYaml(pve, {
          runnerId: r,
          token: `tok-${r}`,
          vmid: vmid(r),
          extra: { gitlab_runner_id: gitlabRunner(r), cleanup_cmd: '/opt/cleanup.sh' },
        }),
      );
    }
    // The agent is back once the VM runs again after the boot.
    agents.connectedWhen = (runnerId) =>
      vms.includes(runnerId) ? pve.vm('pve1', vmid(runnerId)).status === 'running' : undefined;
    for (const r of vms) agents.connect(r, new Date(0));
    c = await startTestController({
      inventory: inventory.join(''),
      agents,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_RESET_MAX_ATTEMPTS: '2',
        E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS: '3',
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.2',
        E2EPOOL_POLLER_MIN_AGE_SECONDS: '0',
        E2EPOOL_CHECKPOINT_TTL_SECONDS: '60',
        E2EPOOL_FINALIZE_ACK_SECONDS: '1',
      },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await Promise.all([pve?.close(), gitlab?.close()]);
  });
  afterEach(() => {
    pve.clearFaults();
    gitlab.clearFaults();
  });

  async function until(runner: string, name: string, state: string, timeoutMs = 20_000) {
    return waitFor(
      `${name} to reach ${state}`,
      async () => {
        const r = await as(runner).status(name);
        return r.body?.state === state ? r.body : undefined;
      },
      { timeoutMs },
    );
  }

  it('failure: snapshot, then pause (before the 202), stop, rollback, start, readiness, delete snapshot, unpause', async () => {
    const created = await as('vm-1').create('vm-1', '9001');
    expect(created.status).toBe(201);
    const name = created.body.name as string;
    const vm = pve.vm('pve1', 101);
    expect(vm.snapshots).toEqual([
      expect.objectContaining({ name, description: `e2epool checkpoint ${name}` }),
    ]);

    const fin = await as('vm-1').finalize(name, 'failure');
    expect(fin).toEqual({
      status: 202,
      body: { detail: 'Finalize queued', checkpoint_name: name },
    });
    // The pause landed before the 202: GitLab cannot hand the runner a new job meanwhile.
    expect(gitlab.runner(41).pausedHistory).toEqual([true]);

    await until('vm-1', name, 'reset');
    expect(vm).toMatchObject({ status: 'running', rollbacks: 1, snapshots: [] });
    expect(gitlab.runner(41)).toMatchObject({ paused: false, pausedHistory: [true, false] });
    const ops = (await operations(c.ds, name)).map((o) => `${o.operation}:${o.result}`);
    expect(ops).toEqual([
      'create:ok',
      'snapshot:ok',
      'poller:skipped',
      'finalize_queued:ok',
      'pause:ok',
      'stop:ok',
      'rollback:ok',
      'start:ok',
      'readiness:ok',
      'delete_snapshot:ok',
      'unpause:ok',
      'reset:ok',
    ]);
    // Every Proxmox mutation was awaited through its task.
    const posts = pve.calls.filter(
      (x) => x.method !== 'GET' && x.path.includes('/qemu/101/'),
    ).length;
    const taskPolls = pve.calls.filter(
      (x) => x.path.includes('/tasks/') && x.path.endsWith('/status'),
    ).length;
    expect(taskPolls).toBeGreaterThanOrEqual(posts);
  });

  it('success: cleanup_cmd on the VM, snapshot deleted, no rollback (state deleted)', async () => {
    const name = (await as('vm-2').create('vm-2', '9002')).body.name as string;
    expect((await as('vm-2').finalize(name, 'success')).status).toBe(202);
    await until('vm-2', name, 'deleted');
    expect(pve.vm('pve1', 102)).toMatchObject({ rollbacks: 0, snapshots: [], status: 'running' });
    expect(agents.commandsFor('vm-2')).toEqual(['/opt/cleanup.sh']);
    expect(gitlab.runner(42).pausedHistory).toEqual([true, false]);
  });

  it('canceled takes the reset path; a job id Proxmox cannot use in a name gets a derived snapshot name', async () => {
    const name = (await as('vm-3').create('vm-3', 'build.42')).body.name as string;
    expect(name).toMatch(/^job-build\.42-\d+-[0-9a-f]{8}$/);
    const snap = pve.vm('pve1', 103).snapshots[0]!;
    expect(snap.name).toMatch(/^e2epool-\d+-[0-9a-f]{8}$/);
    expect(snap.description).toBe(`e2epool checkpoint ${name}`);
    await as('vm-3').finalize(name, 'canceled');
    await until('vm-3', name, 'reset');
    expect(pve.vm('pve1', 103)).toMatchObject({ rollbacks: 1, snapshots: [] });
  });

  it("removes (and logs) a stray e2epool snapshot before taking a new one, and never touches others'", async () => {
    const vm = pve.vm('pve1', 104);
    vm.snapshots.push(
      { name: 'golden', description: 'base image', snaptime: 1, vmstate: 0 },
      {
        name: 'job-7-1700000000-deadbeef',
        description: 'e2epool checkpoint job-7-1700000000-deadbeef',
        snaptime: 2,
        vmstate: 0,
      },
    );
    const name = (await as('vm-4').create('vm-4', '9004')).body.name as string;
    expect(vm.snapshots.map((s) => s.name).sort()).toEqual(['golden', name].sort());
    const stray = (await operations(c.ds, name)).find(
      (o) => o.operation === 'remove_stray_snapshot',
    );
    expect(stray).toMatchObject({
      result: 'ok',
      detail: expect.stringContaining("'job-7-1700000000-deadbeef'"),
    });
    await as('vm-4').finalize(name, 'failure');
    await until('vm-4', name, 'reset');
    expect(vm.snapshots.map((s) => s.name)).toEqual(['golden']);
  });

  it('retries a transient Proxmox error (596) and answers 201', async () => {
    pve.failNext(
      { method: 'POST', pathIncludes: '/qemu/105/snapshot' },
      { kind: 'http', status: 596, reason: 'Broken pipe' },
    );
    const res = await as('vm-5').create('vm-5', '9005');
    expect(res.status).toBe(201);
    expect(pve.vm('pve1', 105).snapshots).toHaveLength(1);
    await as('vm-5').finalize(res.body.name, 'failure');
    await until('vm-5', res.body.name, 'reset');
  });

  it('a snapshot that cannot be taken ends as create_failed with 502, leaving no snapshot and no active row', async () => {
    pve.failNext(
      { taskType: 'qmsnapshot' },
      { kind: 'task', exitstatus: 'snapshot feature is not available' },
      Infinity,
    );
    const res = await as('vm-6').create('vm-6', '9006');
    expect(res.status).toBe(502);
    expect(res.body.detail).toBe(
      'Checkpoint could not be created: PermanentFailure: Proxmox task failed: snapshot feature is not available',
    );
    const rows = await c.ds.query(
      `SELECT state, error_detail FROM checkpoints WHERE runner_id = 'vm-6'`,
    );
    expect(rows).toEqual([
      {
        state: 'create_failed',
        error_detail: expect.stringContaining('snapshot feature is not available'),
      },
    ]);
    expect(pve.vm('pve1', 106).snapshots).toEqual([]);
    pve.clearFaults();
    const again = await as('vm-6').create('vm-6', '9007');
    expect(again.status).toBe(201);
    await as('vm-6').finalize(again.body.name, 'failure');
    await until('vm-6', again.body.name, 'reset');
  });

  it('a snapshot task that never finishes ends as create_failed with 504', async () => {
    pve.failNext({ taskType: 'qmsnapshot' }, { kind: 'hang' }, Infinity);
    const res = await as('vm-7').create('vm-7', '9008');
    expect(res.status).toBe(504);
    expect(res.body.detail).toMatch(
      /^Checkpoint could not be created: BackendTimeout: .*VM 107.* still running/,
    );
    pve.clearFaults();
    // The half-made snapshot is found and removed before the next one is taken.
    await waitFor('the hung task to finish', () => pve.vm('pve1', 107).lock === undefined);
    const again = await as('vm-7').create('vm-7', '9009');
    expect(again.status).toBe(201);
    expect(pve.vm('pve1', 107).snapshots.map((s) => s.name)).toEqual([again.body.name]);
    await as('vm-7').finalize(again.body.name, 'failure');
    await until('vm-7', again.body.name, 'reset');
  }, 60_000);

  it('a rollback that fails every time → needs_attention with the runner still paused; `retry` after the fix → reset, unpaused', async () => {
    const name = (await as('vm-8').create('vm-8', '9010')).body.name as string;
    pve.failNext(
      { taskType: 'qmrollback' },
      { kind: 'task', exitstatus: 'VM is locked (backup)' },
      Infinity,
    );
    await as('vm-8').finalize(name, 'failure');
    const stuck = await until('vm-8', name, 'needs_attention');
    expect(stuck.finalize_status).toBe('failure');
    expect(gitlab.runner(48)).toMatchObject({ paused: true, pausedHistory: [true] });
    const handle = c.client.workflow.getHandle(checkpointWorkflowId('vm-8'));

    pve.clearFaults();
    await handle.signal(retrySignal);
    await until('vm-8', name, 'reset');
    expect(gitlab.runner(48)).toMatchObject({ paused: false, pausedHistory: [true, false] });
    expect(pve.vm('pve1', 108)).toMatchObject({ rollbacks: 1, snapshots: [], status: 'running' });
    // Signals to a finished run change nothing.
    await handle.signal(releaseSignal).catch(() => undefined);
    expect((await as('vm-8').status(name)).body.state).toBe('reset');
  });

  it('the GitLab poller ends a job: success → deleted, with source poller', async () => {
    gitlab.setJob(7, 700, 'running');
    const name = (await as('vm-1').create('vm-1', '700', { project_id: 7 })).body.name as string;
    gitlab.setJob(7, 700, 'success');
    const done = await until('vm-1', name, 'deleted');
    expect(done).toMatchObject({ finalize_status: 'success', finalize_source: 'poller' });
    const polls = gitlab.calls.filter((x) => x.path === '/api/v4/projects/7/jobs/700');
    expect(polls.length).toBeGreaterThan(0);
  });

  it('finalize from the hook and the poller at the same moment → exactly one reset', async () => {
    gitlab.setJob(8, 800, 'running');
    const name = (await as('vm-2').create('vm-2', '800', { project_id: '8' })).body.name as string;
    const before = pve.vm('pve1', 102).rollbacks;
    const pausesBefore = gitlab.runner(42).pausedHistory.length;
    gitlab.setJob(8, 800, 'failed');
    const hook = await as('vm-2').finalize(name, 'failure');
    expect(hook.status).toBe(202);
    const done = await until('vm-2', name, 'reset');
    expect(['hook', 'poller']).toContain(done.finalize_source);
    expect(pve.vm('pve1', 102).rollbacks).toBe(before + 1);
    expect(gitlab.runner(42).pausedHistory.slice(pausesBefore)).toEqual([true, false]);
  });

  it('honours GitLab 429 Retry-After when pausing, and still pauses before resetting', async () => {
    gitlab.failNext(
      { method: 'PUT', pathIncludes: '/runners/43' },
      { kind: 'rate-limit', retryAfterSeconds: 1 },
    );
    const name = (await as('vm-3').create('vm-3', '9011')).body.name as string;
    const t0 = Date.now();
    await as('vm-3').finalize(name, 'failure');
    await until('vm-3', name, 'reset');
    const puts = gitlab.calls.filter(
      (x) => x.method === 'PUT' && x.path === '/api/v4/runners/43' && x.at >= t0,
    );
    expect(puts.map((p) => p.status)).toEqual([429, 200, 200]);
    expect(puts[1]!.at - puts[0]!.at).toBeGreaterThanOrEqual(900);
  });

  it('answers the hook finalize after FINALIZE_ACK_SECONDS when GitLab is slow, and keeps pausing durably', async () => {
    const name = (await as('vm-4').create('vm-4', '9012')).body.name as string;
    gitlab.failNext({ method: 'PUT', pathIncludes: '/runners/44' }, { kind: 'delay', ms: 3000 });
    const t0 = Date.now();
    const fin = await as('vm-4').finalize(name, 'failure');
    const took = Date.now() - t0;
    expect(fin).toEqual({
      status: 202,
      body: { detail: 'Finalize queued', checkpoint_name: name },
    });
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(2900);
    const before = pve.vm('pve1', 104).rollbacks;
    await until('vm-4', name, 'reset');
    // The reset waited for the pause: the rollback came after GitLab answered.
    const pausedAt = gitlab.calls.find(
      (x) => x.method === 'PUT' && x.path === '/api/v4/runners/44' && x.at >= t0,
    )!.at;
    const rollbackAt = pve.calls.find(
      (x) =>
        x.method === 'POST' &&
        x.path.endsWith('/rollback') &&
        x.path.includes('/104/') &&
        x.at >= t0,
    )!.at;
    expect(rollbackAt).toBeGreaterThanOrEqual(pausedAt + 2900);
    expect(pve.vm('pve1', 104).rollbacks).toBe(before + 1);
    expect(gitlab.runner(44).pausedHistory.slice(-2)).toEqual([true, false]);
  });

  it('keeps secrets out of workflow histories', async () => {
    const handle = c.client.workflow.getHandle(checkpointWorkflowId('vm-1'));
    const history = JSON.stringify(await handle.fetchHistory());
    expect(history).not.toContain(pve.tokenSecret);
    expect(history).not.toContain(gitlab.token);
    expect(history).not.toContain('tok-vm-1');
  });
});
