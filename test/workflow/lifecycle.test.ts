/**
 * The checkpoint workflow's branches from create to terminal state, on the
 * real dev server with stubbed activities: create and its compensation, and
 * each way a job ends (finalize, poller, TTL).
 */
import { WorkflowFailedError } from '@temporalio/client';
import { fail } from '../../common/fail';
import {
  createCheckpoint,
  nonRetryable,
  startWorkflowHarness,
  type WorkflowHarness,
} from './harness';
import { retrySignal } from '../../common/checkpoint';
import {
  currentDetails,
  finalize,
  gate,
  handle,
  input,
  runner,
  steps,
  transitions,
  updateFailure,
  waitDetails,
  waitPhase,
} from './fixtures';

let h: WorkflowHarness;
beforeEach(async () => {
  h = await startWorkflowHarness();
});
afterEach(async () => h?.stop());

describe('create', () => {
  it('records the checkpoint and takes the snapshot, answering the DTO', async () => {
    const r = runner('proxmox');
    const cp = await createCheckpoint(h, r, input(r), { jobId: '7001', projectId: '5' });
    expect(cp).toMatchObject({
      runner_id: r.runnerId,
      job_id: '7001',
      state: 'created',
      finalize_status: null,
      finalize_source: null,
      finalized_at: null,
    });
    expect(cp.name).toMatch(/^job-7001-\d+-[0-9a-f]{8}$/);
    expect(h.stubs.names()).toEqual(['recordCheckpoint', 'takeSnapshot']);
    expect(h.stubs.callsOf('takeSnapshot')[0]!.input).toMatchObject({ snapshotName: cp.name });
    await handle(h, r).terminate();
  });

  it('a failed snapshot is compensated: snapshot removed, row create_failed, caller told 502', async () => {
    h.stubs.on('takeSnapshot', () => {
      throw nonRetryable('Proxmox rejected the API token (401 authentication failure)');
    });
    const r = runner('proxmox');
    const f = await updateFailure(createCheckpoint(h, r, input(r), { jobId: '7002' }));
    expect(f).toEqual({
      type: 'BackendUnavailable',
      message:
        'Checkpoint could not be created: PermanentFailure: Proxmox rejected the API token (401 authentication failure)',
    });
    expect(steps(h.stubs.calls)).toEqual(['takeSnapshot', 'removeSnapshot']);
    expect(transitions(h.stubs.calls)).toEqual(['create_failed']);
    expect(await handle(h, r).result()).toMatchObject({ state: 'create_failed' });
  });

  it('a snapshot that times out is a 504, by its type', async () => {
    h.stubs.on('takeSnapshot', () => {
      throw fail('BackendTimeout', 'Proxmox task qmsnapshot on VM 100 still running after 600s');
    });
    const r = runner('proxmox');
    const f = await updateFailure(
      createCheckpoint(h, r, input(r, { resetMaxAttempts: 1 }), { jobId: '7003' }),
    );
    expect(f.type).toBe('BackendTimeout');
    expect(f.message).toContain('still running after 600s');
    expect(transitions(h.stubs.calls)).toEqual(['create_failed']);
  });

  it('a conflict found by the database reaches the caller as a conflict, nothing to compensate', async () => {
    h.stubs.on('recordCheckpoint', () => {
      throw fail('CheckpointConflict', "Active checkpoint already exists for runner 'x'");
    });
    const r = runner('proxmox');
    const f = await updateFailure(createCheckpoint(h, r, input(r), { jobId: '7004' }));
    expect(f).toEqual({
      type: 'CheckpointConflict',
      message: "Active checkpoint already exists for runner 'x'",
    });
    expect(steps(h.stubs.calls)).toEqual([]);
    expect(transitions(h.stubs.calls)).toEqual([]);
  });

  it('a create still running at its deadline is cut off and compensated: 504, snapshot removed, create_failed; the runner is free again', async () => {
    const never = gate();
    h.stubs.on('takeSnapshot', () => never.promise);
    const r = runner('proxmox');
    const deadline = new Date(Date.now() + 2000).toISOString();
    const f = await updateFailure(createCheckpoint(h, r, input(r), { jobId: '7020', deadline }));
    expect(f).toEqual({
      type: 'BackendTimeout',
      message: 'Checkpoint could not be created before the create deadline',
    });
    expect(steps(h.stubs.calls)).toEqual(['takeSnapshot', 'removeSnapshot']);
    expect(h.stubs.callsOf('transitionCheckpoint')[0]!.input).toMatchObject({
      to: 'create_failed',
      errorDetail: expect.stringMatching(/^not created before its deadline/),
    });
    expect(await handle(h, r).result()).toMatchObject({ state: 'create_failed' });
    never.open();
    // The next job's create (cooldown 0) gets a new run.
    h.stubs.on('takeSnapshot', () => undefined);
    const next = await createCheckpoint(h, r, input(r), { jobId: '7021' });
    expect(next).toMatchObject({ job_id: '7021', state: 'created' });
    await handle(h, r).terminate();
  });

  it('a record cut off by the deadline is recorded again to end it as create_failed; an expired request is refused', async () => {
    const never = gate();
    let records = 0;
    // The first record hangs past the deadline (its late result is not taken).
    h.stubs.on('recordCheckpoint', () =>
      ++records === 1
        ? never.promise.then(() => ({ id: 4710, pollJobs: true }))
        : { id: 4711, pollJobs: true },
    );
    const r = runner('bare_metal');
    const deadline = new Date(Date.now() + 2000).toISOString();
    const f = await updateFailure(createCheckpoint(h, r, input(r), { jobId: '7022', deadline }));
    expect(f.type).toBe('BackendTimeout');
    expect(h.stubs.callsOf('recordCheckpoint')).toHaveLength(2);
    expect(h.stubs.callsOf('transitionCheckpoint')[0]!.input).toMatchObject({
      checkpointId: 4711,
      to: 'create_failed',
    });
    never.open();

    const r2 = runner('bare_metal');
    const expired = new Date(Date.now() - 1000).toISOString();
    expect(
      await updateFailure(createCheckpoint(h, r2, input(r2), { jobId: '7023', deadline: expired })),
    ).toEqual({
      type: 'BackendTimeout',
      message: 'Checkpoint could not be created before the create deadline',
    });
    await handle(h, r2).terminate();
  });

  it('validators: a second create is 409, a finalize of another name is refused, cooldown is 429', async () => {
    const r = runner('bare_metal', { gitlabRunnerId: null });
    const cp = await createCheckpoint(h, r, input(r, { cooldownSeconds: 30 }), { jobId: '7005' });
    expect(await updateFailure(createCheckpoint(h, r, input(r), { jobId: '7006' }))).toEqual({
      type: 'CheckpointConflict',
      message: `Active checkpoint '${cp.name}' already exists for runner '${r.runnerId}'`,
    });
    expect(await updateFailure(finalize(h, r, 'job-1-1-abcdef12', 'success'))).toEqual({
      type: 'CheckpointNotActive',
      message: 'Checkpoint is not held by this workflow run',
    });
    await finalize(h, r, cp.name, 'failure');
    // The cooldown runs after the reset, before the unpause and the terminal state.
    await waitPhase(h, r, 'cooldown');
    expect(await updateFailure(createCheckpoint(h, r, input(r), { jobId: '7007' }))).toEqual({
      type: 'CooldownActive',
      message: 'Cooldown period active, try again later',
    });
    expect(await finalize(h, r, cp.name, 'success')).toEqual({
      detail: 'Already finalized',
      state: 'finalize_queued',
    });
    await handle(h, r).terminate();
  });
});

