import pino from 'pino';
import type { DataSource } from 'typeorm';
import { WorkerMetrics } from '../../activities/metrics';
import { proxmoxActivities } from '../../activities/proxmox/steps';
import { InventoryStore } from '../../config/inventory';
import { loadSettings } from '../../config/settings';
import { FakeAgents } from '../helpers/fake-agents';
import { createMigratedDatabase } from '../helpers/db';
import { writeInventory, proxmoxRunnerYaml, testRunners } from '../helpers/env';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

// Each test has a runner, a VM and a checkpoint row of its own.
const LABELS = ['snapshot', 'power', 'remove', 'missing', 'log'] as const;
type Label = (typeof LABELS)[number];
const R = testRunners(LABELS);
const vmid = (l: Label) => 401 + LABELS.indexOf(l);

/**
 * Temporal retries activities, so each Proxmox step must be safe to run twice:
 * it checks the VM before acting. Called directly here, twice each.
 */
describe('Proxmox steps are idempotent', () => {
  let pve: ProxmoxStandIn;
  let ds: DataSource;
  let close: () => Promise<void>;
  let acts: ReturnType<typeof proxmoxActivities>;

  beforeAll(async () => {
    pve = await startProxmoxStandIn({ taskDurationMs: 10 });
    ({ ds, close } = await createMigratedDatabase('steps'));
    const log = pino({ level: 'silent' });
    const inventory = InventoryStore.load(
      writeInventory(
        `runners:\n${LABELS.map((l) =>
          proxmoxRunnerYaml(pve, { runnerId: R[l].id, token: R[l].token, vmid: vmid(l) }),
        ).join('')}`,
      ),
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
      metrics: new WorkerMetrics(),
    });
  });
  afterAll(async () => {
    await close();
    await pve.close();
  });

  /** The test's VM (running; with the checkpoint's snapshot if asked) and checkpoint row. */
  async function setUp(l: Label, o: { withSnapshot?: boolean } = {}) {
    const n = LABELS.indexOf(l) + 1;
    const snapshotName = `job-${n}-1700000000-0000abc${n}`;
    pve.addVm('pve1', vmid(l), {
      status: 'running',
      snapshots: o.withSnapshot
        ? [{ name: snapshotName, description: `e2epool checkpoint ${snapshotName}` }]
        : [],
    });
    const [{ id }] = await ds.query(
      `INSERT INTO checkpoints (name, runner_id, job_id, backend, state, workflow_id)
       VALUES ($1, $2, $3, 'proxmox', 'created', $4) RETURNING id`,
      [snapshotName, R[l].id, String(n), `wf-${R[l].id}`],
    );
    const step = {
      checkpointId: id as number,
      checkpointName: snapshotName,
      runnerId: R[l].id,
      round: 0,
    };
    return { step, snapshotName, vm: () => pve.vm('pve1', vmid(l)) };
  }

  /** Mutations (non-GET calls) of one VM. */
  const mutations = (l: Label) =>
    pve.calls.filter((c) => c.method !== 'GET' && c.path.includes(`/qemu/${vmid(l)}/`)).length;

  it('takeSnapshot: the second call finds the snapshot and takes no other', async () => {
    const { step, snapshotName, vm } = await setUp('snapshot');
    await acts.takeSnapshot({ ...step, snapshotName });
    const after = mutations('snapshot');
    expect(after).toBeGreaterThan(0);
    await acts.takeSnapshot({ ...step, snapshotName });
    expect(mutations('snapshot')).toBe(after);
    expect(vm().snapshots.map((s) => s.name)).toEqual([snapshotName]);
  });

  it('stopVm, rollbackVm, startVm: a repeated stop or start is a no-op; a repeated rollback is harmless', async () => {
    const { step, snapshotName, vm } = await setUp('power', { withSnapshot: true });
    await acts.stopVm(step);
    const afterStop = mutations('power');
    await acts.stopVm(step);
    expect(mutations('power')).toBe(afterStop);
    await acts.rollbackVm({ ...step, snapshotName });
    await acts.rollbackVm({ ...step, snapshotName });
    expect(vm()).toMatchObject({ status: 'stopped', rollbacks: 2 });
    await acts.startVm(step);
    const afterStart = mutations('power');
    await acts.startVm(step);
    expect(mutations('power')).toBe(afterStart);
    expect(vm().status).toBe('running');
  });

  it('removeSnapshot: the second call finds it gone and does nothing', async () => {
    const { step, snapshotName, vm } = await setUp('remove', { withSnapshot: true });
    await acts.removeSnapshot({ ...step, snapshotName });
    const after = mutations('remove');
    expect(after).toBeGreaterThan(0);
    await acts.removeSnapshot({ ...step, snapshotName });
    expect(mutations('remove')).toBe(after);
    expect(vm().snapshots).toEqual([]);
  });

  it('rollbackVm to a snapshot that does not exist is a permanent failure', async () => {
    const { step, snapshotName } = await setUp('missing');
    await expect(acts.rollbackVm({ ...step, snapshotName })).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringContaining('does not exist'),
    });
  });

  it('writes one log row per step key, updated by repeats', async () => {
    const { step, snapshotName } = await setUp('log');
    for (let i = 0; i < 2; i++) await acts.takeSnapshot({ ...step, snapshotName });
    for (let i = 0; i < 2; i++) await acts.stopVm(step);
    for (let i = 0; i < 2; i++) await acts.rollbackVm({ ...step, snapshotName });
    for (let i = 0; i < 2; i++) await acts.startVm(step);
    for (let i = 0; i < 2; i++) await acts.removeSnapshot({ ...step, snapshotName });
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
