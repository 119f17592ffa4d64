import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { ReconcileFinding, ReconcileInput } from '../activities/reconcile';
import { NON_RETRYABLE_TYPES } from '../common/failures';

const { reconcileCheckpoints, pruneRetention } = proxyActivities<Activities>({
  // One pass over the active checkpoints; the schedule runs the next one soon anyway.
  startToCloseTimeout: '5 minutes',
  retry: {
    maximumAttempts: 3,
    initialInterval: '2 seconds',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
});

/**
 * One reconciler pass, started by the schedule `e2epool-reconcile`: compares
 * what Postgres believes with what Temporal runs and repairs what differs.
 */
export async function reconcileWorkflow(
  input: ReconcileInput,
): Promise<{ findings: ReconcileFinding[]; pruned: { commands: number; logs: number } }> {
  const findings = await reconcileCheckpoints(input);
  const pruned = await pruneRetention({ repair: input.repair });
  return { findings, pruned };
}
