/**
 * Hold for debugging (`hold_on_failure_seconds`, patch 'hold-on-failure'):
 * after a failed job the runner stays paused and un-reset for the hold, then
 * the reset follows; `release-hold` ends it early. Real dev server, stubbed
 * activities.
 */
import { WorkflowFailedError } from '@temporalio/client';
import { releaseHoldSignal, stateQuery, type CheckpointView } from '../../common/checkpoint';
import { waitFor } from '../helpers/wait';
import { createCheckpoint, startWorkflowHarness, type WorkflowHarness } from './harness';
import {
  currentDetails,
  finalize,
  handle,
  input,
  runner,
  steps,
  transitions,
  waitPhase,
} from './fixtures';

let h: WorkflowHarness;
beforeEach(async () => {
  h = await startWorkflowHarness();
});
afterEach(async () => h?.stop());

/** The `hold` rows the run asked the operation log for. */
const holdNotes = () =>
  h.stubs
    .callsOf('noteOperation')
    .filter((c) => c.input.operation === 'hold')
    .map((c) => c.input);

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

it('a failed job holds the runner paused and un-reset for hold_on_failure_seconds, then resets and unpauses', async () => {
  // Long enough for the `held` phase to be seen on a loaded machine (2 s could pass unseen).
  const r = runner('bare_metal', { holdOnFailureSeconds: 5 });
  const cp = await createCheckpoint(h, r, input(r), { jobId: '9001' });
  await finalize(h, r, cp.name, 'failure');
  const view: CheckpointView = await waitPhase(h, r, 'held');
  expect(view).toMatchObject({
    state: 'finalize_queued',
    runnerPaused: true,
    heldUntil: expect.stringMatching(ISO),
  });
  expect(steps(h.stubs.calls)).toEqual(['checkRunnerPaused', 'sendPause']);
  // The note is written beside the hold (not before the phase shows): wait for it.
  await waitFor('the hold note', () => holdNotes().length > 0);
  expect(holdNotes()).toEqual([
    expect.objectContaining({
      operation: 'hold',
      result: 'ok',
      detail: `held for debugging until ${view.heldUntil}; signal release-hold to reset now`,
      heldUntil: view.heldUntil,
    }),
  ]);
  expect(await currentDetails(h, r)).toBe(
    '- **phase:** held (state `finalize_queued`)\n' +
      `- **now:** held for debugging until ${view.heldUntil}; signal release-hold to reset now\n` +
      '- **last error:** none',
  );

  expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
  expect(steps(h.stubs.calls)).toEqual([
    'checkRunnerPaused',
    'sendPause',
    'runRunnerCommand',
    'waitUntilReady',
    'unpauseRunner',
  ]);
  expect(transitions(h.stubs.calls)).toEqual(['finalize_queued', 'reset']);
  // The reset waited for the hold: about 5 s after the pause (timers have ~1 s resolution).
  const pausedAt = h.stubs.callsOf('sendPause')[0]!.at;
  const resetAt = h.stubs.callsOf('runRunnerCommand')[0]!.at;
  expect(resetAt - pausedAt).toBeGreaterThanOrEqual(4500);
  expect(resetAt - pausedAt).toBeLessThan(15_000);
  expect(resetAt).toBeGreaterThanOrEqual(Date.parse(view.heldUntil!) - 1000);
  expect((await handle(h, r).query(stateQuery)).heldUntil).toBeNull();
  expect(holdNotes()).toHaveLength(1); // the hold ran out: no early-release row
});

it('`release-hold` ends the hold early; the TTL never fires during a hold; other signals are ignored', async () => {
  const r = runner('bare_metal', { holdOnFailureSeconds: 3600 });
  const cp = await createCheckpoint(h, r, input(r, { ttlSeconds: 3 }), { jobId: '9002' });
  // Outside a hold the signal means nothing.
  await handle(h, r).signal(releaseHoldSignal);
  await finalize(h, r, cp.name, 'failure');
  const held = await waitPhase(h, r, 'held');
  expect(Date.parse(held.heldUntil!) - Date.now()).toBeGreaterThan(3500_000);

  // Past the TTL: the job has ended, nothing expires.
  await new Promise((res) => setTimeout(res, 4000));
  expect(await handle(h, r).query(stateQuery)).toMatchObject({
    phase: 'held',
    state: 'finalize_queued',
    finalizeStatus: 'failure',
  });
  await handle(h, r).signal('retry');
  await handle(h, r).signal('release');
  expect((await handle(h, r).query(stateQuery)).phase).toBe('held');
  expect(steps(h.stubs.calls)).not.toContain('runRunnerCommand');

  const signalledAt = Date.now();
  await handle(h, r).signal(releaseHoldSignal);
  expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
  expect(Date.now() - signalledAt).toBeLessThan(10_000);
  expect(transitions(h.stubs.calls)).toEqual(['finalize_queued', 'reset']);
  expect(holdNotes().map((n) => n.detail)).toEqual([
    `held for debugging until ${held.heldUntil}; signal release-hold to reset now`,
    `release-hold: the hold ended early (it was to last until ${held.heldUntil}); resetting now`,
  ]);
  // checkpoints.held_until: set as the hold starts, cleared by the release.
  expect(holdNotes().map((n) => n.heldUntil)).toEqual([held.heldUntil, null]);
  expect(h.stubs.callsOf('unpauseRunner')).toHaveLength(1);
});

