/**
 * Records the histories the replay test replays: run with
 * `npm run replay:record` (not part of `npm test`). Each scenario runs the
 * checkpoint workflow of the current code on a real dev server with stubbed
 * activities and writes its history to test/replay/histories/<scenario>.json.
 *
 * Recorded once per released workflow shape: fixtures of older shapes stay,
 * so every change must still replay what running checkpoints already did.
 * Add new scenarios under a new name; a scenario whose fixture exists is
 * skipped (delete a fixture only when no run of that shape can still exist).
 */
import { WorkflowFailedError } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  checkpointWorkflowId,
  finalizeUpdate,
  releaseHoldSignal,
  releaseSignal,
  retrySignal,
  stateQuery,
} from '../../common/checkpoint';
import { fail } from '../../common/fail';
import { uniqueId } from '../helpers/env';
import { shared } from '../helpers/shared';
import { startContinueAsNewDevServer } from '../helpers/temporal';
import { waitFor } from '../helpers/wait';
import {
  createCheckpoint,
  nonRetryable,
  startWorkflowHarness,
  StubActivities,
  type RunnerSpec,
  type WorkflowHarness,
} from '../workflow/harness';

const OUT = join(__dirname, 'histories');

/**
 * The workflow input as the API built it before 2026-11-27 (with pollerEnabled
 * and the readiness timings): the first scenarios were recorded with it.
 */
function inputFor(runner: RunnerSpec, timing: Record<string, unknown> = {}) {
  return {
    runner: {
      runnerId: runner.runnerId,
      backend: runner.backend,
      gitlabRunnerId: runner.gitlabRunnerId,
      resetOnSuccess: runner.resetOnSuccess ?? false,
    },
    timing: {
      ttlSeconds: 3600,
      pollerEnabled: true,
      pollerIntervalSeconds: 1,
      pollerMinAgeSeconds: 0,
      cooldownSeconds: 1,
      readinessTimeoutSeconds: 5,
      readinessPollIntervalSeconds: 0.1,
      finalizeAckSeconds: 10,
      resetMaxAttempts: 2,
      ...timing,
    },
  };
}

