import { snapshotDescription } from '../../common/checkpoint';
import { fail } from '../../common/fail';
import { proxmoxBaseUrl, type ProxmoxRunner } from '../../config/runner-schema';
import { createStore } from '../../store';
import { heartbeat } from '../context';
import { inventoryRunner, type ActivityDeps } from '../deps';
import {
  activityKey,
  withOperation,
  writeOperation,
  type StepInput,
  type StepMeta,
} from '../operation-log';
import { ProxmoxClient, ProxmoxTaskError, isTransientTaskError, type SnapshotInfo } from './client';
import { proxmoxHttpsAgent } from './tls';

/** The description prefix that marks a snapshot as e2epool's. */
export const OURS = snapshotDescription('');

/** The runner's Proxmox config from the current inventory (credentials never cross the workflow boundary). */
function proxmoxRunner(deps: ActivityDeps, runnerId: string): ProxmoxRunner {
  const r = inventoryRunner(deps, runnerId);
  if (r.backend !== 'proxmox')
    throw fail('RunnerNotInInventory', `runner '${runnerId}' is not a proxmox runner`);
  return r;
}

/** One client per runner and configuration, reused across activities. */
export function proxmoxClientFactory(deps: Pick<ActivityDeps, 'settings'>) {
  const cache = new Map<string, { key: string; client: ProxmoxClient }>();
  return (r: ProxmoxRunner): ProxmoxClient => {
    const key = JSON.stringify([
      r.proxmox_host,
      r.proxmox_node,
      r.proxmox_vmid,
      r.proxmox_user,
      r.proxmox_token_name,
      r.proxmox_token_value,
      r.proxmox_verify_tls,
      r.proxmox_ca_file,
      r.proxmox_fingerprint,
    ]);
    const hit = cache.get(r.runner_id);
    if (hit && hit.key === key) return hit.client;
    const baseUrl = proxmoxBaseUrl(r);
    const client = new ProxmoxClient({
      baseUrl,
      node: r.proxmox_node,
      vmid: r.proxmox_vmid,
      tokenId: `${r.proxmox_user}!${r.proxmox_token_name}`,
      tokenSecret: r.proxmox_token_value,
      httpsAgent: baseUrl.startsWith('https:')
        ? proxmoxHttpsAgent({
            verify: r.proxmox_verify_tls,
            caFile: r.proxmox_ca_file,
            fingerprint: r.proxmox_fingerprint,
          })
        : undefined,
      timeoutMs: deps.settings.httpTimeoutSeconds * 1000,
    });
    cache.set(r.runner_id, { key, client });
    return client;
  };
}

/** Runs a task and classifies its failure: a lock is transient; anything else permanent. */
export async function runProxmoxTask(
  deps: Pick<ActivityDeps, 'settings'>,
  client: ProxmoxClient,
  start: () => Promise<string>,
  tolerate?: RegExp,
): Promise<string> {
  const upid = await start();
  try {
    return await client.waitTask(upid, {
      timeoutMs: deps.settings.proxmoxTaskTimeoutSeconds * 1000,
      pollMs: deps.settings.proxmoxTaskPollSeconds * 1000,
      onPoll: heartbeat,
    });
  } catch (err) {
    if (!(err instanceof ProxmoxTaskError)) throw err;
    if (tolerate?.test(err.exitstatus)) return err.exitstatus;
    if (isTransientTaskError(err.exitstatus)) throw fail('ProxmoxLocked', err.message);
    throw fail('PermanentFailure', err.message);
  }
}

/** What the Proxmox steps need: the log, a client per runner, and the task runner. */
function proxmoxSteps(deps: ActivityDeps) {
  const { operations } = createStore(deps.dataSource);
  const clientFor = proxmoxClientFactory(deps);
  return {
    operations,
    log: { operations, metrics: deps.metrics },
    /** The runner's config and its client (credentials never cross the workflow boundary). */
    vm: (runnerId: string) => {
      const r = proxmoxRunner(deps, runnerId);
      return { r, client: clientFor(r) };
    },
    runTask: (client: ProxmoxClient, start: () => Promise<string>, tolerate?: RegExp) =>
      runProxmoxTask(deps, client, start, tolerate),
  };
}

type ProxmoxSteps = ReturnType<typeof proxmoxSteps>;

function meta(i: StepInput, operation: string, suffix = operation): StepMeta {
  return {
    checkpointId: i.checkpointId,
    runnerId: i.runnerId,
    backend: 'proxmox',
    operation,
    key: activityKey(suffix, `${i.checkpointName}:${suffix}:${i.round}`),
  };
}

/**
 * Removes (and logs) the e2epool snapshots an earlier checkpoint left behind:
 * ZFS can roll back only to the latest snapshot. Snapshots e2epool did not
 * make, and the one named `keep`, are never touched.
 */
async function removeStraySnapshots(
  c: ProxmoxSteps,
  i: StepInput,
  client: ProxmoxClient,
  existing: SnapshotInfo[],
  keep: string,
): Promise<void> {
  for (const s of existing) {
    if (s.name === keep || !s.description?.startsWith(OURS)) continue;
    const startedAt = new Date();
    await c.runTask(client, () => client.deleteSnapshot(s.name), /does not exist/);
    await writeOperation(c.operations, meta(i, 'remove_stray_snapshot', `stray:${s.name}`), {
      result: 'ok',
      detail: `removed stray snapshot '${s.name}' (${s.description})`,
      startedAt,
      finishedAt: new Date(),
    });
  }
}

