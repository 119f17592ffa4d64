import pino from 'pino';
import type { DataSource } from 'typeorm';
import { proxmoxActivities } from '../../activities/proxmox/steps';
import { InventoryStore } from '../../config/inventory';
import { loadSettings } from '../../config/settings';
import { FakeAgents } from '../helpers/fake-agents';
import { createMigratedDatabase } from '../helpers/db';
import { writeInventory, proxmoxRunnerYaml } from '../helpers/env';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Temporal retries activities, so each Proxmox step must be safe to run twice:
 * it checks the VM before acting. Called directly here, twice each.
 */
describe('Proxmox steps are idempotent', () => {
  let pve: ProxmoxStandIn;
  let ds: DataSource;
  let close: () => Promise<void>;
  let acts: ReturnType<typeof proxmoxActivities>;
  let step: { checkpointId: number; checkpointName: string; runnerId: string; round: number };

  beforeAll(async () => {
    pve = await startProxmoxStandIn({ taskDurationMs: 10 });
    pve.addVm('pve1', 400, { status: 'running' });
    ({ ds, close } = await createMigratedDatabase('steps'));
    const log = pino({ level: 'silent' });
    const inventory = InventoryStore.load(
      writeInventory(`runners:
${proxmoxRunnerYaml(pve, { runnerId: 'vm-s', token: 'tok-vm-s', vmid: 400 })}`),
      log,
    );
    const settings = loadSettings({ E2EPOOL_PROXMOX_TASK_POLL_SECONDS: '0.02' });
    acts = proxmoxActivities({
      dataSource: ds,
      inventory,
      settings,
      log,
      agents: new FakeAgents(),
      gitlab: null,
    });
    const name = 'job-1-1700000000-0000abcd';
    const [{ id }] = await ds.query(
      `INSERT INTO checkpoints (name, runner_id, job_id, backend, state, workflow_id)
       VALUES ($1, 'vm-s', '1', 'proxmox', 'created', 'wf') RETURNING id`,
      [name],
    );
    step = {
      checkpointId: id as number,
      checkpointName: name,
      runnerId: 'vm-s',
      round: 0,
    };
  });
  afterAll(async () => {
    await close();
    await pve.close();
  });

  const mutations = () => pve.calls.filter((c) => c.method !== 'GET').length;
  const snapshotName = 'job-1-1700000000-0000abcd';

  it('takeSnapshot: the second call finds the snapshot and takes no other', async () => {
    await acts.takeSnapshot({ ...step, snapshotName });
    const after = mutations();
    await acts.takeSnapshot({ ...step, snapshotName });
    expect(mutations()).toBe(after);
    expect(pve.vm('pve1', 400).snapshots.map((s) => s.name)).toEqual([snapshotName]);
  });

  it('stopVm, rollbackVm, startVm: a repeated stop or start is a no-op; a repeated rollback is harmless', async () => {
    await acts.stopVm(step);
    const afterStop = mutations();
    await acts.stopVm(step);
    expect(mutations()).toBe(afterStop);
    await acts.rollbackVm({ ...step, snapshotName });
    await acts.rollbackVm({ ...step, snapshotName });
    expect(pve.vm('pve1', 400)).toMatchObject({ status: 'stopped', rollbacks: 2 });
    await acts.startVm(step);
    const afterStart = mutations();
    await acts.startVm(step);
    expect(mutations()).toBe(afterStart);
    expect(pve.vm('pve1', 400).status).toBe('running');
  });

  it('removeSnapshot: the second call finds it gone and does nothing', async () => {
    await acts.removeSnapshot({ ...step, snapshotName });
    const after = mutations();
    await acts.removeSnapshot({ ...step, snapshotName });
    expect(mutations()).toBe(after);
    expect(pve.vm('pve1', 400).snapshots).toEqual([]);
  });

  it('rollbackVm to a snapshot that does not exist is a permanent failure', async () => {
    await expect(acts.rollbackVm({ ...step, snapshotName })).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringContaining('does not exist'),
    });
  });

  it('writes one log row per step key, updated by repeats', async () => {
    const rows = await ds.query(
      `SELECT operation, result FROM operation_logs WHERE checkpoint_id = $1 ORDER BY id`,
      [step.checkpointId],
    );
    // Outside Temporal the key falls back to name:operation:round, so repeats share a row.
    expect(rows.map((r: { operation: string }) => r.operation)).toEqual([
      'snapshot',
      'stop',
      'rollback',
      'start',
      'delete_snapshot',
    ]);
  });
});
