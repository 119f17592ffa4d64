import { patched, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { ReconcileFinding, ReconcileInput } from '../activities/reconcile';
import { NON_RETRYABLE_TYPES } from '../common/failures';

const { reconcileCheckpoints, reconcilePausedRunners, reconcileSnapshots, pruneRetention } =
  proxyActivities<Activities>({
    // One pass over the active checkpoints; the schedule runs the next one soon anyway.
    startToCloseTimeout: '5 minutes',
    retry: {
      maximumAttempts: 3,
      initialInterval: '2 seconds',
      nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
    },
  });

/** Passes since this patch also compare with GitLab and Proxmox. */
export const RECONCILE_LIVE_STATE_PATCH = 'reconcile-live-state';

/**
 * One reconciler pass, started by the schedule `e2epool-reconcile`: compares
 * what Postgres believes with what Temporal runs, GitLab pauses and Proxmox
 * keeps, and repairs what differs. Orphan checkpoints come first: adopting
 * one makes its runner's pause someone's responsibility again.
 */
export async function reconcileWorkflow(
  input: ReconcileInput,
): Promise<{ findings: ReconcileFinding[]; pruned: { commands: number; logs: number } }> {
  const findings = await reconcileCheckpoints(input);
  if (patched(RECONCILE_LIVE_STATE_PATCH)) {
    findings.push(...(await reconcilePausedRunners(input)), ...(await reconcileSnapshots(input)));
  }
  const pruned = await pruneRetention({ repair: input.repair });
  return { findings, pruned };
}
