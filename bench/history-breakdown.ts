/**
 * Where a reset's time goes, read from the checkpoint runs' Temporal
 * histories (bench/scale.ts): from the finalize update's acceptance to the
 * start of the unpause activity (the moment it sends the unpause), split
 * into the time tasks waited in a queue, ran in the worker, and the rest.
 * Event times are the server's, so no clock is shared with the bench.
 */
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { finalizeUpdate } from '../common/checkpoint';
import { gitlabTaskQueue } from '../common/gitlab-budget';
import { quantile } from './measure';

const E = temporal.api.enums.v1.EventType;
type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** One lifecycle's reset, ms per part. */
export interface ResetParts {
  total: number;
  /** Workflow tasks: scheduled → started (the main queue), started → completed (the worker, local activities included). */
  wftQueue: number;
  wftRun: number;
  /** GitLab activities: scheduled → started (the rate-limited GitLab queue), started → completed. */
  gitlabQueue: number;
  gitlabRun: number;
  /** Other activities (reset command, readiness, proof): queue and run. */
  otherQueue: number;
  otherRun: number;
  /** Timers (e.g. a cooldown) and anything not inside one of the above. */
  rest: number;
  wfts: number;
  activities: number;
}

const PARTS = [
  'wftQueue',
  'wftRun',
  'gitlabQueue',
  'gitlabRun',
  'otherQueue',
  'otherRun',
  'rest',
] as const satisfies ReadonlyArray<keyof ResetParts>;

const ms = (e: HistoryEvent): number => {
  const t = e.eventTime!;
  return Number(t.seconds) * 1000 + Math.floor((t.nanos ?? 0) / 1e6);
};

/** The reset of one checkpoint run, or null when the history holds none (no finalize, no unpause). */
export function resetParts(events: HistoryEvent[], taskQueue: string): ResetParts | null {
  const accepted = events.find(
    (e) =>
      e.eventType === E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED &&
      e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name ===
        finalizeUpdate.name,
  );
  if (!accepted) return null;
  const from = ms(accepted);
  const byId = new Map(events.map((e) => [Number(e.eventId), e]));
  const unpause = events.find((e) => {
    if (e.eventType !== E.EVENT_TYPE_ACTIVITY_TASK_STARTED) return false;
    const s = byId.get(Number(e.activityTaskStartedEventAttributes!.scheduledEventId));
    return s?.activityTaskScheduledEventAttributes?.activityType?.name === 'unpauseRunner';
  });
  if (!unpause) return null;
  const to = ms(unpause);
  const parts: ResetParts = {
    total: to - from,
    wftQueue: 0,
    wftRun: 0,
    gitlabQueue: 0,
    gitlabRun: 0,
    otherQueue: 0,
    otherRun: 0,
    rest: 0,
    wfts: 0,
    activities: 0,
  };
  /** Adds the part of [a, b] inside [from, to]. */
  const add = (k: (typeof PARTS)[number], a: number, b: number) => {
    const d = Math.min(b, to) - Math.max(a, from);
    if (d > 0) parts[k] += d;
  };
  const gitlabQueue = gitlabTaskQueue(taskQueue);
  /** Whether the activity that `scheduled` scheduled ran on the GitLab queue. */
  const onGitlab = (scheduled: HistoryEvent) =>
    scheduled.activityTaskScheduledEventAttributes?.taskQueue?.name === gitlabQueue;
  for (const e of events) {
    if (e.eventType === E.EVENT_TYPE_WORKFLOW_TASK_STARTED) {
      const s = byId.get(Number(e.workflowTaskStartedEventAttributes!.scheduledEventId));
      if (s) add('wftQueue', ms(s), ms(e));
    } else if (e.eventType === E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) {
      const st = byId.get(Number(e.workflowTaskCompletedEventAttributes!.startedEventId));
      if (st && ms(e) > from && ms(st) < to) parts.wfts++;
      if (st) add('wftRun', ms(st), ms(e));
    } else if (e.eventType === E.EVENT_TYPE_ACTIVITY_TASK_STARTED) {
      const s = byId.get(Number(e.activityTaskStartedEventAttributes!.scheduledEventId));
      if (!s) continue;
      add(onGitlab(s) ? 'gitlabQueue' : 'otherQueue', ms(s), ms(e));
      if (ms(s) >= from && ms(s) < to) parts.activities++;
    } else if (e.eventType === E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) {
      const a = e.activityTaskCompletedEventAttributes!;
      const s = byId.get(Number(a.scheduledEventId));
      const st = byId.get(Number(a.startedEventId));
      if (!s || !st) continue;
      add(onGitlab(s) ? 'gitlabRun' : 'otherRun', ms(st), ms(e));
    }
  }
  parts.rest = parts.total - PARTS.slice(0, -1).reduce((sum, k) => sum + parts[k], 0);
  return parts;
}

/** The resets in the runs of `workflowIds` that closed at or after `since`, up to `limit`. */
export async function resetsSince(
  client: Client,
  workflowIds: string[],
  since: Date,
  taskQueue: string,
  limit = 300,
): Promise<ResetParts[]> {
  const out: ResetParts[] = [];
  for (const id of workflowIds) {
    const query = `WorkflowId = '${id}' AND CloseTime >= '${since.toISOString()}'`;
    for await (const w of client.workflow.list({ query })) {
      const history = await client.workflow.getHandle(w.workflowId, w.runId).fetchHistory();
      const p = resetParts(history.events ?? [], taskQueue);
      if (p) out.push(p);
      if (out.length >= limit) return out;
    }
  }
  return out;
}

/** Lines of the report: each part's p50 / p99 / mean across lifecycles, ms. */
export function describeResets(resets: ResetParts[]): string[] {
  if (resets.length === 0) return ['  (no reset found in the histories)'];
  const stat = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    return `${quantile(s, 0.5).toFixed(0)} / ${quantile(s, 0.99).toFixed(0)} / ${mean.toFixed(0)}`;
  };
  const label: Record<(typeof PARTS)[number] | 'total', string> = {
    total: 'finalize accepted → unpause activity started',
    wftQueue: 'workflow tasks waiting in the main queue',
    wftRun: 'workflow tasks running (local activities included)',
    gitlabQueue: 'GitLab activities waiting in the GitLab queue',
    gitlabRun: 'GitLab activities running (stand-in delay included)',
    otherQueue: 'other activities waiting in the main queue',
    otherRun: 'other activities running (reset command included)',
    rest: 'between tasks (timers, history writes)',
  };
  const width = Math.max(...Object.values(label).map((l) => l.length));
  return [
    `  reset breakdown from ${resets.length} histories, ms p50 / p99 / mean (workflow tasks ${stat(resets.map((r) => r.wfts))}, activities ${stat(resets.map((r) => r.activities))} per reset):`,
    ...(['total', ...PARTS] as const).map(
      (k) => `    ${label[k].padEnd(width)}  ${stat(resets.map((r) => r[k]))}`,
    ),
  ];
}
