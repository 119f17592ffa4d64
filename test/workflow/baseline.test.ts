/**
 * baselineRefreshWorkflow and baselineRolloutWorkflow with stubbed
 * activities: the order of a refresh's steps, what a failure restores, and
 * how many refreshes a rollout runs at once.
 */
import { WorkflowFailedError } from '@temporalio/client';
import { baselineWorkflowId } from '../../common/baseline';
import { uniqueId } from '../helpers/env';
import { nonRetryable, startWorkflowHarness, type WorkflowHarness } from './harness';

let h: WorkflowHarness;
beforeEach(async () => {
  h = await startWorkflowHarness();
});
afterEach(async () => h?.stop());

const refresh = (runnerId: string, updateCmd?: string) =>
  h.client.workflow.execute('baselineRefreshWorkflow', {
    workflowId: baselineWorkflowId(runnerId),
    taskQueue: h.taskQueue,
    args: [{ runnerId, keep: 2, pollSeconds: 0.1, ...(updateCmd ? { updateCmd } : {}) }],
  });
const rollout = (runners: string[], maxUnavailable: number, canary?: string) =>
  h.client.workflow.execute('baselineRolloutWorkflow', {
    workflowId: uniqueId('rollout'),
    taskQueue: h.taskQueue,
    args: [{ runners, maxUnavailable, keep: 2, pollSeconds: 0.1, ...(canary ? { canary } : {}) }],
  });
const ids = (n: number) => Array.from({ length: n }, (_, i) => uniqueId(`r${i}`));
const refreshSteps = () => h.stubs.names().filter((n) => n.startsWith('refresh'));

it('a refresh: drain, wait for the checkpoint, pause, update, snapshot, verify, wait for the agent, commit, prune, undrain, unpause', async () => {
  let looks = 0;
  h.stubs.on('refreshHasActiveCheckpoint', () => looks++ < 2);
  const done = await refresh(uniqueId('one'), 'true');
  expect(done).toMatchObject({
    previous: 'golden-base',
    baseline: expect.stringMatching(/^e2epool-baseline-\d{14}$/),
  });
  expect(refreshSteps()).toEqual([
    'refreshStart',
    'refreshSetDraining',
    'refreshHasActiveCheckpoint',
    'refreshHasActiveCheckpoint',
    'refreshHasActiveCheckpoint',
    'refreshHoldRunner',
    'refreshPrepare',
    'refreshTakeBaseline',
    'refreshVerify',
    'refreshAwaitAgent',
    'refreshCommit',
    'refreshPrune',
    'refreshSetDraining',
    'refreshReleaseRunner',
  ]);
  expect(h.stubs.callsOf('refreshSetDraining').map((c) => c.input.draining)).toEqual([true, false]);
  // The agent session from before the verification's last stop does not count.
  expect(h.stubs.callsOf('refreshAwaitAgent')[0]!.input).toMatchObject({
    staleSession: 'session-1',
  });
});

it('an agent that does not come back on the new baseline fails the refresh: the previous one is restored', async () => {
  h.stubs.on('refreshAwaitAgent', (i: { staleSession: string | null }) => {
    if (i.staleSession === 'session-1') throw nonRetryable('agent has not reconnected', 'NotReady');
    return 'agent connected';
  });
  await expect(refresh(uniqueId('noagent'))).rejects.toBeInstanceOf(WorkflowFailedError);
  expect(h.stubs.callsOf('refreshCommit')).toHaveLength(0);
  expect(refreshSteps().slice(-4)).toEqual([
    'refreshRestore',
    'refreshAwaitAgent',
    'refreshSetDraining',
    'refreshReleaseRunner',
  ]);
});

it('a runner drained before the refresh stays drained after it', async () => {
  h.stubs.on('refreshStart', () => ({ previous: null, wasDraining: true, canaryPath: '/c' }));
  await refresh(uniqueId('drained'));
  expect(h.stubs.callsOf('refreshSetDraining').map((c) => c.input.draining)).toEqual([true]);
  expect(h.stubs.callsOf('refreshPrepare')[0]!.input).toMatchObject({ from: null });
});

