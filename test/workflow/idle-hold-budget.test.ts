/**
 * An idle runner's hold in its CI system (a quarantine's pause, a baseline
 * refresh's pause and unpause) spends the GitLab budget like a reset's pause:
 * its activities are scheduled on `<taskQueue>-gitlab` at the reset's
 * priority (common/gitlab-budget.ts), everything else on the main queue.
 */
import type { temporal } from '@temporalio/proto';
import { baselineWorkflowId } from '../../common/baseline';
import { GITLAB_PRIORITY, gitlabTaskQueue } from '../../common/gitlab-budget';
import { quarantineWorkflowId, RUNNER_QUARANTINE_WORKFLOW } from '../../common/quarantine';
import { uniqueId } from '../helpers/env';
import { startWorkflowHarness, type WorkflowHarness } from './harness';

let h: WorkflowHarness;
beforeEach(async () => {
  h = await startWorkflowHarness();
});
afterEach(async () => h?.stop());

/** Each scheduled activity of a run: its name, task queue and priority key (0: none). */
async function placements(workflowId: string): Promise<Array<[string, string, number]>> {
  const history = await h.client.workflow.getHandle(workflowId).fetchHistory();
  return (history.events ?? []).flatMap((e: temporal.api.history.v1.IHistoryEvent) => {
    const a = e.activityTaskScheduledEventAttributes;
    return a
      ? [[a.activityType!.name!, a.taskQueue!.name!, a.priority?.priorityKey ?? 0] as const]
      : [];
  }) as Array<[string, string, number]>;
}

it("a quarantine's hold runs on the GitLab queue at a reset's priority", async () => {
  const runnerId = uniqueId('q');
  const workflowId = quarantineWorkflowId(runnerId);
  await h.client.workflow.execute(RUNNER_QUARANTINE_WORKFLOW, {
    workflowId,
    taskQueue: h.taskQueue,
    args: [{ runnerId }],
  });
  expect(await placements(workflowId)).toEqual([
    ['quarantineHoldRunner', gitlabTaskQueue(h.taskQueue), GITLAB_PRIORITY.reset],
  ]);
});

it("a baseline refresh's pause and unpause run on the GitLab queue at a reset's priority; its other steps on the main queue", async () => {
  const runnerId = uniqueId('b');
  await h.client.workflow.execute('baselineRefreshWorkflow', {
    workflowId: baselineWorkflowId(runnerId),
    taskQueue: h.taskQueue,
    args: [{ runnerId, keep: 2, pollSeconds: 0.1 }],
  });
  const placed = await placements(baselineWorkflowId(runnerId));
  const held = placed.filter(([name]) => /^refresh(Hold|Release)Runner$/.test(name));
  expect(held).toEqual([
    ['refreshHoldRunner', gitlabTaskQueue(h.taskQueue), GITLAB_PRIORITY.reset],
    ['refreshReleaseRunner', gitlabTaskQueue(h.taskQueue), GITLAB_PRIORITY.reset],
  ]);
  const rest = placed.filter((p) => !held.includes(p));
  expect(rest.length).toBeGreaterThan(5);
  for (const [, queue] of rest) expect(queue).toBe(h.taskQueue);
});
