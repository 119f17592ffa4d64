import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';

/** The reconciler's schedule on the default task queue; other queues get their own. */
export function reconcileScheduleId(taskQueue: string): string {
  return taskQueue === 'e2epool' ? 'e2epool-reconcile' : `e2epool-reconcile-${taskQueue}`;
}

/**
 * Creates the reconciler's schedule, or brings an existing one up to date
 * (interval, repair flag, task queue): every worker does this at start, so
 * the last one started wins, and they all agree anyway.
 */
export async function ensureReconcileSchedule(
  client: Client,
  o: { taskQueue: string; intervalSeconds: number; repair: boolean },
): Promise<string> {
  const scheduleId = reconcileScheduleId(o.taskQueue);
  const action = {
    type: 'startWorkflow' as const,
    workflowType: 'reconcileWorkflow',
    taskQueue: o.taskQueue,
    args: [{ repair: o.repair }],
    workflowId: `${scheduleId}-pass`,
    // A pass nobody runs (no worker on the queue) does not pile up.
    workflowExecutionTimeout: '10 minutes',
  };
  const spec = { intervals: [{ every: `${o.intervalSeconds} seconds` }] };
  try {
    await client.schedule.create({
      scheduleId,
      spec,
      action,
      // A pass still running when the next is due: skip the next one.
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(scheduleId).update((prev) => ({ ...prev, spec, action }));
  }
  return scheduleId;
}
