import { Client, Connection } from '@temporalio/client';
import type { ChildProcess } from 'node:child_process';
import { loadTemporalSettings } from '../../config/temporal';
import { restClient } from '../helpers/controller';
import { startCrashController, type CrashController } from '../helpers/crash-controller';
import { controllerEnv, proxmoxRunnerBody, testRunners } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Chaos: the worker is SIGKILLed while a baseline refresh runs update_cmd in
 * the guest. A new worker resumes the refresh: the update runs again from
 * the rolled-back baseline (never on top of the half-done one), and the
 * refresh ends as if nothing had happened.
 */
const R = testRunners(['vm'] as const);
const VMID = 451;
const BASELINE = 'golden-base';
const ADMIN = 'admin-token-baseline-worker-kill-0123456789';
/** The workers read the runner registry (the refreshed runner is a registry runner). */
const WORKER_ENV = { CRASH_WORKER_REGISTRY: '1' };

describe('chaos: the worker killed mid-refresh', () => {
  let pve: ProxmoxStandIn;
  let c: CrashController;
  let client: Client;
  let connection: Connection;
  let hung: (() => void) | undefined;

  beforeAll(async () => {
    pve = await startProxmoxStandIn({ taskDurationMs: 20 });
    pve.addVm('pve1', VMID, {
      status: 'running',
      snapshots: [{ name: BASELINE, description: 'baseline' }],
      agent: '1',
    });
    const env = {
      E2EPOOL_ADMIN_TOKEN: ADMIN,
      E2EPOOL_SECRET_KEY: 'baseline-worker-kill-secret-key-0123456789',
      E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS: '5',
    };
    c = await startCrashController('runners: []\n', env);
    connection = await Connection.connect(
      loadTemporalSettings(controllerEnv({})).connectionOptions,
    );
    client = new Client({
      connection,
      namespace: loadTemporalSettings(controllerEnv({})).namespace,
    });
    const res = await restClient(() => c.api.url, ADMIN).call(
      'POST',
      '/api/runners',
      proxmoxRunnerBody(pve, R.vm.id, VMID, { baseline_snapshot: BASELINE }),
    );
    if (res.status !== 201) throw new Error(JSON.stringify(res.body));
  });
  afterAll(async () => {
    hung?.();
    await c?.stop();
    await connection?.close();
    await pve?.close();
  });

  it('a new worker resumes the refresh: the update runs again from the baseline, the refresh succeeds', async () => {
    let calls = 0;
    pve.setExecHandler('pve1', VMID, (_argv, ctx) => {
      calls += 1;
      // The first run leaves a half-done file and hangs until the test ends.
      if (calls === 1) {
        ctx.files.set('/etc/half-done', 'the first run');
        return new Promise((resolve) => (hung = () => resolve({ exitCode: 0 })));
      }
      ctx.files.set('/etc/e2e-version', 'v4\n');
      return { exitCode: 0 };
    });
    const first: ChildProcess = await c.startWorker(WORKER_ENV);
    const res = await restClient(() => c.api.url, ADMIN).call(
      'POST',
      `/api/runners/${R.vm.id}/baseline`,
      { update_cmd: 'apt-get -y upgrade' },
    );
    expect(res.status).toBe(202);
    await waitFor('update_cmd to run', () => calls === 1);
    await c.kill(first);
    await c.startWorker(WORKER_ENV);
    const done = (await client.workflow.getHandle(res.body.workflow_id as string).result()) as {
      baseline: string;
    };
    expect(calls).toBe(2);
    const vm = pve.vm('pve1', VMID);
    expect(vm.currentParent).toBe(done.baseline);
    expect(vm.files.get('/etc/e2e-version')).toBe('v4\n');
    // The second run started from the baseline again (the first one's file was rolled away).
    expect(vm.files.has('/etc/half-done')).toBe(false);
    expect(vm.snapshots.map((s) => s.name)).toEqual([BASELINE, done.baseline]);
    const runner = await restClient(() => c.api.url, ADMIN).call('GET', `/api/runners/${R.vm.id}`);
    expect(runner.body).toMatchObject({ current_baseline: done.baseline, draining: false });
  }, 120_000);
});