describe('the end of the job', () => {
  it('finalize failure on Proxmox: pause, stop, rollback, start, readiness since the boot, snapshot removed, unpause → reset', async () => {
    const r = runner('proxmox');
    const cp = await createCheckpoint(h, r, input(r), { jobId: '7010' });
    expect(await finalize(h, r, cp.name, 'failure')).toEqual({
      detail: 'Finalize queued',
      checkpoint_name: cp.name,
    });
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'takeSnapshot',
      'checkRunnerPaused',
      'sendPause',
      'stopVm',
      'rollbackVm',
      'startVm',
      'waitUntilReady',
      'removeSnapshot',
      'unpauseRunner',
    ]);
    expect(transitions(h.stubs.calls)).toEqual(['finalize_queued', 'reset']);
    const queued = h.stubs.callsOf('transitionCheckpoint')[0]!.input;
    expect(queued).toMatchObject({
      finalizeStatus: 'failure',
      finalizeSource: 'hook',
      // The pause comes before any bookkeeping, and is logged with the first state change,
      // its fact as data (runner_pauses), not as the log's words.
      pauseLog: {
        result: 'ok',
        detail: 'paused GitLab runner 40',
        fact: { target: { kind: 'gitlab', gitlabRunnerId: 40 }, state: 'paused' },
      },
    });
    // The run's memo names the pause and the finalize before any Postgres write (the reconciler reads it).
    expect((await handle(h, r).describe()).memo).toEqual({
      pause: { checkpoint: cp.name, target: { kind: 'gitlab', gitlabRunnerId: 40 }, labels: [] },
      finalize: { checkpoint: cp.name, status: 'failure', source: 'hook' },
    });
    const names = h.stubs.calls.map((c) => c.name);
    expect(names.indexOf('sendPause')).toBeLessThan(names.lastIndexOf('transitionCheckpoint'));
    expect(names.indexOf('sendPause')).toBeLessThan(
      h.stubs.calls.findIndex((c) => c.name === 'transitionCheckpoint'),
    );
    // Readiness is told which agent session predates the stop (one clock: agent_sessions').
    expect(h.stubs.callsOf('waitUntilReady')[0]!.input).toMatchObject({
      staleSession: 'session-before-stop',
    });
    // The runner id labels the worker's step metrics (pause_check, pause).
    expect(h.stubs.callsOf('checkRunnerPaused')[0]!.input).toEqual({
      gitlabRunnerId: 40,
      runnerId: r.runnerId,
    });
    expect(h.stubs.callsOf('sendPause')[0]!.input).toEqual({
      gitlabRunnerId: 40,
      runnerId: r.runnerId,
    });
    // The clean end carries when the job ended: time to clean is measured from the finalize.
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      to: 'reset',
      timeToClean: { jobEndedAt: queued.finalizedAt, path: 'finalize' },
    });
    expect(Date.parse(queued.finalizedAt as string)).not.toBeNaN();
  });

  it('finalize success on bare metal cleans up (deleted); with reset_on_success it resets', async () => {
    const a = runner('bare_metal', { gitlabRunnerId: null });
    const cpA = await createCheckpoint(h, a, input(a), { jobId: '7011' });
    await finalize(h, a, cpA.name, 'success');
    expect(await handle(h, a).result()).toMatchObject({ state: 'deleted' });
    expect(h.stubs.callsOf('runRunnerCommand').map((c) => c.input.which)).toEqual(['cleanup_cmd']);

    const b = runner('bare_metal', { gitlabRunnerId: null, resetOnSuccess: true });
    const cpB = await createCheckpoint(h, b, input(b), { jobId: '7012' });
    await finalize(h, b, cpB.name, 'success');
    expect(await handle(h, b).result()).toMatchObject({ state: 'reset' });
    expect(h.stubs.callsOf('runRunnerCommand').map((c) => c.input.which)).toEqual([
      'cleanup_cmd',
      'reset_cmd',
    ]);
    // No GitLab runner: nothing to pause, nothing to unpause.
    expect(h.stubs.names()).not.toContain('checkRunnerPaused');
    expect(h.stubs.names()).not.toContain('sendPause');
    expect(h.stubs.names()).not.toContain('unpauseRunner');
  });

  it('the poller ends the job with GitLab’s status and source poller', async () => {
    let polls = 0;
    h.stubs.on('pollJobStatus', () => (++polls >= 2 ? 'canceled' : 'running'));
    const r = runner('bare_metal');
    await createCheckpoint(h, r, input(r), { jobId: '7013', projectId: '9' });
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    // The runner picks the CI system to ask (its ci_adapter), the project the job's.
    expect(h.stubs.callsOf('pollJobStatus').map((c) => c.input)).toEqual([
      { projectId: '9', jobId: '7013', runnerId: r.runnerId },
      { projectId: '9', jobId: '7013', runnerId: r.runnerId },
    ]);
    const queued = h.stubs.callsOf('transitionCheckpoint')[0]!.input;
    expect(queued).toMatchObject({
      to: 'finalize_queued',
      finalizeStatus: 'canceled',
      finalizeSource: 'poller',
    });
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      to: 'reset',
      timeToClean: { jobEndedAt: queued.finalizedAt, path: 'poller' },
    });
    expect(h.stubs.names()).not.toContain('noteOperation');
  });

  it('checkpoints created together poll first at spread moments, none before the minimum age nor after one interval past it', async () => {
    h.stubs.on('pollJobStatus', () => 'failure');
    const minAge = 1;
    const interval = 8;
    const runners = Array.from({ length: 10 }, () => runner('bare_metal'));
    const created = new Map<string, number>();
    await Promise.all(
      runners.map(async (r, i) => {
        const t = input(r, { pollerIntervalSeconds: interval, pollerMinAgeSeconds: minAge });
        const before = Date.now();
        await createCheckpoint(h, r, t, { jobId: String(7100 + i), projectId: '9' });
        created.set(r.runnerId, before);
      }),
    );
    await Promise.all(runners.map((r) => handle(h, r).result()));
    const offsets = runners.map((r) => {
      const first = h.stubs.callsOf('pollJobStatus').find((c) => c.input.runnerId === r.runnerId)!;
      return (first.at - created.get(r.runnerId)!) / 1000;
    });
    for (const o of offsets) {
      expect(o).toBeGreaterThanOrEqual(minAge);
      // Timers fire up to about a second late on the dev server.
      expect(o).toBeLessThan(minAge + interval + 2);
    }
    // Ten uniform draws over 8 s all within 2 s of each other: about 3 in 100,000.
    expect(Math.max(...offsets) - Math.min(...offsets)).toBeGreaterThan(interval / 4);
  });

  it('without a project id, or when the worker does not poll, nothing polls and the TTL ends it (gc_reset); the record notes why', async () => {
    h.stubs.on('recordCheckpoint', () => ({ id: 424242, pollJobs: false }));
    const r = runner('proxmox');
    const cp = await createCheckpoint(h, r, input(r, { ttlSeconds: 2 }), {
      jobId: '7014',
      projectId: '9',
    });
    expect(await handle(h, r).result()).toMatchObject({ state: 'gc_reset' });
    // The `poller` note is recordCheckpoint's own (one call, one transaction).
    expect(h.stubs.names()).not.toContain('noteOperation');
    expect(h.stubs.names()).not.toContain('pollJobStatus');
    // The TTL path resets (never cleans up), and leaves the finalize status empty.
    expect(steps(h.stubs.calls)).toContain('rollbackVm');
    expect(h.stubs.callsOf('transitionCheckpoint')[0]!.input).toMatchObject({
      to: 'finalize_queued',
      finalizeStatus: null,
      finalizeSource: null,
    });
    // Time to clean counts from the TTL's expiry.
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      to: 'gc_reset',
      timeToClean: {
        jobEndedAt: new Date(Date.parse(cp.created_at) + 2000).toISOString(),
        path: 'ttl',
      },
    });
  });

  it('finalize answers once the pause is done, and no later than finalizeAckSeconds while GitLab is slow', async () => {
    const pause = gate();
    let pauseDone = false;
    h.stubs.on('sendPause', async () => {
      await pause.promise;
      pauseDone = true;
    });
    const r = runner('bare_metal');
    const cp = await createCheckpoint(h, r, input(r, { finalizeAckSeconds: 1 }), {
      jobId: '7015',
    });
    // Slow GitLab: the answer comes after about a second, the pause still running.
    await finalize(h, r, cp.name, 'failure');
    expect(pauseDone).toBe(false);
    pause.open();
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });

    const pause2 = gate();
    let pause2Done = false;
    h.stubs.on('sendPause', async () => {
      await pause2.promise;
      pause2Done = true;
    });
    const r2 = runner('bare_metal');
    const cp2 = await createCheckpoint(h, r2, input(r2), { jobId: '7016' });
    const answered = finalize(h, r2, cp2.name, 'failure');
    await waitPhase(h, r2, 'finalizing');
    pause2.open();
    await answered;
    expect(pause2Done).toBe(true);
    expect(await handle(h, r2).result()).toMatchObject({ state: 'reset' });
  });

  it('a failed pause does not stop the reset, and is undone; a runner paused by someone else stays paused', async () => {
    h.stubs.on('sendPause', () => {
      throw nonRetryable('GitLab set runner paused: 403 Forbidden');
    });
    const a = runner('bare_metal');
    const cpA = await createCheckpoint(h, a, input(a), { jobId: '7017' });
    await finalize(h, a, cpA.name, 'failure');
    expect(await handle(h, a).result()).toMatchObject({ state: 'reset' });
    expect(h.stubs.callsOf('transitionCheckpoint')[0]!.input).toMatchObject({
      pauseLog: { result: 'error', detail: 'pause request sent' },
    });
    expect(steps(h.stubs.calls)).toEqual([
      'checkRunnerPaused',
      'sendPause',
      'runRunnerCommand',
      'waitUntilReady',
      'unpauseRunner',
    ]);

    h.stubs.on('checkRunnerPaused', () => ({ paused: true }));
    const b = runner('bare_metal');
    const before = h.stubs.calls.length;
    const cpB = await createCheckpoint(h, b, input(b), { jobId: '7018' });
    await finalize(h, b, cpB.name, 'failure');
    expect(await handle(h, b).result()).toMatchObject({ state: 'reset' });
    expect(steps(h.stubs.calls.slice(before))).toEqual([
      'checkRunnerPaused',
      'runRunnerCommand',
      'waitUntilReady',
    ]);
  });

  it('a pause that was never sent (GitLab could not say whether it is paused) is not undone', async () => {
    h.stubs.on('checkRunnerPaused', () => {
      throw nonRetryable('cannot tell whether GitLab runner 40 is paused', 'PauseCheckFailed');
    });
    const r = runner('bare_metal');
    const cp = await createCheckpoint(h, r, input(r), { jobId: '7019' });
    await finalize(h, r, cp.name, 'failure');
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'checkRunnerPaused',
      'runRunnerCommand',
      'waitUntilReady',
    ]);
  });

  it('Postgres unreachable at the job end: the runner is paused and finalize answered before any bookkeeping lands', async () => {
    let dbUp = false;
    h.stubs.on('transitionCheckpoint', async (i: { to?: string }) => {
      if (i.to === 'finalize_queued' && !dbUp)
        throw new Error('connect ECONNREFUSED 127.0.0.1:5432');
      return undefined;
    });
    const r = runner('bare_metal');
    const cp = await createCheckpoint(h, r, input(r), { jobId: '7020' });
    expect(await finalize(h, r, cp.name, 'failure')).toEqual({
      detail: 'Finalize queued',
      checkpoint_name: cp.name,
    });
    expect(h.stubs.names()).toContain('sendPause');
    expect(steps(h.stubs.calls)).not.toContain('runRunnerCommand');
    dbUp = true;
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
  });

  it('a run started without a create waits for one and does nothing; canceling it ends it', async () => {
    const r = runner('bare_metal');
    await h.client.workflow.start('checkpointWorkflow', {
      workflowId: `e2epool-runner-${r.runnerId}`,
      taskQueue: h.taskQueue,
      args: [input(r)],
    });
    await waitPhase(h, r, 'waiting_for_create');
    await handle(h, r).cancel();
    await expect(handle(h, r).result()).rejects.toBeInstanceOf(WorkflowFailedError);
    expect(h.stubs.calls).toEqual([]);
  });
});

