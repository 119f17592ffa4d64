/**
 * Records the histories the replay test replays: run with
 * `npm run replay:record` (not part of `npm test`). Each scenario runs the
 * checkpoint (or reconciler) workflow of the current code on a real dev
 * server with stubbed activities and writes its history to
 * test/replay/histories/<release>/<scenario>.json.
 *
 * A release's fixtures are recorded once and never again: every later change
 * must still replay them (see "Versioning" in CONTRIBUTING.md). A change to a
 * workflow's commands records its new path under the release that ships it
 * (RECORD_RELEASE); a scenario whose fixture exists is skipped.
 */
import { WorkflowFailedError } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  checkpointWorkflowId,
  releaseHoldSignal,
  releaseSignal,
  retrySignal,
  type CheckpointTiming,
  type ResumedCheckpoint,
} from '../../common/checkpoint';
import { baselineWorkflowId } from '../../common/baseline';
import { quarantineWorkflowId } from '../../common/quarantine';
import { fail } from '../../common/fail';
import { uniqueId } from '../helpers/env';
import { shared } from '../helpers/shared';
import { startContinueAsNewDevServer } from '../helpers/temporal';
import { waitFor } from '../helpers/wait';
import { finalize, input as inputOf, waitPhase } from '../workflow/fixtures';
import {
  createCheckpoint,
  nonRetryable,
  startWorkflowHarness,
  StubActivities,
  type RunnerSpec,
  type WorkflowHarness,
} from '../workflow/harness';

/** The release these recordings belong to (a new folder per release that changes a workflow). */
const RECORD_RELEASE = process.env.E2EPOOL_RECORD_RELEASE ?? '1.0.0';
const OUT = join(__dirname, 'histories', RECORD_RELEASE);

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

function runner(
  backend: RunnerSpec['backend'],
  gitlabRunnerId: number | null,
  o: Partial<RunnerSpec> = {},
): RunnerSpec {
  return {
    runnerId: uniqueId(`rec-${backend === 'proxmox' ? 'pm' : 'bm'}`),
    backend,
    gitlabRunnerId,
    ...o,
  };
}

/** The input as the API builds it; a 1 s cooldown so every path records its timer. */
function input(r: RunnerSpec, t: Partial<CheckpointTiming> = {}) {
  return inputOf(r, { cooldownSeconds: 1, finalizeAckSeconds: 10, ...t });
}

/** A bare-metal GitHub Actions runner (no GitLab runner), "paused" by its `e2e` label. */
function githubRunner(): RunnerSpec {
  return runner('bare_metal', null, {
    pause: { kind: 'github', githubRunnerId: 7, scope: { repo: 'acme/app' }, labels: ['e2e'] },
  });
}

const CANARY = '/var/lib/e2epool/canary';
/** A 1.1.0 Proxmox plan with a golden baseline and a canary. */
const golden = (verifyReset: 'canary' | 'required' = 'canary'): Partial<RunnerSpec> => ({
  baselineSnapshot: 'golden-1',
  verifyReset,
  canaryPath: CANARY,
});

const result = (h: WorkflowHarness, r: RunnerSpec) =>
  h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).result();
const signal = (h: WorkflowHarness, r: RunnerSpec, s: typeof retrySignal) =>
  h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId)).signal(s);

/** Starts a run as the reconciler adopts a checkpoint whose run ended without finishing it. */
async function adopt(h: WorkflowHarness, r: RunnerSpec, jobId: string) {
  const resume: ResumedCheckpoint = {
    name: `job-${jobId}-1795000000-abcdef12`,
    jobId,
    projectId: null,
    checkpointId: 4000 + Number(jobId),
    createdAt: new Date().toISOString(),
    pollJobs: false,
    adopted: {
      state: 'finalize_queued',
      jobEnd: { status: 'failure', source: 'hook', at: new Date().toISOString() },
    },
  };
  await h.client.workflow.start('checkpointWorkflow', {
    workflowId: checkpointWorkflowId(r.runnerId),
    taskQueue: h.taskQueue,
    args: [{ ...input(r), resume }],
  });
  await result(h, r);
}

/** A scenario returns its checkpoint's runner id, or the id of another workflow it ran. */
type Scenario = (h: WorkflowHarness, s: StubActivities) => Promise<string | { workflowId: string }>;

