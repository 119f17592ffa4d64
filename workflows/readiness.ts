import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { NON_RETRYABLE_TYPES } from '../common/failures';

const { checkReadiness } = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  // One look, answered now: the caller polls if it wants to wait.
  retry: {
    maximumAttempts: 2,
    initialInterval: '500 milliseconds',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
});

/** Checks once whether a runner is ready (agent connected, readiness_cmd passes). */
export async function readinessWorkflow(
  runnerId: string,
): Promise<{ ready: boolean; detail: string | null }> {
  return checkReadiness({ runnerId });
}