describe('current details (what the Temporal Web UI shows)', () => {
  it('say the phase, the step running now and the last error as the run moves', async () => {
    const resetGate = gate();
    let failing = true;
    h.stubs.on('runRunnerCommand', async () => {
      await resetGate.promise;
      if (failing)
        throw nonRetryable('reset_cmd exited with 7; stderr: disk on fire', 'CommandFailed');
    });
    const r = runner('bare_metal');
    const cp = await createCheckpoint(h, r, input(r, { ttlSeconds: 3600, resetMaxAttempts: 1 }), {
      jobId: '7030',
      projectId: '9',
    });
    const ttlAt = new Date(Date.parse(cp.created_at) + 3600_000).toISOString();
    await waitDetails(
      h,
      r,
      '- **phase:** waiting_for_job (state `created`)\n' +
        `- **now:** waiting for the job (TTL at ${ttlAt}; polling GitLab)\n` +
        '- **last error:** none',
    );

    await finalize(h, r, cp.name, 'failure');
    await waitDetails(
      h,
      r,
      '- **phase:** finalizing (state `finalize_queued`)\n' +
        '- **now:** reset_cmd\n' +
        '- **last error:** none',
    );

    resetGate.open();
    await waitDetails(
      h,
      r,
      '- **phase:** needs_attention (state `needs_attention`)\n' +
        '- **now:** needs_attention: the reset failed; waiting for an operator (signal retry or release)\n' +
        '- **last error:** CommandFailed: reset_cmd exited with 7; stderr: disk on fire',
    );

    failing = false;
    await handle(h, r).signal(retrySignal);
    expect(await handle(h, r).result()).toEqual({ name: cp.name, state: 'reset' });
    // A closed run still answers (replayed): it ended clean; the error stays for the record.
    expect(await currentDetails(h, r)).toBe(
      '- **phase:** done (state `reset`)\n' +
        '- **now:** nothing: the run is closing\n' +
        '- **last error:** CommandFailed: reset_cmd exited with 7; stderr: disk on fire',
    );
    // Details live in the worker, not in the history: the describe call has none of them.
    const described = await handle(h, r).describe();
    expect(JSON.stringify(described.raw)).not.toContain('reset_cmd exited');
  });
});
