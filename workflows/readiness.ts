import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';

const { checkReadiness } = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  // One look, answered now: the caller polls if it wants to wait.
  retry: {
    maximumAttempts: 2,
    initialInterval: '500 milliseconds',
    nonRetryableErrorTypes: ['RunnerNotInInventory'],
  },
});

/** Checks once whether a runner is ready (agent connected, readiness_cmd passes). */
export async function readinessWorkflow(
  runnerId: string,
): Promise<{ ready: boolean; detail: string | null }> {
  return checkReadiness({ runnerId });
}
