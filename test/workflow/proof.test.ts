/**
 * Golden baseline and proof of reset in the checkpoint workflow (1.1.0,
 * gated by PATCH_PROOF_OF_RESET), on the real dev server with stubbed
 * activities: which steps run, in which order, and what a proof's answer does.
 */
import { retrySignal } from '../../common/checkpoint';
import {
  nonRetryable,
  createCheckpoint,
  startWorkflowHarness,
  type WorkflowHarness,
} from './harness';
import { finalize, handle, input, runner, steps, transitions, waitPhase } from './fixtures';

let h: WorkflowHarness;
beforeEach(async () => {
  h = await startWorkflowHarness();
});
afterEach(async () => h?.stop());

const CANARY = '/var/lib/e2epool/canary';
const golden = (verifyReset: 'canary' | 'required' | 'off' = 'canary') =>
  runner('proxmox', { baselineSnapshot: 'golden-1', verifyReset, canaryPath: CANARY });

describe('golden baseline', () => {
  it('takes no snapshot; the canary goes in before the create answers; success resets to the baseline, verified, never deleted', async () => {
    const r = golden();
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8001' });
    expect(steps(h.stubs.calls)).toEqual(['writeCanary']);
    expect(h.stubs.callsOf('writeCanary')[0]!.input).toMatchObject({
      checkpointName: cp.name,
      mode: 'canary',
      canaryPath: CANARY,
      round: 0,
    });
    await finalize(h, r, cp.name, 'success');
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'writeCanary',
      'checkRunnerPaused',
      'sendPause',
      'stopVm',
      'rollbackVm',
      'startVm',
      'waitUntilReady',
      'verifyReset',
      'unpauseRunner',
    ]);
    expect(h.stubs.callsOf('rollbackVm')[0]!.input).toMatchObject({ snapshotName: 'golden-1' });
    expect(h.stubs.callsOf('verifyReset')[0]!.input).toMatchObject({
      mode: 'canary',
      snapshotName: 'golden-1',
      canaryPath: CANARY,
    });
    // finalize_status keeps how the job ended.
    expect(h.stubs.callsOf('transitionCheckpoint')[0]!.input).toMatchObject({
      to: 'finalize_queued',
      finalizeStatus: 'success',
    });
  });

  it('a failed proof parks the checkpoint in needs_attention with its detail, still paused; retry verifies again', async () => {
    const r = golden();
    let refuted = true;
    h.stubs.on('verifyReset', () =>
      refuted
        ? { verified: false, detail: 'the canary still holds the nonce' }
        : { verified: true, detail: 'canary gone' },
    );
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8002' });
    await finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'needs_attention');
    expect(h.stubs.names()).not.toContain('unpauseRunner');
    const parked = h.stubs.callsOf('transitionCheckpoint').at(-1)!.input;
    expect(parked).toMatchObject({
      to: 'needs_attention',
      errorDetail: 'ResetNotVerified: the canary still holds the nonce',
    });
    expect((await handle(h, r).query('state')) as object).toMatchObject({
      verified: false,
      verifyDetail: 'the canary still holds the nonce',
    });
    refuted = false;
    await handle(h, r).signal(retrySignal);
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    expect(h.stubs.callsOf('verifyReset').map((c) => c.input.round)).toEqual([0, 1]);
    expect(h.stubs.callsOf('rollbackVm')).toHaveLength(2);
  });

  it('not verifiable: `canary` goes on to the unpause; `required` parks it', async () => {
    h.stubs.on('verifyReset', () => ({ verified: null, detail: 'no guest agent' }));
    const a = golden('canary');
    const cpA = await createCheckpoint(h, a, input(a), { jobId: '8003' });
    await finalize(h, a, cpA.name, 'failure');
    expect(await handle(h, a).result()).toEqual({ name: cpA.name, state: 'reset' });

    const b = golden('required');
    const cpB = await createCheckpoint(h, b, input(b), { jobId: '8004' });
    await finalize(h, b, cpB.name, 'failure');
    await waitPhase(h, b, 'needs_attention');
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      to: 'needs_attention',
      errorDetail: 'ResetNotVerified: not verifiable, and verify_reset is required: no guest agent',
    });
    await handle(h, b).terminate();
  });

  it('a canary the create cannot write under `required` fails the create, compensated', async () => {
    h.stubs.on('writeCanary', () => {
      throw nonRetryable(
        'canary not written (QEMU guest agent is not running)',
        'ResetNotVerified',
      );
    });
    const r = golden('required');
    await expect(createCheckpoint(h, r, input(r), { jobId: '8005' })).rejects.toThrow();
    expect(transitions(h.stubs.calls)).toEqual(['create_failed']);
    // No snapshot of its own to remove: the baseline is never touched.
    expect(h.stubs.names()).not.toContain('removeSnapshot');
  });
});

describe('per-job snapshots with a canary', () => {
  it('snapshot, then canary; the proof runs before the snapshot is deleted', async () => {
    const r = runner('proxmox', { verifyReset: 'canary', canaryPath: CANARY });
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8006' });
    await finalize(h, r, cp.name, 'failure');
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'takeSnapshot',
      'writeCanary',
      'checkRunnerPaused',
      'sendPause',
      'stopVm',
      'rollbackVm',
      'startVm',
      'waitUntilReady',
      'verifyReset',
      'removeSnapshot',
      'unpauseRunner',
    ]);
    expect(h.stubs.callsOf('verifyReset')[0]!.input).toMatchObject({ snapshotName: cp.name });
  });

  it('a successful job is cleaned up, not reset: nothing to verify', async () => {
    const r = runner('bare_metal', { verifyReset: 'required' });
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8007' });
    await finalize(h, r, cp.name, 'success');
    expect(await handle(h, r).result()).toMatchObject({ state: 'deleted' });
    expect(h.stubs.names()).not.toContain('verifyReset');
  });

  it('bare metal: reset_cmd, readiness, then verify_cmd', async () => {
    const r = runner('bare_metal', { verifyReset: 'required' });
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8008' });
    await finalize(h, r, cp.name, 'failure');
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'checkRunnerPaused',
      'sendPause',
      'runRunnerCommand',
      'waitUntilReady',
      'verifyReset',
      'unpauseRunner',
    ]);
  });
});
