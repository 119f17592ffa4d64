import { snapshotDescription } from '../../common/checkpoint';
import { fail } from '../../common/fail';
import { proxmoxBaseUrl, type ProxmoxRunner } from '../../config/runner-schema';
import { createStore } from '../../store';
import { heartbeat } from '../context';
import { inventoryRunner, type ActivityDeps } from '../deps';
import { activityKey, withOperation, writeOperation, type StepInput } from '../operation-log';
import { ProxmoxClient, ProxmoxTaskError, isTransientTaskError } from './client';
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

/** Proxmox steps of a checkpoint. Each checks the VM's state first, so a retry is harmless. */
export function proxmoxActivities(deps: ActivityDeps) {
  const { operations } = createStore(deps.dataSource);
  const steps = { operations, metrics: deps.metrics };
  const clientFor = proxmoxClientFactory(deps);

  const runTask = (client: ProxmoxClient, start: () => Promise<string>, tolerate?: RegExp) =>
    runProxmoxTask(deps, client, start, tolerate);

  const meta = (i: StepInput, operation: string, suffix = operation) => ({
    checkpointId: i.checkpointId,
    runnerId: i.runnerId,
    backend: 'proxmox' as const,
    operation,
    key: activityKey(suffix, `${i.checkpointName}:${suffix}:${i.round}`),
  });

  return {
    /**
     * Takes the checkpoint's snapshot. First removes (and logs) e2epool
     * snapshots an earlier checkpoint left behind: ZFS can roll back only to
     * the latest snapshot. Snapshots e2epool did not make are never touched.
     */
    async takeSnapshot(i: StepInput & { snapshotName: string }): Promise<void> {
      const r = proxmoxRunner(deps, i.runnerId);
      const client = clientFor(r);
      await withOperation(steps, meta(i, 'snapshot'), async () => {
        const existing = await client.listSnapshots();
        for (const s of existing) {
          if (s.name === i.snapshotName || !s.description?.startsWith(OURS)) continue;
          const startedAt = new Date();
          await runTask(client, () => client.deleteSnapshot(s.name), /does not exist/);
          await writeOperation(operations, meta(i, 'remove_stray_snapshot', `stray:${s.name}`), {
            result: 'ok',
            detail: `removed stray snapshot '${s.name}' (${s.description})`,
            startedAt,
            finishedAt: new Date(),
          });
        }
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
          await runTask(client, () => client.deleteSnapshot(i.snapshotName), /does not exist/);
        }
        const exit = await runTask(
          client,
          () => client.createSnapshot(i.snapshotName, snapshotDescription(i.checkpointName)),
          /already used/,
        );
        return {
          value: undefined,
          detail: `snapshot '${i.snapshotName}' of VM ${r.proxmox_vmid} on ${r.proxmox_node}: ${exit}`,
        };
      });
    },

    /** Deletes the checkpoint's snapshot; an already deleted one is fine. */
    async removeSnapshot(i: StepInput & { snapshotName: string }): Promise<void> {
      const client = clientFor(proxmoxRunner(deps, i.runnerId));
      await withOperation(steps, meta(i, 'delete_snapshot'), async () => {
        const exists = (await client.listSnapshots()).some((s) => s.name === i.snapshotName);
        if (!exists)
          return {
            value: undefined,
            detail: `snapshot '${i.snapshotName}' already gone`,
            result: 'skipped' as const,
          };
        const exit = await runTask(
          client,
          () => client.deleteSnapshot(i.snapshotName),
          /does not exist/,
        );
        return { value: undefined, detail: `deleted snapshot '${i.snapshotName}': ${exit}` };
      });
    },

    /**
     * Stops the VM, then notes the runner's agent session: it is from before
     * the stop, so the readiness gate must not take it for the agent's return
     * (session ids, not times: no clocks to disagree).
     */
    async stopVm(i: StepInput): Promise<{ staleSession: string | null }> {
      const client = clientFor(proxmoxRunner(deps, i.runnerId));
      return withOperation(steps, meta(i, 'stop'), async () => {
        const already = (await client.vmStatus()).status === 'stopped';
        const exit = already ? '' : await runTask(client, () => client.stop());
        // Read once the VM is down: no agent on it can register a session after this.
        const staleSession = (await deps.agents.session(i.runnerId))?.sessionId ?? null;
        const note = staleSession ? `; agent session before the stop: ${staleSession}` : '';
        return already
          ? {
              value: { staleSession },
              detail: `already stopped${note}`,
              result: 'skipped' as const,
            }
          : { value: { staleSession }, detail: `stopped: ${exit}${note}` };
      });
    },

    async rollbackVm(i: StepInput & { snapshotName: string }): Promise<void> {
      const client = clientFor(proxmoxRunner(deps, i.runnerId));
      await withOperation(steps, meta(i, 'rollback'), async () => {
        const snap = (await client.listSnapshots()).find((s) => s.name === i.snapshotName);
        if (!snap)
          throw fail(
            'PermanentFailure',
            `snapshot '${i.snapshotName}' does not exist: cannot roll back`,
          );
        const exit = await runTask(client, () => client.rollback(i.snapshotName));
        return { value: undefined, detail: `rolled back to '${i.snapshotName}': ${exit}` };
      });
    },

    async startVm(i: StepInput): Promise<void> {
      const client = clientFor(proxmoxRunner(deps, i.runnerId));
      await withOperation(steps, meta(i, 'start'), async () => {
        if ((await client.vmStatus()).status === 'running')
          return { value: undefined, detail: 'already running', result: 'skipped' as const };
        const exit = await runTask(client, () => client.start(), /already running/);
        return { value: undefined, detail: `started: ${exit}` };
      });
    },
  };
}