/** A job that failed, finalized by its hook: pause, reset, readiness, cooldown, unpause. */
async function failedJob(h: WorkflowHarness, r: RunnerSpec, jobId: string, t = {}) {
  const cp = await createCheckpoint(h, r, input(r, t), { jobId });
  await finalize(h, r, cp.name, 'failure');
  return cp;
}

/** A job the second poll sees failed, then its reset; the checkpoint's runner id. */
async function polledFailedJob(
  h: WorkflowHarness,
  s: StubActivities,
  gitlabRunnerId: number,
  jobId: string,
) {
  let polls = 0;
  s.on('pollJobStatus', () => (++polls >= 2 ? 'failure' : 'running'));
  const r = runner('bare_metal', gitlabRunnerId);
  await createCheckpoint(h, r, input(r), { jobId, projectId: '5' });
  await result(h, r);
  return r.runnerId;
}

/** A failed job whose reset fails its one attempt: the run waits in needs_attention. */
async function toNeedsAttention(
  h: WorkflowHarness,
  s: StubActivities,
  r: RunnerSpec,
  jobId: string,
) {
  s.on('runRunnerCommand', () => {
    throw nonRetryable('reset_cmd exited with 7', 'CommandFailed');
  });
  await failedJob(h, r, jobId, { resetMaxAttempts: 1 });
  await waitPhase(h, r, 'needs_attention');
}

