import { restClient } from '../helpers/controller';
import { startCrashController, type CrashController } from '../helpers/crash-controller';
import { proxmoxRunnerYaml, testRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Durability: the worker process is killed with SIGKILL in the middle of a
 * reset (after the rollback, before the unpause). A new worker process
 * finishes the reset, and the runner is unpaused exactly once.
 */
describe('a worker killed in the middle of a reset', () => {
  let pve: ProxmoxStandIn;
  let gitlab: GitLabStandIn;
  let c: CrashController;
  const r = testRunner('crash');

  beforeAll(async () => {
    [pve, gitlab] = await Promise.all([
      startProxmoxStandIn({ taskDurationMs: 30 }),
      startGitLabStandIn(),
    ]);
    pve.addVm('pve1', 200, { status: 'running' });
    gitlab.addRunner(20);
    c = await startCrashController(
      `runners:\n${proxmoxRunnerYaml(pve, { runnerId: r.id, token: r.token, vmid: 200, extra: { gitlab_runner_id: 20 } })}`,
      { E2EPOOL_GITLAB_URL: gitlab.url, E2EPOOL_GITLAB_TOKEN: gitlab.token },
    );
  });

  afterAll(async () => {
    await c?.stop();
    await Promise.all([pve?.close(), gitlab?.close()]);
  });

  it('finishes the reset on a new worker and unpauses the runner exactly once', async () => {
    const rest = restClient(() => c.api.url, r.token);
    const first = await c.startWorker();
    const name = (await rest.create(r.id, '4242')).body.name as string;
    expect(name).toBeDefined();

    // The VM start hangs, so the worker is caught between rollback and unpause.
    pve.failNext({ taskType: 'qmstart' }, { kind: 'hang' }, Infinity);
    expect((await rest.finalize(name, 'failure')).status).toBe(202);
    const vm = pve.vm('pve1', 200);
    await waitFor(
      'the rollback and the start of the VM',
      () => vm.rollbacks === 1 && pve.calls.some((call) => call.path.endsWith('/status/start')),
    );
    expect(gitlab.runner(20).pausedHistory).toEqual([true]);

    await c.kill(first);
    pve.clearFaults(); // the hung start task now completes
    expect((await rest.status(name)).body.state).toBe('finalize_queued');

    await c.startWorker();
    const done = await waitFor(
      'the reset on the new worker',
      async () => {
        const r = await rest.status(name);
        return r.body.state === 'reset' ? r.body : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    expect(done.finalize_status).toBe('failure');
    expect(gitlab.runner(20)).toMatchObject({ paused: false, pausedHistory: [true, false] });
    expect(vm).toMatchObject({ status: 'running', rollbacks: 1, snapshots: [] });
    const unpauses = await c.db.ds.query(
      `SELECT count(*)::int AS n FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
        WHERE c.name = $1 AND o.operation = 'unpause'`,
      [name],
    );
    expect(unpauses[0].n).toBe(1);
  }, 90_000);
});
