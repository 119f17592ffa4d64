import { proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { SelfTestInput, SelfTestResult } from '../common/self-test';

const { probeDependencies } = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  // A self-test should report a broken dependency quickly, not retry for ever.
  retry: { maximumAttempts: 3, initialInterval: '1 second' },
});

/** Checks that a worker on this task queue can run activities against Postgres. */
export async function selfTestWorkflow(input: SelfTestInput): Promise<SelfTestResult> {
  const probe = await probeDependencies();
  return { probeId: input.probeId, ...probe };
}