const scenarios: Record<string, Scenario> = {
  async 'bare-metal-success-cleanup'(h) {
    const r = runner('bare_metal', 2);
    const cp = await createCheckpoint(h, r, input(r), { jobId: '102' });
    await finalize(h, r, cp.name, 'success');
    await result(h, r);
    return r.runnerId;
  },
  async 'bare-metal-failure-reset'(h) {
    const r = runner('bare_metal', 3);
    await failedJob(h, r, '103');
    await result(h, r);
    return r.runnerId;
  },
  async 'proxmox-failure-reset'(h) {
    const r = runner('proxmox', 7);
    await failedJob(h, r, '101');
    await result(h, r);
    return r.runnerId;
  },
  async 'no-pause-target'(h) {
    const r = runner('bare_metal', null);
    await failedJob(h, r, '104');
    await result(h, r);
    return r.runnerId;
  },
  'poller-job-failed': (h, s) => polledFailedJob(h, s, 9, '105'),
  // A poll answered 429, then a wait as long as asked; the third poll sees the failure.
  async 'poller-rate-limited'(h, s) {
    let polls = 0;
    s.on('pollJobStatus', () => {
      polls++;
      if (polls === 1)
        throw fail('GitLabRateLimited', 'GitLab GET: 429', { nextRetryDelayMs: 1500 });
      return polls >= 3 ? 'failure' : 'running';
    });
    const r = runner('bare_metal', 22);
    await createCheckpoint(h, r, input(r), { jobId: '106', projectId: '5' });
    await result(h, r);
    return r.runnerId;
  },
  // A finalize arrives while a poll is in flight: the poll is cancelled, the reset goes on.
  async 'finalize-cancels-poll'(h, s) {
    let release!: () => void;
    const hang = new Promise<void>((ok) => (release = ok));
    s.on('pollJobStatus', async () => {
      await hang;
      return 'running' as const;
    });
    const r = runner('bare_metal', 23);
    const cp = await createCheckpoint(h, r, input(r), { jobId: '107', projectId: '5' });
    await waitFor('a poll in flight', () => s.callsOf('pollJobStatus').length > 0);
    await finalize(h, r, cp.name, 'failure');
    await result(h, r);
    release();
    return r.runnerId;
  },
  async 'ttl-gc-reset'(h) {
    const r = runner('proxmox', 8);
    await createCheckpoint(h, r, input(r, { ttlSeconds: 2 }), { jobId: '108' });
    await result(h, r);
    return r.runnerId;
  },
  async 'create-failure'(h, s) {
    s.on('takeSnapshot', () => {
      throw nonRetryable('snapshot failed: storage full');
    });
    const r = runner('proxmox', 10);
    await expect(createCheckpoint(h, r, input(r), { jobId: '109' })).rejects.toThrow();
    await result(h, r);
    return r.runnerId;
  },
  // The snapshot hangs past the create's deadline: the run compensates and answers 504.
  async 'create-deadline-cut-off'(h, s) {
    let release!: () => void;
    const hang = new Promise<void>((ok) => (release = ok));
    s.on('takeSnapshot', () => hang);
    const r = runner('proxmox', 15);
    const deadline = new Date(Date.now() + 2000).toISOString();
    await expect(createCheckpoint(h, r, input(r), { jobId: '110', deadline })).rejects.toThrow();
    await result(h, r);
    release();
    return r.runnerId;
  },
  async 'needs-attention-retry'(h, s) {
    const r = runner('bare_metal', 11);
    await toNeedsAttention(h, s, r, '111');
    s.on('runRunnerCommand', () => undefined);
    await signal(h, r, retrySignal);
    await result(h, r);
    return r.runnerId;
  },
  async 'needs-attention-release'(h, s) {
    const r = runner('bare_metal', 12);
    await toNeedsAttention(h, s, r, '112');
    await signal(h, r, releaseSignal);
    await result(h, r);
    return r.runnerId;
  },
  async 'canceled-while-paused'(h, s) {
    const r = runner('bare_metal', 13);
    await toNeedsAttention(h, s, r, '113');
    const handle = h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
    await handle.cancel();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    return r.runnerId;
  },
  // GitLab refuses the unpause (needs_attention); `retry` after the fix.
  async 'unpause-refused-then-retried'(h, s) {
    let refused = true;
    s.on('unpauseRunner', () => {
      if (refused) throw nonRetryable('GitLab set runner paused: 401 Unauthorized');
    });
    const r = runner('bare_metal', 16);
    await failedJob(h, r, '114');
    await waitPhase(h, r, 'needs_attention');
    refused = false;
    await signal(h, r, retrySignal);
    await result(h, r);
    return r.runnerId;
  },
  // GitLab refuses the unpause; an operator releases the runner still paused.
  async 'unpause-refused-then-released'(h, s) {
    s.on('unpauseRunner', () => {
      throw nonRetryable('GitLab set runner paused: 401 Unauthorized');
    });
    const r = runner('bare_metal', 19);
    await failedJob(h, r, '115');
    await waitPhase(h, r, 'needs_attention');
    await signal(h, r, releaseSignal);
    await result(h, r);
    return r.runnerId;
  },
  // GitLab cannot say whether the runner is paused: nothing is sent, nothing undone.
  async 'pause-check-failed'(h, s) {
    s.on('checkRunnerPaused', () => {
      throw nonRetryable('cannot tell whether GitLab runner 17 is paused', 'PauseCheckFailed');
    });
    const r = runner('bare_metal', 17);
    await failedJob(h, r, '116');
    await result(h, r);
    return r.runnerId;
  },
  async 'hold-expired'(h) {
    const r = runner('bare_metal', 20, { holdOnFailureSeconds: 2 });
    await failedJob(h, r, '117');
    await result(h, r);
    return r.runnerId;
  },
  async 'hold-released'(h) {
    const r = runner('bare_metal', 21, { holdOnFailureSeconds: 3600 });
    await failedJob(h, r, '118');
    await waitPhase(h, r, 'held');
    await signal(h, r, releaseHoldSignal);
    await result(h, r);
    return r.runnerId;
  },
  // Polled by its repository; its label is read, removed before finalize_queued, restored after.
  async 'github-label-pause'(h, s) {
    let polls = 0;
    s.on('pollJobStatus', () => (++polls >= 2 ? 'failure' : 'running'));
    const r = githubRunner();
    await createCheckpoint(h, r, input(r), { jobId: '119', projectId: 'acme/app' });
    await result(h, r);
    return r.runnerId;
  },
  // GitHub refuses the restore once (needs_attention); `retry` after the fix.
  async 'github-label-restore-refused'(h, s) {
    let refused = true;
    s.on('restoreRunnerLabels', () => {
      if (refused)
        throw nonRetryable('GitHub POST labels: 403 Must have admin rights to Repository.');
    });
    const r = githubRunner();
    await failedJob(h, r, '120');
    await waitPhase(h, r, 'needs_attention');
    refused = false;
    await signal(h, r, retrySignal);
    await result(h, r);
    return r.runnerId;
  },
  // The reconciler adopts a finalize_queued GitLab checkpoint: ask, pause, reset, unpause.
  async 'adopted-by-reconciler'(h) {
    const r = runner('bare_metal', 18);
    await adopt(h, r, '121');
    return r.runnerId;
  },
  async 'adopted-github'(h) {
    const r = githubRunner();
    await adopt(h, r, '122');
    return r.runnerId;
  },
  // ---- 1.1.0: golden baseline and proof of reset (PATCH_PROOF_OF_RESET) ----
  // A golden baseline: no snapshot, the canary before the create answers; success resets too, verified.
  async 'golden-success-verified'(h) {
    const r = runner('proxmox', 24, golden());
    const cp = await createCheckpoint(h, r, input(r), { jobId: '130' });
    await finalize(h, r, cp.name, 'success');
    await result(h, r);
    return r.runnerId;
  },
  // The proof fails (needs_attention, the activity quarantined the runner); `retry` proves it.
  async 'golden-verify-failed-then-retried'(h, s) {
    let refuted = true;
    s.on('verifyReset', () =>
      refuted
        ? { verified: false, detail: 'the canary still holds the nonce' }
        : { verified: true, detail: 'canary gone' },
    );
    const r = runner('proxmox', 25, golden());
    await failedJob(h, r, '131');
    await waitPhase(h, r, 'needs_attention');
    refuted = false;
    await signal(h, r, retrySignal);
    await result(h, r);
    return r.runnerId;
  },
  // Per-job snapshot with the canary: snapshot, canary; the proof before the snapshot goes.
  async 'proxmox-per-job-canary'(h) {
    const r = runner('proxmox', 26, { verifyReset: 'canary', canaryPath: CANARY });
    await failedJob(h, r, '132');
    await result(h, r);
    return r.runnerId;
  },
  // Bare metal with verify_cmd: reset_cmd, readiness, verify.
  async 'bare-metal-verify-cmd'(h) {
    const r = runner('bare_metal', 27, { verifyReset: 'required' });
    await failedJob(h, r, '133');
    await result(h, r);
    return r.runnerId;
  },
  // Not verifiable under `required`: needs_attention; an operator releases it.
  async 'verify-required-unverifiable-released'(h, s) {
    s.on('verifyReset', () => ({ verified: null, detail: 'no guest agent' }));
    const r = runner('proxmox', 28, golden('required'));
    await failedJob(h, r, '134');
    await waitPhase(h, r, 'needs_attention');
    await signal(h, r, releaseSignal);
    await result(h, r);
    return r.runnerId;
  },
  // `required` and no canary could be written: the create fails (nothing of its own to remove).
  async 'golden-canary-required-create-failure'(h, s) {
    s.on('writeCanary', () => {
      throw nonRetryable('canary not written (guest agent not running)', 'ResetNotVerified');
    });
    const r = runner('proxmox', 29, golden('required'));
    await expect(createCheckpoint(h, r, input(r), { jobId: '135' })).rejects.toThrow();
    await result(h, r);
    return r.runnerId;
  },
  // ---- 1.1.0: baseline refresh and rollout (new workflow types) ----
  // The runner's checkpoint ends after one look (a timer), then every step succeeds.
  async 'baseline-refresh-success'(h, s) {
    let looks = 0;
    s.on('refreshHasActiveCheckpoint', () => looks++ === 0);
    return refresh(h, uniqueId('rec-refresh'), 'echo v2 > /etc/version');
  },
  // update_cmd fails: the previous baseline is restored, the runner undrained, the run fails.
  async 'baseline-refresh-update-failed'(h, s) {
    s.on('refreshPrepare', () => {
      throw nonRetryable('update_cmd exited with 3');
    });
    return refresh(h, uniqueId('rec-refresh'), 'exit 3');
  },
  // Restoring fails too: the runner is quarantined and left drained.
  async 'baseline-refresh-restore-failed-quarantined'(h, s) {
    s.on('refreshVerify', () => {
      throw nonRetryable('the canary survived the rollback', 'ResetNotVerified');
    });
    s.on('refreshRestore', () => {
      throw nonRetryable("snapshot 'golden-base' does not exist: cannot roll back");
    });
    return refresh(h, uniqueId('rec-refresh'));
  },
  // A rollout: the canary alone, then two at once.
  async 'baseline-rollout-success'(h) {
    return rollout(h, [uniqueId('rec-a'), uniqueId('rec-b'), uniqueId('rec-c')], 2);
  },
  // The canary fails: no other refresh starts.
  async 'baseline-rollout-canary-failed'(h, s) {
    s.on('refreshPrepare', () => {
      throw nonRetryable('update_cmd exited with 1');
    });
    return rollout(h, [uniqueId('rec-a'), uniqueId('rec-b')], 1);
  },
  // ---- 2.0.0: refresh pauses the runner and waits for its agent (PATCH_REFRESH_HOLD_AND_AGENT) ----
  // Paused once its checkpoint ended; the agent is back on the new baseline; unpaused at the end.
  async 'baseline-refresh-hold-and-agent'(h, s) {
    let looks = 0;
    s.on('refreshHasActiveCheckpoint', () => looks++ === 0);
    return refresh(h, uniqueId('rec-refresh'), 'echo v3 > /etc/version');
  },
  // The agent does not come back on the new baseline: the previous one is restored (its agent
  // back), the runner undrained and unpaused, the run fails.
  async 'baseline-refresh-agent-missing-restored'(h, s) {
    s.on('refreshAwaitAgent', (i: { staleSession: string | null }) => {
      if (i.staleSession === 'session-1')
        throw nonRetryable('agent has not reconnected since the reboot', 'NotReady');
      return 'agent connected';
    });
    return refresh(h, uniqueId('rec-refresh'));
  },
  // ---- 2.0.0: an idle runner's quarantine pauses it (new workflow type) ----
  async 'runner-quarantine-hold'(h) {
    const workflowId = quarantineWorkflowId(uniqueId('rec-quarantine'));
    await h.client.workflow.execute('runnerQuarantineWorkflow', {
      workflowId,
      taskQueue: h.taskQueue,
      args: [{ runnerId: 'stub-runner' }],
    });
    return { workflowId };
  },
  // One reconciler pass: checkpoints, paused runners (GitLab apart), snapshots, retention.
  'reconcile-pass': (h) => reconcilePass(h, 'rec-reconcile'),
  // 2.0.0 (PATCH_GITLAB_PRIORITY): polls, the pause check, the pause and the
  // unpause on the one GitLab queue, each with its priority.
  'gitlab-priority-polled-reset': (h, s) => polledFailedJob(h, s, 24, '124'),
  // 2.0.0: the reconciler's GitLab checks and unpauses at their priority.
  'gitlab-priority-reconcile-pass': (h) => reconcilePass(h, 'rec-reconcile-prio'),
  // 2.0.0 (PATCH_POLL_SPREAD): the first poll at a random moment within one interval.
  'poll-spread-polled-reset': (h, s) => polledFailedJob(h, s, 25, '125'),
};

