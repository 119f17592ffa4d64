import { checkpointWorkflowId, releaseSignal, retrySignal } from '../../common/checkpoint';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  stepsBesidesPollerNote,
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { proxmoxRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Proxmox runners end to end: REST → Temporal → activities → Proxmox and
 * GitLab over HTTP (stand-ins that behave like the real APIs) → Postgres.
 */
// One runner (so one workflow id on the shared Temporal server), one VM and one GitLab runner per test.
const LABELS = [
  'failure',
  'success',
  'canceled',
  'stray',
  'transient',
  'snapshotFails',
  'snapshotHangs',
  'rollbackFails',
  'poller',
  'hookAndPoller',
  'rateLimit',
  'slowPause',
  'secrets',
  'slowCall',
] as const;
type Label = (typeof LABELS)[number];
const R = testRunners(LABELS);
/** The test's VM (101, 102, …) and GitLab runner (41, 42, …). */
const vmid = (l: Label) => 101 + LABELS.indexOf(l);
const gitlabRunner = (l: Label) => 41 + LABELS.indexOf(l);
/** Matches Proxmox calls about one VM (its API paths). */
const onVm = (l: Label) => `/qemu/${vmid(l)}/`;

describe('proxmox checkpoints over REST', () => {
  const agents = new FakeAgents();
  let pve: ProxmoxStandIn;
  let gitlab: GitLabStandIn;
  let c: TestController;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);

  beforeAll(async () => {
    [pve, gitlab] = await Promise.all([
      startProxmoxStandIn({ taskDurationMs: 30 }),
      startGitLabStandIn(),
    ]);
    const inventory = ['runners:\n'];
    for (const l of LABELS) {
      pve.addVm('pve1', vmid(l), { status: 'running' });
      gitlab.addRunner(gitlabRunner(l));
      inventory.push(
        proxmoxRunnerYaml(pve, {
          runnerId: R[l].id,
          token: R[l].token,
          vmid: vmid(l),
          extra: { gitlab_runner_id: gitlabRunner(l), cleanup_cmd: '/opt/cleanup.sh' },
        }),
      );
    }
    // The agent is back once the VM runs again after the boot.
    const labelOf = new Map(LABELS.map((l) => [R[l].id, l]));
    agents.connectedWhen = (runnerId) => {
      const l = labelOf.get(runnerId);
      return l ? pve.vm('pve1', vmid(l)).status === 'running' : undefined;
    };
    for (const l of LABELS) agents.connect(R[l].id, new Date(0));
    c = await startTestController({
      inventory: inventory.join(''),
      agents,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_RESET_MAX_ATTEMPTS: '2',
        E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS: '3',
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.2',
        // A GitLab budget whose poll share lets every runner here poll that often
        // (a smaller fleet budget would stretch the interval: config/checkpoint-input.ts).
        E2EPOOL_GITLAB_MAX_RPS: '1000',
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

  async function until(runner: TestRunner, name: string, state: string, timeoutMs = 20_000) {
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
    const l = 'failure';
    const r = R[l];
    const created = await as(r).create(r.id, '9001');
    expect(created.status).toBe(201);
    const name = created.body.name as string;
    const vm = pve.vm('pve1', vmid(l));
    expect(vm.snapshots).toEqual([
      expect.objectContaining({ name, description: `e2epool checkpoint ${name}` }),
    ]);

    const fin = await as(r).finalize(name, 'failure');
    expect(fin).toEqual({
      status: 202,
      body: { detail: 'Finalize queued', checkpoint_name: name },
    });
    // The pause landed before the 202: GitLab cannot hand the runner a new job meanwhile.
    expect(gitlab.runner(gitlabRunner(l)).pausedHistory).toEqual([true]);

    await until(r, name, 'reset');
    expect(vm).toMatchObject({ status: 'running', rollbacks: 1, snapshots: [] });
    expect(gitlab.runner(gitlabRunner(l))).toMatchObject({
      paused: false,
      pausedHistory: [true, false],
    });
    await runEnded(c, r.id); // the state's own log row is written just after the state
    const { steps, pollerNotes } = await stepsBesidesPollerNote(c.ds, name);
    expect(pollerNotes).toBe(1);
    expect(steps).toEqual([
      'create:ok',
      'snapshot:ok',
      // The proof of reset (verify_reset's default for Proxmox: canary).
      'canary:ok',
      'pause:ok',
      'finalize_queued:ok',
      'stop:ok',
      'rollback:ok',
      'start:ok',
      'readiness:ok',
      'verify_reset:ok',
      'delete_snapshot:ok',
      'unpause:ok',
      'reset:ok',
    ]);
    // Every Proxmox mutation of this VM was awaited through its task (UPID:…:<type>:<vmid>:…);
    // guest agent calls (the canary) answer at once, without a task.
    const posts = pve.calls.filter(
      (x) => x.method !== 'GET' && x.path.includes(onVm(l)) && !x.path.includes('/agent/'),
    ).length;
    const taskPolls = pve.calls.filter(
      (x) =>
        x.path.includes('/tasks/') && x.path.endsWith('/status') && x.path.includes(`:${vmid(l)}:`),
    ).length;
    expect(posts).toBeGreaterThan(0);
    expect(taskPolls).toBeGreaterThanOrEqual(posts);
  });

  it('success: cleanup_cmd on the VM, snapshot deleted, no rollback (state deleted)', async () => {
    const l = 'success';
    const r = R[l];
    const name = (await as(r).create(r.id, '9002')).body.name as string;
    expect((await as(r).finalize(name, 'success')).status).toBe(202);
    await until(r, name, 'deleted');
    expect(pve.vm('pve1', vmid(l))).toMatchObject({
      rollbacks: 0,
      snapshots: [],
      status: 'running',
    });
    expect(agents.commandsFor(r.id)).toEqual(['/opt/cleanup.sh']);
    expect(gitlab.runner(gitlabRunner(l)).pausedHistory).toEqual([true, false]);
  });

  it('canceled takes the reset path; a job id Proxmox cannot use in a name gets a derived snapshot name', async () => {
    const l = 'canceled';
    const r = R[l];
    const name = (await as(r).create(r.id, 'build.42')).body.name as string;
    expect(name).toMatch(/^job-build\.42-\d+-[0-9a-f]{8}$/);
    const snap = pve.vm('pve1', vmid(l)).snapshots[0]!;
    expect(snap.name).toMatch(/^e2epool-\d+-[0-9a-f]{8}$/);
    expect(snap.description).toBe(`e2epool checkpoint ${name}`);
    await as(r).finalize(name, 'canceled');
    await until(r, name, 'reset');
    expect(pve.vm('pve1', vmid(l))).toMatchObject({ rollbacks: 1, snapshots: [] });
  });

  it("removes (and logs) a stray e2epool snapshot before taking a new one, and never touches others'", async () => {
    const l = 'stray';
    const r = R[l];
    const vm = pve.vm('pve1', vmid(l));
    vm.snapshots.push(
      { name: 'golden', description: 'base image', snaptime: 1, vmstate: 0 },
      {
        name: 'job-7-1700000000-deadbeef',
        description: 'e2epool checkpoint job-7-1700000000-deadbeef',
        snaptime: 2,
        vmstate: 0,
      },
    );
    const name = (await as(r).create(r.id, '9004')).body.name as string;
    expect(vm.snapshots.map((s) => s.name).sort()).toEqual(['golden', name].sort());
    const stray = (await operations(c.ds, name)).find(
      (o) => o.operation === 'remove_stray_snapshot',
    );
    expect(stray).toMatchObject({
      result: 'ok',
      detail: expect.stringContaining("'job-7-1700000000-deadbeef'"),
    });
    await as(r).finalize(name, 'failure');
    await until(r, name, 'reset');
    expect(vm.snapshots.map((s) => s.name)).toEqual(['golden']);
  });

  it('retries a transient Proxmox error (596) and answers 201', async () => {
    const l = 'transient';
    const r = R[l];
    pve.failNext(
      { method: 'POST', pathIncludes: `${onVm(l)}snapshot` },
      { kind: 'http', status: 596, reason: 'Broken pipe' },
    );
    const res = await as(r).create(r.id, '9005');
    expect(res.status).toBe(201);
    expect(pve.vm('pve1', vmid(l)).snapshots).toHaveLength(1);
    expect(
      pve.calls
        .filter((x) => x.method === 'POST' && x.path.endsWith(`${onVm(l)}snapshot`))
        .map((x) => x.status),
    ).toEqual([596, 200]);
    await as(r).finalize(res.body.name, 'failure');
    await until(r, res.body.name, 'reset');
  });

  it('a snapshot that cannot be taken ends as create_failed with 502, leaving no snapshot and no active row', async () => {
    const l = 'snapshotFails';
    const r = R[l];
    pve.failNext(
      { taskType: 'qmsnapshot', pathIncludes: onVm(l) },
      { kind: 'task', exitstatus: 'snapshot feature is not available' },
      Infinity,
    );
    const res = await as(r).create(r.id, '9006');
    expect(res.status).toBe(502);
    expect(res.body.detail).toBe(
      'Checkpoint could not be created: PermanentFailure: Proxmox task failed: snapshot feature is not available',
    );
    const rows = await c.ds.query(
      `SELECT state, error_detail FROM checkpoints WHERE runner_id = $1`,
      [r.id],
    );
    expect(rows).toEqual([
      {
        state: 'create_failed',
        error_detail: expect.stringContaining('snapshot feature is not available'),
      },
    ]);
    expect(pve.vm('pve1', vmid(l)).snapshots).toEqual([]);
    pve.clearFaults();
    const again = await as(r).create(r.id, '9007');
    expect(again.status).toBe(201);
    await as(r).finalize(again.body.name, 'failure');
    await until(r, again.body.name, 'reset');
  });

  it('a snapshot task that never finishes ends as create_failed with 504', async () => {
    const l = 'snapshotHangs';
    const r = R[l];
    pve.failNext({ taskType: 'qmsnapshot', pathIncludes: onVm(l) }, { kind: 'hang' }, Infinity);
    const res = await as(r).create(r.id, '9008');
    expect(res.status).toBe(504);
    expect(res.body.detail).toMatch(
      new RegExp(
        `^Checkpoint could not be created: BackendTimeout: .*VM ${vmid(l)}.* still running`,
      ),
    );
    pve.clearFaults();
    // The half-made snapshot is found and removed before the next one is taken.
    await waitFor('the hung task to finish', () => pve.vm('pve1', vmid(l)).lock === undefined);
    const again = await as(r).create(r.id, '9009');
    expect(again.status).toBe(201);
    expect(pve.vm('pve1', vmid(l)).snapshots.map((s) => s.name)).toEqual([again.body.name]);
    await as(r).finalize(again.body.name, 'failure');
    await until(r, again.body.name, 'reset');
  }, 60_000);

  it('a rollback that fails every time → needs_attention with the runner still paused; `retry` after the fix → reset, unpaused', async () => {
    const l = 'rollbackFails';
    const r = R[l];
    const name = (await as(r).create(r.id, '9010')).body.name as string;
    pve.failNext(
      { taskType: 'qmrollback', pathIncludes: onVm(l) },
      { kind: 'task', exitstatus: 'VM is locked (backup)' },
      Infinity,
    );
    await as(r).finalize(name, 'failure');
    const stuck = await until(r, name, 'needs_attention');
    expect(stuck.finalize_status).toBe('failure');
    expect(gitlab.runner(gitlabRunner(l))).toMatchObject({ paused: true, pausedHistory: [true] });
    const handle = c.client.workflow.getHandle(checkpointWorkflowId(r.id));

    pve.clearFaults();
    await handle.signal(retrySignal);
    await until(r, name, 'reset');
    expect(gitlab.runner(gitlabRunner(l))).toMatchObject({
      paused: false,
      pausedHistory: [true, false],
    });
    expect(pve.vm('pve1', vmid(l))).toMatchObject({
      rollbacks: 1,
      snapshots: [],
      status: 'running',
    });
    // Signals to a finished run change nothing.
    await handle.signal(releaseSignal).catch(() => undefined);
    expect((await as(r).status(name)).body.state).toBe('reset');
  });

  it('a slow Proxmox call (20 s, beyond the 15 s heartbeat timeout) does not time out the step: one attempt, one stop', async () => {
    const l = 'slowCall';
    const r = R[l];
    const name = (await as(r).create(r.id, '9020')).body.name as string;
    const stopPath = `${onVm(l)}status/stop`;
    pve.failNext({ method: 'POST', pathIncludes: stopPath }, { kind: 'delay', ms: 20_000 });
    await as(r).finalize(name, 'failure');
    await until(r, name, 'reset', 50_000);
    // Had the heartbeat lapsed, a second attempt would have found the VM still running and stopped it again.
    const stops = pve.calls.filter((x) => x.method === 'POST' && x.path.includes(stopPath));
    expect(stops).toHaveLength(1);
    const [stop] = await c.ds.query(
      `SELECT o.result, o.attempt FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
        WHERE c.name = $1 AND o.operation = 'stop'`,
      [name],
    );
    expect(stop).toEqual({ result: 'ok', attempt: 1 });
    expect(pve.vm('pve1', vmid(l))).toMatchObject({ status: 'running', stops: 1, rollbacks: 1 });
  }, 60_000);

  it('the GitLab poller ends a job: success → deleted, with source poller', async () => {
    const r = R.poller;
    gitlab.setJob(7, 700, 'running');
    const name = (await as(r).create(r.id, '700', { project_id: 7 })).body.name as string;
    gitlab.setJob(7, 700, 'success');
    const done = await until(r, name, 'deleted');
    expect(done).toMatchObject({ finalize_status: 'success', finalize_source: 'poller' });
    const polls = gitlab.calls.filter((x) => x.path === '/api/v4/projects/7/jobs/700');
    expect(polls.length).toBeGreaterThan(0);
  });

  it('finalize from the hook and the poller at the same moment → exactly one reset', async () => {
    const l = 'hookAndPoller';
    const r = R[l];
    gitlab.setJob(8, 800, 'running');
    const name = (await as(r).create(r.id, '800', { project_id: '8' })).body.name as string;
    gitlab.setJob(8, 800, 'failed');
    const hook = await as(r).finalize(name, 'failure');
    expect(hook.status).toBe(202);
    const done = await until(r, name, 'reset');
    expect(['hook', 'poller']).toContain(done.finalize_source);
    expect(pve.vm('pve1', vmid(l)).rollbacks).toBe(1);
    expect(gitlab.runner(gitlabRunner(l)).pausedHistory).toEqual([true, false]);
  });

  it('honours GitLab 429 Retry-After when pausing, and still pauses before resetting', async () => {
    const l = 'rateLimit';
    const r = R[l];
    const runnerPath = `/api/v4/runners/${gitlabRunner(l)}`;
    gitlab.failNext(
      { method: 'PUT', pathIncludes: runnerPath },
      { kind: 'rate-limit', retryAfterSeconds: 1 },
    );
    const name = (await as(r).create(r.id, '9011')).body.name as string;
    await as(r).finalize(name, 'failure');
    await until(r, name, 'reset');
    const puts = gitlab.calls.filter((x) => x.method === 'PUT' && x.path === runnerPath);
    expect(puts.map((p) => p.status)).toEqual([429, 200, 200]);
    expect(puts[1]!.at - puts[0]!.at).toBeGreaterThanOrEqual(900);
  });

  it('answers the hook finalize after FINALIZE_ACK_SECONDS when GitLab is slow, and keeps pausing durably', async () => {
    const l = 'slowPause';
    const r = R[l];
    const runnerPath = `/api/v4/runners/${gitlabRunner(l)}`;
    const pausePut = () => gitlab.calls.find((x) => x.method === 'PUT' && x.path === runnerPath);
    const name = (await as(r).create(r.id, '9012')).body.name as string;
    gitlab.failNext({ method: 'PUT', pathIncludes: runnerPath }, { kind: 'delay', ms: 3000 });
    const t0 = Date.now();
    const fin = await as(r).finalize(name, 'failure');
    const took = Date.now() - t0;
    expect(fin).toEqual({
      status: 202,
      body: { detail: 'Finalize queued', checkpoint_name: name },
    });
    // It waited FINALIZE_ACK_SECONDS for the pause, but not for GitLab's (delayed) answer.
    expect(took).toBeGreaterThanOrEqual(900);
    expect(pausePut()?.status ?? 0).toBe(0);
    await until(r, name, 'reset');
    // The reset waited for the pause: the rollback came after GitLab answered.
    const pausedAt = pausePut()!.at;
    const rollbackAt = pve.calls.find(
      (x) => x.method === 'POST' && x.path.endsWith('/rollback') && x.path.includes(onVm(l)),
    )!.at;
    expect(rollbackAt).toBeGreaterThanOrEqual(pausedAt + 2900);
    expect(pve.vm('pve1', vmid(l)).rollbacks).toBe(1);
    expect(gitlab.runner(gitlabRunner(l)).pausedHistory).toEqual([true, false]);
  });

  it('keeps secrets out of workflow histories', async () => {
    const r = R.secrets;
    const name = (await as(r).create(r.id, '9013')).body.name as string;
    await as(r).finalize(name, 'failure');
    await until(r, name, 'reset');
    const handle = c.client.workflow.getHandle(checkpointWorkflowId(r.id));
    await handle.result();
    const raw = JSON.stringify(await handle.fetchHistory());
    // Payloads are base64 in the history: decode them, or a secret in one could not be seen.
    const payloads = [...raw.matchAll(/"data":"([A-Za-z0-9+/]+={0,2})"/g)].map((m) =>
      Buffer.from(m[1]!, 'base64').toString('utf8'),
    );
    const history = [raw, ...payloads].join('\n');
    expect(history).toContain(`"name":"${name}"`); // decoded: the workflow result

    expect(history).not.toContain(pve.tokenSecret);
    expect(history).not.toContain(gitlab.token);
    expect(history).not.toContain(r.token);
  });
});
