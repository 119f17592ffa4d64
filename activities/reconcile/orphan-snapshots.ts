import { snapshotNameFor } from '../../common/checkpoint';
import { eachLimited } from '../../common/each-limited';
import { describeFailure } from '../../common/fail';
import { isActiveState } from '../../common/states';
import type { ProxmoxRunner } from '../../config/runner-schema';
import { heartbeat } from '../context';
import { OURS, proxmoxClientFactory, runProxmoxTask } from '../proxmox/steps';
import {
  LIVE_CONCURRENCY,
  minAge,
  type ReconcileContext,
  type ReconcileFinding,
  type ReconcileInput,
} from './record';

type ProxmoxClientOf = ReturnType<typeof proxmoxClientFactory>;

/**
 * The findings of one runner's VM: each snapshot e2epool made whose
 * checkpoint ended before `oldEnough` (epoch ms) is deleted (with repair
 * off, reported). A VM whose snapshots cannot be listed is logged and
 * skipped.
 */
async function runnerSnapshots(
  { deps, store, record }: ReconcileContext,
  client: ReturnType<ProxmoxClientOf>,
  r: ProxmoxRunner,
  i: ReconcileInput,
  oldEnough: number,
): Promise<ReconcileFinding[]> {
  const findings: ReconcileFinding[] = [];
  let snapshots;
  try {
    snapshots = await client.listSnapshots();
  } catch (err) {
    deps.log.warn(
      { runnerId: r.runner_id, error: describeFailure(err) },
      "reconciler: cannot list the snapshots of this runner's VM",
    );
    return findings;
  }
  for (const s of snapshots) {
    if (!s.description?.startsWith(OURS)) continue;
    const owner = await store.checkpoints.refByName(s.description.slice(OURS.length).trim());
    if (!owner || owner.runnerId !== r.runner_id || snapshotNameFor(owner.name) !== s.name) {
      deps.log.warn(
        { runnerId: r.runner_id, snapshot: s.name },
        "reconciler: a snapshot described as e2epool's that no checkpoint of this runner made: left alone",
      );
      continue;
    }
    if (isActiveState(owner.state)) continue;
    if (owner.endedAt && new Date(owner.endedAt).getTime() >= oldEnough) continue;
    const why = `snapshot '${s.name}' of VM ${r.proxmox_vmid} on ${r.proxmox_node} outlived its checkpoint (${owner.state})`;
    const finding = (action: ReconcileFinding['action'], detail: string) =>
      record(
        { kind: 'orphan_snapshot', checkpoint: owner.name, runnerId: r.runner_id, action, detail },
        owner,
      );
    if (!i.repair) {
      findings.push(
        await finding('reported', `${why} (E2EPOOL_RECONCILE_REPAIR=false: not deleted)`),
      );
      continue;
    }
    try {
      await runProxmoxTask(deps, client, () => client.deleteSnapshot(s.name), /does not exist/);
      findings.push(await finding('deleted', `${why}: deleted`));
    } catch (err) {
      findings.push(await finding('failed', `${why}; deleting it failed: ${describeFailure(err)}`));
    }
  }
  return findings;
}

export function orphanSnapshotActivities(ctx: ReconcileContext) {
  const proxmoxClient = proxmoxClientFactory(ctx.deps);
  return {
    /**
     * Snapshots e2epool made (its description, naming a checkpoint of this
     * runner whose snapshot name it is) whose checkpoint has ended are
     * deleted: a reset that died before its cleanup left them. Any other
     * snapshot, including one whose description merely looks like ours, is
     * never touched.
     */
    async reconcileSnapshots(i: ReconcileInput): Promise<ReconcileFinding[]> {
      const runners = ctx.deps.inventory.inventory.runners.filter(
        (r): r is ProxmoxRunner => r.backend === 'proxmox',
      );
      const oldEnough = Date.now() - minAge(i) * 1000;
      const findings: ReconcileFinding[] = [];
      await eachLimited(runners, LIVE_CONCURRENCY, async (r) => {
        heartbeat();
        findings.push(...(await runnerSnapshots(ctx, proxmoxClient(r), r, i, oldEnough)));
      });
      return findings;
    },
  };
}
