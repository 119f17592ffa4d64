import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';

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
  o: { taskQueue: string; intervalSeconds: number; repair: boolean; minAgeSeconds?: number },
): Promise<string> {
  const scheduleId = reconcileScheduleId(o.taskQueue);
  const action = {
    type: 'startWorkflow' as const,
    workflowType: 'reconcileWorkflow',
    taskQueue: o.taskQueue,
    args: [
      o.minAgeSeconds === undefined
        ? { repair: o.repair }
        : { repair: o.repair, minAgeSeconds: o.minAgeSeconds },
    ],
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

/**
 * What `e2epool worker` does at start: the schedule from the settings, logged.
 * Without it checkpoints still run, so a failure is said loudly, not fatal.
 */
export async function scheduleReconciler(
  client: Client,
  settings: Settings,
  log: Logger,
): Promise<void> {
  try {
    const scheduleId = await ensureReconcileSchedule(client, {
      taskQueue: settings.taskQueue,
      intervalSeconds: settings.reconcileIntervalSeconds,
      repair: settings.reconcileRepair,
      minAgeSeconds: settings.reconcileMinAgeSeconds,
    });
    log.info(
      { scheduleId, everySeconds: settings.reconcileIntervalSeconds },
      'reconciler scheduled',
    );
  } catch (err) {
    log.error(
      { err: (err as Error).message },
      'cannot create the reconciler schedule: orphaned checkpoints will not be repaired until a worker can',
    );
  }
}
