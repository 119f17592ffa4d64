import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import {
  bareMetalRunnerYaml,
  proxmoxRunnerYaml,
  testRunners,
  type TestRunner,
} from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/** A checkpoint nobody finalizes is reset when its TTL expires, on both backends. */
// One runner (so one workflow id on the shared Temporal server) per test.
const R = testRunners(['vmTtl', 'metalTtl', 'goldenTtl']);
const BASELINE = 'golden-base';
const JOB_FILE = '/tmp/left-by-the-job';

describe('TTL expiry, both backends', () => {
  const agents = new FakeAgents();
  let pve: ProxmoxStandIn;
  let gitlab: GitLabStandIn;
  let c: TestController;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);

  beforeAll(async () => {
    [pve, gitlab] = await Promise.all([
      startProxmoxStandIn({ taskDurationMs: 20 }),
      startGitLabStandIn(),
    ]);
    pve.addVm('pve1', 301, { status: 'running' });
    pve.addVm('pve1', 302, {
      status: 'running',
      snapshots: [{ name: BASELINE, description: 'baseline' }],
      agent: '1',
    });
    gitlab.addRunner(31);
    gitlab.addRunner(32);
    const vmOf = new Map([
      [R.vmTtl.id, 301],
      [R.goldenTtl.id, 302],
    ]);
    agents.connectedWhen = (r) => {
      const id = vmOf.get(r);
      return id === undefined ? undefined : pve.vm('pve1', id).status === 'running';
    };
    agents.connect(R.metalTtl.id, new Date(0));
    c = await startTestController({
      agents,
      inventory: `runners:
${proxmoxRunnerYaml(pve, { runnerId: R.vmTtl.id, token: R.vmTtl.token, vmid: 301, extra: { gitlab_runner_id: 31 } })}${proxmoxRunnerYaml(pve, { runnerId: R.goldenTtl.id, token: R.goldenTtl.token, vmid: 302, extra: { gitlab_runner_id: 32, baseline_snapshot: BASELINE } })}${bareMetalRunnerYaml(R.metalTtl, { reset_cmd: '/opt/reset.sh' })}`,
      env: {
        E2EPOOL_CHECKPOINT_TTL_SECONDS: '2',
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
      },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await Promise.all([pve?.close(), gitlab?.close()]);
  });

  async function until(runner: TestRunner, name: string, state: string) {
    return waitFor(`${name} to reach ${state}`, async () => {
      const r = await as(runner).status(name);
      return r.body?.state === state ? r.body : undefined;
    });
  }

  it('proxmox: an unfinalized checkpoint is rolled back when its TTL expires (gc_reset), paused and unpaused', async () => {
    const r = R.vmTtl;
    const name = (await as(r).create(r.id, '1')).body.name as string;
    const done = await until(r, name, 'gc_reset');
    expect(done).toMatchObject({ finalize_status: null, finalize_source: null });
    expect(pve.vm('pve1', 301)).toMatchObject({ rollbacks: 1, snapshots: [], status: 'running' });
    expect(gitlab.runner(31).pausedHistory).toEqual([true, false]);
    expect((await operations(c.ds, name)).map((o) => o.operation)).toContain('rollback');
  });

  it('golden baseline: an unfinalized checkpoint whose TTL expires ends reset, rolled back to the baseline (kept), verified', async () => {
    const r = R.goldenTtl;
    const vm = pve.vm('pve1', 302);
    const res = await as(r).create(r.id, '3');
    expect(res.status).toBe(201);
    const name = res.body.name as string;
    // The job leaves a file behind; no per-job snapshot was taken.
    vm.files.set(JOB_FILE, 'left by the job');
    expect(vm.snapshots.map((s) => s.name)).toEqual([BASELINE]);
    const done = await until(r, name, 'reset');
    expect(done).toMatchObject({ finalize_status: null, finalize_source: null, verified: true });
    expect(vm).toMatchObject({ rollbacks: 1, currentParent: BASELINE, status: 'running' });
    expect(vm.snapshots.map((s) => s.name)).toEqual([BASELINE]);
    expect(vm.files.has(JOB_FILE)).toBe(false);
    expect(gitlab.runner(32).pausedHistory).toEqual([true, false]);
    expect((await operations(c.ds, name)).map((o) => o.operation)).toEqual(
      expect.arrayContaining(['rollback', 'verify_reset']),
    );
  });

  it('bare metal: an unfinalized checkpoint runs reset_cmd when its TTL expires (gc_reset)', async () => {
    const r = R.metalTtl;
    const name = (await as(r).create(r.id, '2')).body.name as string;
    await until(r, name, 'gc_reset');
    expect(agents.commandsFor(r.id)).toEqual(['/opt/reset.sh']);
    expect((await as(r).finalize(name, 'failure')).body).toEqual({
      detail: 'Already finalized',
      state: 'gc_reset',
    });
  });
});