/** Saves a run's history as `temporal workflow show --output json` prints it (what operators download). */
function save(address: string, scenario: string, workflowId: string, runId?: string) {
  const path = join(OUT, `${scenario}.json`);
  if (existsSync(path)) throw new Error(`${path} exists: fixtures are never re-recorded`);
  const json = execFileSync(
    shared().temporalBin,
    [
      'workflow',
      'show',
      '--address',
      address,
      '--workflow-id',
      workflowId,
      '--output',
      'json',
    ].concat(runId ? ['--run-id', runId] : []),
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  writeFileSync(path, `${JSON.stringify(JSON.parse(json), null, 1)}\n`);
}

function runner(backend: RunnerSpec['backend'], gitlabRunnerId: number | null): RunnerSpec {
  return {
    runnerId: uniqueId(`rec-${backend === 'proxmox' ? 'pm' : 'bm'}`),
    backend,
    gitlabRunnerId,
  };
}

async function finalize(h: WorkflowHarness, r: RunnerSpec, name: string, status: string) {
  return h.client.workflow
    .getHandle(checkpointWorkflowId(r.runnerId))
    .executeUpdate(finalizeUpdate, {
      args: [{ checkpointName: name, status: status as 'success', source: 'hook' }],
    });
}

async function waitPhase(h: WorkflowHarness, r: RunnerSpec, phase: string) {
  const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
  await waitFor(`phase ${phase}`, async () => (await handle.query(stateQuery)).phase === phase);
}

/** Today's workflow input (CheckpointWorkflowInput), for scenarios recorded since. */
function inputNow(runner: RunnerSpec, timing: Record<string, unknown> = {}) {
  const { runner: plan } = inputFor(runner);
  return {
    runner: plan,
    timing: {
      ttlSeconds: 3600,
      pollerIntervalSeconds: 1,
      pollerMinAgeSeconds: 0,
      cooldownSeconds: 1,
      finalizeAckSeconds: 10,
      resetMaxAttempts: 2,
      ...timing,
    },
  };
}

/** A bare-metal GitHub Actions runner (no GitLab runner), "paused" by its `e2e` label. */
function githubRunner(): RunnerSpec {
  return {
    ...runner('bare_metal', null),
    pause: { kind: 'github', githubRunnerId: 7, scope: { repo: 'acme/app' }, labels: ['e2e'] },
  };
}

/** Today's input for a GitHub runner: `runner.pause` names its labels. */
function githubInput(r: RunnerSpec) {
  const input = inputNow(r);
  return { ...input, runner: { ...input.runner, pause: r.pause } };
}

/** A scenario returns its checkpoint's runner id, or the id of another workflow it ran. */
type Scenario = (h: WorkflowHarness, s: StubActivities) => Promise<string | { workflowId: string }>;

const scenarios: Record<string, Scenario> = {
  async 'proxmox-failure-reset'(h) {
    const r = runner('proxmox', 7);
    const cp = await createCheckpoint(h, r, inputFor(r), { jobId: '101', projectId: null });
    await finalize(h, r, cp.name, 'failure');
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  async 'bare-metal-success-cleanup'(h) {
    const r = runner('bare_metal', null);
    const cp = await createCheckpoint(h, r, inputFor(r), { jobId: '102', projectId: null });
    await finalize(h, r, cp.name, 'success');
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  async 'poller-job-failed'(h, s) {
    let polls = 0;
    s.on('pollJobStatus', () => (++polls >= 2 ? 'failure' : 'running'));
    const r = runner('bare_metal', 9);
    await createCheckpoint(h, r, inputFor(r), { jobId: '103', projectId: '5' });
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  async 'ttl-gc-reset'(h) {
    const r = runner('proxmox', 8);
    await createCheckpoint(h, r, inputFor(r, { ttlSeconds: 2, pollerEnabled: false }), {
      jobId: '104',
      projectId: '5',
    });
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  async 'create-failure'(h, s) {
    s.on('takeSnapshot', () => {
      throw nonRetryable('snapshot failed: storage full');
    });
    const r = runner('proxmox', 10);
    await expect(
      createCheckpoint(h, r, inputFor(r), { jobId: '105', projectId: null }),
    ).rejects.toThrow();
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  async 'needs-attention-retry'(h, s) {
    let fail = true;
    s.on('runRunnerCommand', () => {
      if (fail) throw nonRetryable('reset_cmd exited with 7', 'CommandFailed');
    });
    const r = runner('bare_metal', 11);
    const cp = await createCheckpoint(h, r, inputFor(r, { resetMaxAttempts: 1 }), {
      jobId: '106',
    });
    await finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'needs_attention');
    fail = false;
    const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
    await handle.signal(retrySignal);
    await handle.result();
    return r.runnerId;
  },
  async 'needs-attention-release'(h, s) {
    s.on('runRunnerCommand', () => {
      throw nonRetryable('reset_cmd exited with 7', 'CommandFailed');
    });
    const r = runner('bare_metal', 12);
    const cp = await createCheckpoint(h, r, inputFor(r, { resetMaxAttempts: 1 }), {
      jobId: '107',
    });
    await finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'needs_attention');
    const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
    await handle.signal(releaseSignal);
    await handle.result();
    return r.runnerId;
  },
  async 'canceled-while-paused'(h, s) {
    s.on('runRunnerCommand', () => {
      throw nonRetryable('reset_cmd exited with 7', 'CommandFailed');
    });
    const r = runner('bare_metal', 13);
    const cp = await createCheckpoint(h, r, inputFor(r, { resetMaxAttempts: 1 }), {
      jobId: '108',
    });
    await finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'needs_attention');
    const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
    await handle.cancel();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    return r.runnerId;
  },
  // Since the create deadline (patch 'create-deadline'): the snapshot hangs past it.
  async 'create-deadline-cut-off'(h, s) {
    let release!: () => void;
    const hang = new Promise<void>((r) => (release = r));
    s.on('takeSnapshot', () => hang);
    const r = runner('proxmox', 15);
    const deadline = new Date(Date.now() + 2000).toISOString();
    await expect(createCheckpoint(h, r, inputNow(r), { jobId: '110', deadline })).rejects.toThrow();
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    release();
    return r.runnerId;
  },
  // Since patch 'unpause-needs-attention': GitLab refuses the unpause once; `retry` after the fix.
  async 'unpause-refused-then-retried'(h, s) {
    let refused = true;
    s.on('unpauseRunner', () => {
      if (refused) throw nonRetryable('GitLab set runner paused: 401 Unauthorized');
    });
    const r = runner('bare_metal', 16);
    const cp = await createCheckpoint(h, r, inputNow(r), { jobId: '111' });
    await finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'needs_attention');
    refused = false;
    const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
    await handle.signal(retrySignal);
    await handle.result();
    return r.runnerId;
  },
  // Since patch 'pause-check-failed': GitLab cannot say whether the runner is paused; no unpause.
  async 'pause-check-failed'(h, s) {
    s.on('pauseRunner', () => {
      throw nonRetryable('cannot tell whether GitLab runner 17 is paused', 'PauseCheckFailed');
    });
    const r = runner('bare_metal', 17);
    const cp = await createCheckpoint(h, r, inputNow(r), { jobId: '112' });
    await finalize(h, r, cp.name, 'failure');
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  // Since patch 'readiness-one-clock': stopVm names the agent session from before the stop; readiness skips it.
  async 'proxmox-reset-one-clock'(h) {
    const r = runner('proxmox', 18);
    const cp = await createCheckpoint(h, r, inputNow(r), { jobId: '113' });
    await finalize(h, r, cp.name, 'failure');
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  // Since the reconciler: a run adopting a finalize_queued checkpoint whose run was terminated.
  async 'adopted-by-reconciler'(h) {
    const r = runner('bare_metal', 18);
    const wfId = checkpointWorkflowId(r.runnerId);
    await h.client.workflow.start('checkpointWorkflow', {
      workflowId: wfId,
      taskQueue: h.taskQueue,
      args: [
        {
          ...inputNow(r),
          resume: {
            name: 'job-113-1795000000-abcdef12',
            jobId: '113',
            projectId: null,
            checkpointId: 4113,
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
    await h.client.workflow.getHandle(wfId).result();
    return r.runnerId;
  },
  // Since patch 'pause-before-bookkeeping': the note runs beside the wait; the
  // pause (check, send) comes before the finalize_queued write; the left-paused release is logged.
  async 'pause-before-bookkeeping'(h, s) {
    let refused = true;
    s.on('unpauseRunner', () => {
      if (refused) throw nonRetryable('GitLab set runner paused: 401 Unauthorized');
    });
    const r = runner('bare_metal', 19);
    const cp = await createCheckpoint(h, r, inputNow(r), { jobId: '114' });
    await finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'needs_attention');
    refused = false;
    const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
    await handle.signal(releaseSignal);
    await handle.result();
    return r.runnerId;
  },
  // Since patch 'hold-on-failure': a failed job holds the runner (timer, hold row); the hold runs out.
  async 'hold-on-failure-expired'(h) {
    const r = runner('bare_metal', 20);
    const input = inputNow(r);
    const cp = await createCheckpoint(
      h,
      r,
      { ...input, runner: { ...input.runner, holdOnFailureSeconds: 2 } },
      { jobId: '115' },
    );
    await finalize(h, r, cp.name, 'failure');
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  // Since patch 'hold-on-failure': an operator ends a long hold early with `release-hold`.
  async 'hold-on-failure-released'(h) {
    const r = runner('bare_metal', 21);
    const input = inputNow(r);
    const cp = await createCheckpoint(
      h,
      r,
      { ...input, runner: { ...input.runner, holdOnFailureSeconds: 3600 } },
      { jobId: '116' },
    );
    await finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'held');
    const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
    await handle.signal(releaseHoldSignal);
    await handle.result();
    return r.runnerId;
  },
  // Since patch 'github-label-pause': a GitHub runner polled by its repository; its
  // pause label is read, removed before finalize_queued, restored after readiness.
  async 'github-label-pause'(h, s) {
    let polls = 0;
    s.on('pollJobStatus', () => (++polls >= 2 ? 'failure' : 'running'));
    const r = githubRunner();
    await createCheckpoint(h, r, githubInput(r), { jobId: '117', projectId: 'acme/app' });
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  // Since patch 'github-label-pause': GitHub refuses the restore once (needs_attention); `retry` after the fix.
  async 'github-label-restore-refused'(h, s) {
    let refused = true;
    s.on('restoreRunnerLabels', () => {
      if (refused)
        throw nonRetryable('GitHub POST labels: 403 Must have admin rights to Repository.');
    });
    const r = githubRunner();
    const cp = await createCheckpoint(h, r, githubInput(r), { jobId: '118' });
    await finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'needs_attention');
    refused = false;
    const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
    await handle.signal(retrySignal);
    await handle.result();
    return r.runnerId;
  },
  // Since patch 'gitlab-rate-budget': polls on the poll queue (one answered 429,
  // then a wait as long as asked); pause check, pause and unpause on the GitLab queue.
  async 'gitlab-budget-poll-rate-limited'(h, s) {
    let polls = 0;
    s.on('pollJobStatus', () => {
      polls++;
      if (polls === 1)
        throw fail('GitLabRateLimited', 'GitLab GET: 429', { nextRetryDelayMs: 1500 });
      return polls >= 3 ? 'failure' : 'running';
    });
    const r = runner('bare_metal', 22);
    await createCheckpoint(h, r, inputNow(r), { jobId: '119', projectId: '5' });
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
  // Since patch 'gitlab-rate-budget': a finalize arrives while a poll is in flight;
  // the poll is cancelled and the reset goes on at once.
  async 'gitlab-budget-finalize-cancels-poll'(h, s) {
    let release!: () => void;
    const hang = new Promise<void>((ok) => (release = ok));
    s.on('pollJobStatus', async () => {
      await hang;
      return 'running' as const;
    });
    const r = runner('bare_metal', 23);
    const cp = await createCheckpoint(h, r, inputNow(r), { jobId: '120', projectId: '5' });
    await waitFor('a poll in flight', () => s.callsOf('pollJobStatus').length > 0);
    await finalize(h, r, cp.name, 'failure');
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    release();
    return r.runnerId;
  },
  // Since patch 'gitlab-rate-budget': an adopted run asks (checkRunnerPaused), then
  // pauses with that answer (pauseRunner with knownPaused), one request each.
  async 'gitlab-budget-adopted-pause'(h) {
    const r = runner('bare_metal', 24);
    const wfId = checkpointWorkflowId(r.runnerId);
    await h.client.workflow.start('checkpointWorkflow', {
      workflowId: wfId,
      taskQueue: h.taskQueue,
      args: [
        {
          ...inputNow(r),
          resume: {
            name: 'job-121-1795000000-abcdef12',
            jobId: '121',
            projectId: null,
            checkpointId: 4121,
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
    await h.client.workflow.getHandle(wfId).result();
    return r.runnerId;
  },
  // Since patch 'gitlab-rate-budget': a reconciler pass asks GitLab about a paused
  // runner and unpauses it, one activity per request on the GitLab queue.
  async 'gitlab-budget-reconcile'(h) {
    const workflowId = uniqueId('rec-reconcile');
    await h.client.workflow.execute('reconcileWorkflow', {
      workflowId,
      taskQueue: h.taskQueue,
      args: [{ repair: true, minAgeSeconds: 0 }],
    });
    return { workflowId };
  },
  // Since patch 'cooldown-before-unpause': the cooldown timer comes after the
  // reset and before the unpause and the terminal state; no timer at the end.
  async 'cooldown-before-unpause'(h) {
    const r = runner('bare_metal', 24);
    const cp = await createCheckpoint(h, r, inputNow(r, { cooldownSeconds: 1 }), { jobId: '124' });
    await finalize(h, r, cp.name, 'failure');
    await h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
    return r.runnerId;
  },
};

/** Scenarios without a fixture yet: recorded ones are never recorded again. */
const missing = (names: string[]) => names.filter((n) => !existsSync(join(OUT, `${n}.json`)));

describe('record replay fixtures', () => {
  beforeAll(() => mkdirSync(OUT, { recursive: true }));

  it('knows which scenarios it still has to record', () => {
    expect(Object.keys(scenarios).length).toBeGreaterThan(0);
  });

  for (const [name, run] of Object.entries(scenarios).filter(([n]) => missing([n]).length)) {
    it(name, async () => {
      const h = await startWorkflowHarness();
      try {
        const ran = await run(h, h.stubs);
        const workflowId = typeof ran === 'string' ? checkpointWorkflowId(ran) : ran.workflowId;
        save(shared().temporalAddress, name, workflowId);
      } finally {
        await h.stop();
      }
    });
  }

  it('continue-as-new', async () => {
    if (missing(['continue-as-new-first-run', 'continue-as-new-resumed-run']).length < 2) return;
    const temporal = await startContinueAsNewDevServer(40);
    const h = await startWorkflowHarness(new StubActivities(), temporal.address);
    try {
      const r = runner('bare_metal', 14);
      const cp = await createCheckpoint(h, r, inputFor(r), { jobId: '109', projectId: '5' });
      const wfId = checkpointWorkflowId(r.runnerId);
      const first = (await h.client.workflow.getHandle(wfId).describe()).runId;
      await waitFor(
        'a continued run',
        async () => (await h.client.workflow.getHandle(wfId).describe()).runId !== first,
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      await finalize(h, r, cp.name, 'failure');
      await h.client.workflow.getHandle(wfId).result();
      save(temporal.address, 'continue-as-new-first-run', wfId, first);
      save(temporal.address, 'continue-as-new-resumed-run', wfId);
    } finally {
      await h.stop();
      await temporal.stop();
    }
  }, 120_000);
});