/**
 * Takes the checkpoint's snapshot, after removing stray ones (see
 * removeStraySnapshots). One an earlier attempt left half-made is deleted
 * and made again, once that attempt's task is over.
 */
async function takeSnapshot(c: ProxmoxSteps, i: StepInput & { snapshotName: string }) {
  const { r, client } = c.vm(i.runnerId);
  await withOperation(c.log, meta(i, 'snapshot'), async () => {
    const existing = await client.listSnapshots();
    await removeStraySnapshots(c, i, client, existing, i.snapshotName);
    const mine = existing.find((s) => s.name === i.snapshotName);
    if (mine && !mine.snapstate)
      return {
        value: undefined,
        detail: `snapshot '${i.snapshotName}' already taken`,
        result: 'skipped' as const,
      };
    if (mine) {
      // Half-made by an earlier attempt. If that attempt's task still runs, wait for it.
      if ((await client.vmStatus()).lock === 'snapshot') {
        throw fail(
          'BackendTimeout',
          `an earlier snapshot task for '${i.snapshotName}' on VM ${r.proxmox_vmid} is still running`,
        );
      }
      await c.runTask(client, () => client.deleteSnapshot(i.snapshotName), /does not exist/);
    }
    const exit = await c.runTask(
      client,
      () => client.createSnapshot(i.snapshotName, snapshotDescription(i.checkpointName)),
      /already used/,
    );
    return {
      value: undefined,
      detail: `snapshot '${i.snapshotName}' of VM ${r.proxmox_vmid} on ${r.proxmox_node}: ${exit}`,
    };
  });
}

/** Deletes the checkpoint's snapshot; an already deleted one is fine. */
async function removeSnapshot(c: ProxmoxSteps, i: StepInput & { snapshotName: string }) {
  const { client } = c.vm(i.runnerId);
  await withOperation(c.log, meta(i, 'delete_snapshot'), async () => {
    const exists = (await client.listSnapshots()).some((s) => s.name === i.snapshotName);
    if (!exists)
      return {
        value: undefined,
        detail: `snapshot '${i.snapshotName}' already gone`,
        result: 'skipped' as const,
      };
    const exit = await c.runTask(
      client,
      () => client.deleteSnapshot(i.snapshotName),
      /does not exist/,
    );
    return { value: undefined, detail: `deleted snapshot '${i.snapshotName}': ${exit}` };
  });
}

/**
 * Stops the VM, then notes the runner's agent session: it is from before
 * the stop, so the readiness gate must not take it for the agent's return
 * (session ids, not times: no clocks to disagree).
 */
async function stopVm(
  deps: ActivityDeps,
  c: ProxmoxSteps,
  i: StepInput,
): Promise<{ staleSession: string | null }> {
  const { client } = c.vm(i.runnerId);
  return withOperation(c.log, meta(i, 'stop'), async () => {
    const already = (await client.vmStatus()).status === 'stopped';
    const exit = already ? '' : await c.runTask(client, () => client.stop());
    // Read once the VM is down: no agent on it can register a session after this.
    const staleSession = (await deps.agents.session(i.runnerId))?.sessionId ?? null;
    const note = staleSession ? `; agent session before the stop: ${staleSession}` : '';
    return already
      ? { value: { staleSession }, detail: `already stopped${note}`, result: 'skipped' as const }
      : { value: { staleSession }, detail: `stopped: ${exit}${note}` };
  });
}

async function rollbackVm(c: ProxmoxSteps, i: StepInput & { snapshotName: string }) {
  const { client } = c.vm(i.runnerId);
  await withOperation(c.log, meta(i, 'rollback'), async () => {
    const snap = (await client.listSnapshots()).find((s) => s.name === i.snapshotName);
    if (!snap)
      throw fail(
        'PermanentFailure',
        `snapshot '${i.snapshotName}' does not exist: cannot roll back`,
      );
    const exit = await c.runTask(client, () => client.rollback(i.snapshotName));
    return { value: undefined, detail: `rolled back to '${i.snapshotName}': ${exit}` };
  });
}

async function startVm(c: ProxmoxSteps, i: StepInput) {
  const { client } = c.vm(i.runnerId);
  await withOperation(c.log, meta(i, 'start'), async () => {
    if ((await client.vmStatus()).status === 'running')
      return { value: undefined, detail: 'already running', result: 'skipped' as const };
    const exit = await c.runTask(client, () => client.start(), /already running/);
    return { value: undefined, detail: `started: ${exit}` };
  });
}

/** Proxmox steps of a checkpoint. Each checks the VM's state first, so a retry is harmless. */
export function proxmoxActivities(deps: ActivityDeps) {
  const c = proxmoxSteps(deps);
  type Snap = StepInput & { snapshotName: string };
  return {
    takeSnapshot: (i: Snap): Promise<void> => takeSnapshot(c, i),
    removeSnapshot: (i: Snap): Promise<void> => removeSnapshot(c, i),
    stopVm: (i: StepInput) => stopVm(deps, c, i),
    rollbackVm: (i: Snap): Promise<void> => rollbackVm(c, i),
    startVm: (i: StepInput): Promise<void> => startVm(c, i),
  };
}