it('a failed verification restores the previous baseline (deleting the new one) and undrains', async () => {
  h.stubs.on('refreshVerify', () => {
    throw nonRetryable('the canary survived', 'ResetNotVerified');
  });
  const err = await refresh(uniqueId('bad')).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(WorkflowFailedError);
  expect(refreshSteps().slice(-4)).toEqual([
    'refreshRestore',
    'refreshAwaitAgent',
    'refreshSetDraining',
    'refreshReleaseRunner',
  ]);
  const restore = h.stubs.callsOf('refreshRestore')[0]!.input;
  expect(restore).toMatchObject({
    previous: 'golden-base',
    attempted: expect.stringMatching(/^e2epool-baseline-/),
  });
  expect(h.stubs.callsOf('refreshCommit')).toHaveLength(0);
  expect(h.stubs.callsOf('refreshQuarantine')).toHaveLength(0);
});

it('a restore that fails too quarantines the runner and leaves it drained', async () => {
  h.stubs.on('refreshPrepare', () => {
    throw nonRetryable('update_cmd exited with 2');
  });
  h.stubs.on('refreshRestore', () => {
    throw nonRetryable('rollback refused');
  });
  await expect(refresh(uniqueId('worse'))).rejects.toBeInstanceOf(WorkflowFailedError);
  expect(h.stubs.callsOf('refreshQuarantine')[0]!.input.reason).toMatch(
    /update_cmd exited with 2.*could not be restored.*rollback refused/,
  );
  expect(h.stubs.callsOf('refreshSetDraining').map((c) => c.input.draining)).toEqual([true]);
  // Quarantined: the release keeps it paused (the activity reads the quarantine).
  expect(refreshSteps().slice(-2)).toEqual(['refreshQuarantine', 'refreshReleaseRunner']);
});

it('a pause that cannot be made does not stop the refresh', async () => {
  h.stubs.on('refreshHoldRunner', () => {
    throw nonRetryable('GitLab refused');
  });
  await expect(refresh(uniqueId('nopause'))).resolves.toMatchObject({ previous: 'golden-base' });
  expect(h.stubs.callsOf('refreshCommit')).toHaveLength(1);
});

it('a rollout runs the canary alone, then never more than max_unavailable at once', async () => {
  let running = 0;
  let most = 0;
  let afterCanary = -1;
  const order: string[] = [];
  h.stubs.on('refreshPrepare', async (i: { runnerId: string }) => {
    order.push(i.runnerId);
    most = Math.max(most, ++running);
    if (order.length === 2) afterCanary = running;
    await new Promise((r) => setTimeout(r, 300));
    running -= 1;
    return 'ok';
  });
  const runners = ids(5);
  const done = await rollout(runners, 2, runners[3]);
  expect(done).toEqual({ refreshed: expect.arrayContaining(runners), failed: [], notStarted: [] });
  expect(order[0]).toBe(runners[3]);
  // The second refresh started when the canary had ended: it ran alone.
  expect(afterCanary).toBe(1);
  expect(most).toBe(2);
});

it('a rollout stops at the first failure: running refreshes finish, no new one starts', async () => {
  const runners = ids(5);
  h.stubs.on('refreshPrepare', async (i: { runnerId: string }) => {
    if (i.runnerId === runners[1]) throw nonRetryable('update_cmd exited with 1');
    await new Promise((r) => setTimeout(r, 300));
    return 'ok';
  });
  const err = (await rollout(runners, 2).catch((e: unknown) => e)) as WorkflowFailedError;
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const details = (err.cause as { details?: unknown[] }).details?.[0];
  expect(details).toEqual({
    refreshed: [runners[0]],
    failed: [{ runnerId: runners[1], error: expect.stringContaining('update_cmd exited with 1') }],
    notStarted: [runners[2], runners[3], runners[4]],
  });
});