it('a successful, canceled or expired job is never held', async () => {
  const ok = runner('bare_metal', { holdOnFailureSeconds: 3600 });
  const okCp = await createCheckpoint(h, ok, input(ok), { jobId: '9003' });
  await finalize(h, ok, okCp.name, 'success');
  expect(await handle(h, ok).result()).toMatchObject({ state: 'deleted' });

  const canceled = runner('bare_metal', { holdOnFailureSeconds: 3600 });
  const canceledCp = await createCheckpoint(h, canceled, input(canceled), { jobId: '9004' });
  await finalize(h, canceled, canceledCp.name, 'canceled');
  expect(await handle(h, canceled).result()).toMatchObject({ state: 'reset' });

  const expired = runner('bare_metal', { holdOnFailureSeconds: 3600 });
  await createCheckpoint(h, expired, input(expired, { ttlSeconds: 2 }), { jobId: '9005' });
  expect(await handle(h, expired).result()).toMatchObject({ state: 'gc_reset' });

  expect(holdNotes()).toEqual([]);
});

it('hold 0, or an input from before the field, behaves as before: no hold, no patch marker', async () => {
  const zero = runner('bare_metal', { holdOnFailureSeconds: 0 });
  const before = runner('bare_metal'); // holdOnFailureSeconds not given: 0
  for (const [r, job] of [
    [zero, '9006'],
    [before, '9007'],
  ] as const) {
    const cp = await createCheckpoint(h, r, input(r), { jobId: job });
    await finalize(h, r, cp.name, 'failure');
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
  }
  expect(holdNotes()).toEqual([]);
  expect(steps(h.stubs.calls)).toEqual([
    ...['checkRunnerPaused', 'sendPause', 'runRunnerCommand', 'waitUntilReady', 'unpauseRunner'],
    ...['checkRunnerPaused', 'sendPause', 'runRunnerCommand', 'waitUntilReady', 'unpauseRunner'],
  ]);
});

it('canceling a held run unpauses the runner without a reset and ends reset_failed, as in needs_attention', async () => {
  const r = runner('bare_metal', { holdOnFailureSeconds: 3600 });
  const cp = await createCheckpoint(h, r, input(r), { jobId: '9009' });
  await finalize(h, r, cp.name, 'failure');
  await waitPhase(h, r, 'held');
  await handle(h, r).cancel();
  await expect(handle(h, r).result()).rejects.toBeInstanceOf(WorkflowFailedError);
  expect((await handle(h, r).describe()).status.name).toBe('CANCELLED');
  expect(steps(h.stubs.calls)).toEqual(['checkRunnerPaused', 'sendPause', 'unpauseRunner']);
  expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
    to: 'reset_failed',
    errorDetail: 'workflow canceled by an operator',
  });
});

it('an adopted checkpoint whose job failed is not held (its run was terminated; the reset is due)', async () => {
  const r = runner('bare_metal', { holdOnFailureSeconds: 3600 });
  await h.client.workflow.start('checkpointWorkflow', {
    workflowId: `e2epool-runner-${r.runnerId}`,
    taskQueue: h.taskQueue,
    args: [
      {
        ...input(r),
        resume: {
          name: 'job-9008-1795000000-abcdef12',
          jobId: '9008',
          projectId: null,
          checkpointId: 9008,
          createdAt: new Date().toISOString(),
          pollJobs: false,
          adopted: {
            state: 'finalize_queued',
            jobEnd: { status: 'failure', source: 'hook', at: new Date().toISOString() },
          },
        },
      },
    ],
  });
  expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
  expect(holdNotes()).toEqual([]);
});
