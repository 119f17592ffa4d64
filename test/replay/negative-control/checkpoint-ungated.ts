/**
 * The replay test's negative control (never in the product's bundle): the
 * real checkpoint workflow with one new activity called before its first
 * step, not gated by `patched()`. Every recorded history must fail to replay
 * against it; if one replays, the replay test cannot see such a change.
 */
import { proxyActivities } from '@temporalio/workflow';
import { checkpointWorkflow as realCheckpointWorkflow } from '../../../workflows/checkpoint';

const { negativeControlProbe } = proxyActivities<{ negativeControlProbe(): Promise<void> }>({
  startToCloseTimeout: '1 minute',
});

/** The checkpoint workflow with an ungated new first command. */
export async function checkpointWorkflow(
  ...args: Parameters<typeof realCheckpointWorkflow>
): ReturnType<typeof realCheckpointWorkflow> {
  // Not awaited: the real workflow registers its handlers in the same activation.
  void negativeControlProbe().catch(() => undefined);
  return realCheckpointWorkflow(...args);
}
