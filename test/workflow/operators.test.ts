/**
 * The checkpoint workflow when a reset keeps failing (needs_attention and the
 * operator's retry or release), when an operator cancels it, and when a long
 * wait continues as new: real dev servers, stubbed activities.
 */
import { CancelledFailure, WorkflowFailedError } from '@temporalio/client';
import { releaseSignal, retrySignal, stateQuery } from '../../common/checkpoint';
import type { DevServer } from '../../temporal-dev/dev-server';
import { startContinueAsNewDevServer } from '../helpers/temporal';
import { waitFor } from '../helpers/wait';
import {
  StubActivities,
  createCheckpoint,
  nonRetryable,
  startWorkflowHarness,
  type WorkflowHarness,
} from './harness';
import {
  finalize,
  handle,
  input,
  runner,
  steps,
  transitions,
  waitNeedsAttention,
} from './fixtures';

describe('needs_attention and the operator', () => {
  let h: WorkflowHarness;
  let failing: boolean;
  beforeEach(async () => {
    failing = true;
    h = await startWorkflowHarness();
    h.stubs.on('runRunnerCommand', () => {
      if (failing)
        throw nonRetryable('reset_cmd exited with 7; stderr: disk on fire', 'CommandFailed');
    });
  });
  afterEach(async () => h?.stop());

  async function stuck() {
    const r = runner('bare_metal');
    const cp = await createCheckpoint(h, r, input(r, { resetMaxAttempts: 1 }), { jobId: '8001' });
    await finalize(h, r, cp.name, 'failure');
    const view = await waitNeedsAttention(h, r);
    return { r, cp, view };
  }

  it('parks a failed reset, paused, with the error for operators; `retry` runs a new round and ends reset', async () => {
    const { r, cp, view } = await stuck();
    expect(view).toMatchObject({
      state: 'needs_attention',
      name: cp.name,
      runnerPaused: true,
      resetRounds: 0,
      lastError: 'CommandFailed: reset_cmd exited with 7; stderr: disk on fire',
    });
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      to: 'needs_attention',
      errorDetail: 'CommandFailed: reset_cmd exited with 7; stderr: disk on fire',
      resetRounds: 1,
    });
    expect(h.stubs.names()).not.toContain('unpauseRunner');

    failing = false;
    await handle(h, r).signal(retrySignal);
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    expect(transitions(h.stubs.calls)).toEqual([
      'finalize_queued',
      'needs_attention',
      'finalize_queued',
      'reset',
    ]);
    // Time to clean runs from the job's end, across the operator's wait.
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      timeToClean: {
        jobEndedAt: h.stubs.callsOf('transitionCheckpoint')[0]!.input.finalizedAt,
        path: 'finalize',
      },
    });
    // The second round has its own step identity (its own operation-log rows).
    expect(h.stubs.callsOf('runRunnerCommand').map((c) => c.input.round)).toEqual([0, 1]);
    expect(h.stubs.callsOf('unpauseRunner')).toHaveLength(1);
  });

  it('`release` gives up: unpaused, reset_failed with the last error', async () => {
    const { r, cp } = await stuck();
    // A signal outside needs_attention would be ignored; here it is taken.
    await handle(h, r).signal(releaseSignal);
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset_failed' });
    const last = h.stubs.callsOf('transitionCheckpoint').at(-1)!.input;
    expect(last).toMatchObject({
      to: 'reset_failed',
      errorDetail: 'CommandFailed: reset_cmd exited with 7; stderr: disk on fire',
    });
    // Not clean: no time-to-clean observation.
    expect(last).not.toHaveProperty('timeToClean');
    expect(steps(h.stubs.calls).slice(-1)).toEqual(['unpauseRunner']);
  });

  it('cancel while paused: the run ends CANCELED, after unpausing and recording reset_failed', async () => {
    const { r } = await stuck();
    await handle(h, r).cancel();
    const err = await handle(h, r)
      .result()
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
    expect((await handle(h, r).describe()).status.name).toBe('CANCELLED');
    expect(h.stubs.callsOf('unpauseRunner')).toHaveLength(1);
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      to: 'reset_failed',
      errorDetail: 'workflow canceled by an operator',
    });
  });
});