/** Runs one reconciler pass (repairing) to its end; its workflow id. */
async function reconcilePass(h: WorkflowHarness, label: string) {
  const workflowId = uniqueId(label);
  await h.client.workflow.execute('reconcileWorkflow', {
    workflowId,
    taskQueue: h.taskQueue,
    args: [{ repair: true, minAgeSeconds: 0 }],
  });
  return { workflowId };
}

/** Runs a baseline refresh to its end (failed or not); its workflow id. */
async function refresh(h: WorkflowHarness, runnerId: string, updateCmd?: string) {
  const workflowId = baselineWorkflowId(runnerId);
  await h.client.workflow
    .execute('baselineRefreshWorkflow', {
      workflowId,
      taskQueue: h.taskQueue,
      args: [{ runnerId, keep: 2, pollSeconds: 1, ...(updateCmd ? { updateCmd } : {}) }],
    })
    .catch((err: unknown) => {
      if (!(err instanceof WorkflowFailedError)) throw err;
    });
  return { workflowId };
}

/** Runs a rollout (the first runner its canary) to its end; its workflow id. */
async function rollout(h: WorkflowHarness, runners: string[], maxUnavailable: number) {
  const workflowId = uniqueId('rec-rollout');
  await h.client.workflow
    .execute('baselineRolloutWorkflow', {
      workflowId,
      taskQueue: h.taskQueue,
      args: [
        { runners, canary: runners[0], maxUnavailable, keep: 2, pollSeconds: 1, updateCmd: 'true' },
      ],
    })
    .catch((err: unknown) => {
      if (!(err instanceof WorkflowFailedError)) throw err;
    });
  return { workflowId };
}

/**
 * Scenarios without a fixture yet, in any release: recorded ones are never
 * recorded again (a later release records only the scenarios it adds).
 */
const RELEASES = existsSync(join(__dirname, 'histories'))
  ? readdirSync(join(__dirname, 'histories'), { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
  : [];
const missing = (names: string[]) =>
  names.filter(
    (n) =>
      !existsSync(join(OUT, `${n}.json`)) &&
      !RELEASES.some((rel) => existsSync(join(__dirname, 'histories', rel, `${n}.json`))),
  );

describe(`record replay fixtures of ${RECORD_RELEASE}`, () => {
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
      const cp = await createCheckpoint(h, r, input(r), { jobId: '123', projectId: '5' });
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
