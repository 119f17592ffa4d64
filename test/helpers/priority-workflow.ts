/**
 * A workflow for the task-priority test (test/integration/gitlab-budget.test.ts):
 * it queues `low` activities at priority 5 on `queue`, then, in a later
 * workflow task, one at priority 1, and returns once all have run.
 */
import { condition, proxyActivities, setHandler, defineSignal } from '@temporalio/workflow';

export interface PriorityProbe {
  /** Records that the activity `label` started. */
  probe(label: string): Promise<void>;
}

/** Sent once the low-priority activities are queued: queue the urgent one. */
export const queueUrgent = defineSignal('queueUrgent');

/** See the module comment. */
export async function priorityOrderWorkflow(input: { queue: string; low: number }): Promise<void> {
  const on = (priorityKey: number) =>
    proxyActivities<PriorityProbe>({
      taskQueue: input.queue,
      startToCloseTimeout: '1 minute',
      priority: { priorityKey },
    });
  let urgent = false;
  setHandler(queueUrgent, () => void (urgent = true));
  const lows = Array.from({ length: input.low }, (_, i) => on(5).probe(`low${i}`));
  await condition(() => urgent);
  await Promise.all([...lows, on(1).probe('urgent')]);
}