describe('GitLab refuses the unpause', () => {
  let h: WorkflowHarness;
  beforeEach(async () => {
    h = await startWorkflowHarness();
  });
  afterEach(async () => h?.stop());

  const refused = () => {
    throw nonRetryable('GitLab set runner paused: 401 {"message":"401 Unauthorized"}');
  };

  async function finishedButPaused(unpauseRetrySeconds = 300) {
    const r = runner('bare_metal');
    const cp = await createCheckpoint(h, r, input(r, { unpauseRetrySeconds }), { jobId: '8200' });
    await finalize(h, r, cp.name, 'failure');
    const view = await waitNeedsAttention(h, r);
    return { r, cp, view };
  }

  it('keeps the run open in needs_attention, saying what failed and how to fix it; `retry` after the fix unpauses and ends it', async () => {
    let fixed = false;
    h.stubs.on('unpauseRunner', () => (fixed ? undefined : refused()));
    const { r, cp, view } = await finishedButPaused();
    expect(view).toMatchObject({ runnerPaused: true });
    expect(view.lastError).toMatch(
      /^GitLab runner 40 is still paused: unpausing it failed \(PermanentFailure: GitLab set runner paused: 401 .*\)\. Fix GitLab access/,
    );
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      to: 'needs_attention',
      errorDetail: view.lastError,
    });
    fixed = true;
    await handle(h, r).signal(retrySignal);
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    expect(h.stubs.callsOf('unpauseRunner')).toHaveLength(2);
    expect(transitions(h.stubs.calls)).toEqual(['finalize_queued', 'needs_attention', 'reset']);
  });

  it('tries again by itself every unpauseRetrySeconds', async () => {
    let calls = 0;
    h.stubs.on('unpauseRunner', () => (++calls < 3 ? refused() : undefined));
    const { r, cp } = await finishedButPaused(1);
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    expect(calls).toBe(3);
  });

  it('`release` gives up: the run ends, the detail says the runner was left paused', async () => {
    h.stubs.on('unpauseRunner', refused);
    const { r, cp } = await finishedButPaused();
    await handle(h, r).signal(releaseSignal);
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    const last = h.stubs.callsOf('transitionCheckpoint').at(-1)!.input;
    expect(last).toMatchObject({
      to: 'reset',
      errorDetail: 'released by an operator with GitLab runner 40 still paused',
    });
    // Reset but left paused: not clean, no time-to-clean observation.
    expect(last).not.toHaveProperty('timeToClean');
  });
});

describe('continue-as-new while waiting', () => {
  let temporal: DevServer;
  let h: WorkflowHarness;
  beforeAll(async () => {
    temporal = await startContinueAsNewDevServer(40);
    h = await startWorkflowHarness(new StubActivities(), temporal.address);
  }, 60_000);
  afterAll(async () => {
    await h?.stop();
    await temporal?.stop();
  });

  it('carries the checkpoint (name, row, polling) into the new run; finalize reaches it', async () => {
    const r = runner('bare_metal');
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8100', projectId: '5' });
    const first = (await handle(h, r).describe()).runId;
    await waitFor('a continued run', async () => (await handle(h, r).describe()).runId !== first, {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    expect(await handle(h, r).query(stateQuery)).toMatchObject({
      phase: 'waiting_for_job',
      state: 'created',
      name: cp.name,
      jobId: '8100',
    });
    const polls = h.stubs.callsOf('pollJobStatus').length;
    await waitFor('a poll in the new run', () => h.stubs.callsOf('pollJobStatus').length > polls);
    await finalize(h, r, cp.name, 'failure');
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    expect(h.stubs.callsOf('recordCheckpoint')).toHaveLength(1);
    expect(h.stubs.names()).not.toContain('noteOperation');
    const ids = new Set(h.stubs.callsOf('transitionCheckpoint').map((c) => c.input.checkpointId));
    expect(ids).toEqual(new Set([h.stubs.callsOf('transitionCheckpoint')[0]!.input.checkpointId]));
  }, 90_000);
});
