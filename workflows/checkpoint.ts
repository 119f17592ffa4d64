import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  condition,
  makeContinueAsNewFunc,
  isCancellation,
  log,
  proxyActivities,
  setHandler,
  sleep,
  upsertSearchAttributes,
  uuid4,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import {
  FAILURE_TYPES,
  createUpdate,
  finalizeUpdate,
  releaseSignal,
  retrySignal,
  snapshotNameFor,
  stateQuery,
  type CheckpointDto,
  type CheckpointOutcome,
  type CheckpointView,
  type CheckpointWorkflowInput,
  type ResumedCheckpoint,
  type CreateRequest,
  type FinalizeReply,
  type FinalizeRequest,
} from '../common/checkpoint';
import { SA_BACKEND, SA_CHECKPOINT_NAME, SA_JOB_ID, SA_STATE } from '../common/search-attributes';
import { isActiveState, type CheckpointState, type FinalizeStatus } from '../common/states';

/** Failure types an activity throws that no retry can fix. */
const PERMANENT = ['PermanentFailure', 'RunnerNotInInventory', 'StateConflict'];

/** Bookkeeping in Postgres: must eventually succeed, so retry without limit (backing off). */
const records = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: {
    initialInterval: '500 milliseconds',
    maximumInterval: '30 seconds',
    nonRetryableErrorTypes: PERMANENT,
  },
});

/**
 * GitLab unpause: the runner must not stay paused, so it retries without limit;
 * only a permanent answer (runner gone, no permission) stops it.
 */
const unpauser = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '5 minutes',
    nonRetryableErrorTypes: PERMANENT,
  },
});

/** Job-status polls: a failed poll is skipped, the next one comes soon anyway. */
const poller = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 3, initialInterval: '1 second', nonRetryableErrorTypes: PERMANENT },
});

function stepOptions(
  maxAttempts: number,
  startToClose: ActivityOptions['startToCloseTimeout'],
): ActivityOptions {
  return {
    startToCloseTimeout: startToClose,
    // Long steps heartbeat every few seconds; a crashed worker's step is retried elsewhere soon after.
    heartbeatTimeout: '15 seconds',
    // The retry budget of a reset step; exhausting it hands the checkpoint to an operator.
    retry: {
      maximumAttempts: maxAttempts,
      initialInterval: '1 second',
      maximumInterval: '30 seconds',
      nonRetryableErrorTypes: PERMANENT,
    },
  };
}

/** A short, secret-free description of why an activity failed. */
function describeFailure(err: unknown): string {
  let e: unknown = err;
  while (e instanceof ActivityFailure && e.cause) e = e.cause;
  if (e instanceof ApplicationFailure) return `${e.type ?? 'Error'}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

function failureType(err: unknown): string | undefined {
  let e: unknown = err;
  while (e instanceof ActivityFailure && e.cause) e = e.cause;
  return e instanceof ApplicationFailure ? (e.type ?? undefined) : undefined;
}

/**
 * One checkpoint of one runner, from snapshot to clean runner. The workflow id
 * is per runner, so Temporal guarantees one such run per runner at a time.
 *
 * create (update) → wait for the first of finalize (update), a finished GitLab
 * job (poll) or the TTL → pause → reset or cleanup → readiness → unpause →
 * terminal state → cooldown (creates get 429) → done. A reset that exhausts its
 * retries waits, paused, for an operator's `retry` or `release` signal.
 */
export async function checkpointWorkflow(
  input: CheckpointWorkflowInput,
): Promise<CheckpointOutcome> {
  const { runner, timing } = input;
  const wfId = workflowInfo().workflowId;
  const steps = proxyActivities<Activities>(stepOptions(timing.resetMaxAttempts, '15 minutes'));
  const readiness = proxyActivities<Activities>(
    stepOptions(
      timing.resetMaxAttempts,
      `${Math.ceil(timing.readinessTimeoutSeconds + 60)} seconds`,
    ),
  );
  const pauser = proxyActivities<Activities>({
    startToCloseTimeout: '1 minute',
    // Bounded: while GitLab is down it hands out no jobs either, so the reset goes ahead unpaused.
    retry: {
      maximumAttempts: 6,
      initialInterval: '1 second',
      maximumInterval: '30 seconds',
      nonRetryableErrorTypes: PERMANENT,
    },
  });

  // ---- state -------------------------------------------------------------
  let phase: CheckpointView['phase'] = 'waiting_for_create';
  let state: CheckpointState | null = null;
  let name: string | null = null;
  let jobId: string | null = null;
  let projectId: string | null = null;
  let checkpointId: number | null = null;
  let createdAt: Date | null = null;
  let finalizedAt: Date | null = null;
  let createResult: 'ok' | 'failed' | null = null;
  let createSettled = false; // the create handler is done, compensation included
  let finalizeStatus: FinalizeStatus | null = null;
  let finalizeSource: string | null = null;
  let endRequested = false; // finalize, poller or TTL decided the job is over
  let pauseSettled = false; // the GitLab pause attempt has finished (either way)
  let runnerPaused = false; // we paused the runner and have not unpaused it yet
  let resetRounds = 0;
  let lastError: string | null = null;
  let operatorDecision: 'retry' | 'release' | null = null;

  const dto = (): CheckpointDto => ({
    name: name!,
    runner_id: runner.runnerId,
    job_id: jobId!,
    state: state!,
    finalize_status: finalizeStatus,
    finalize_source: finalizeSource,
    created_at: createdAt!.toISOString(),
    finalized_at: finalizedAt ? finalizedAt.toISOString() : null,
  });

  const setState = (s: CheckpointState) => {
    state = s;
    upsertSearchAttributes([{ key: SA_STATE, value: s }]);
  };

  // ---- messages ----------------------------------------------------------
  setHandler(stateQuery, () => ({
    phase,
    state,
    name,
    runnerId: runner.runnerId,
    jobId,
    backend: runner.backend,
    finalizeStatus,
    finalizeSource,
    runnerPaused,
    resetRounds,
    lastError,
  }));

  setHandler(
    createUpdate,
    async (req: CreateRequest): Promise<CheckpointDto> => {
      // Claimed synchronously, before any await: later creates see it in their validator.
      phase = 'creating';
      jobId = req.jobId;
      projectId = req.projectId;
      createdAt = new Date(); // workflow time: deterministic
      name = `job-${req.jobId}-${Math.floor(createdAt.getTime() / 1000)}-${uuid4().replace(/-/g, '').slice(0, 8)}`;
      upsertSearchAttributes([
        { key: SA_CHECKPOINT_NAME, value: name },
        { key: SA_JOB_ID, value: req.jobId },
        { key: SA_BACKEND, value: runner.backend },
      ]);
      const snapshotName = runner.backend === 'proxmox' ? snapshotNameFor(name) : null;
      let recorded = false;
      try {
        const row = await records.recordCheckpoint({
          name,
          runnerId: runner.runnerId,
          jobId: req.jobId,
          projectId: req.projectId,
          caller: req.caller,
          backend: runner.backend,
          workflowId: wfId,
          snapshotName,
          createdAt: createdAt.toISOString(),
        });
        checkpointId = row.id;
        recorded = true;
        if (snapshotName) {
          await steps.takeSnapshot({
            checkpointId,
            checkpointName: name,
            runnerId: runner.runnerId,
            round: 0,
            snapshotName,
          });
        }
        setState('created');
        createResult = 'ok';
        phase = 'waiting_for_job';
        return dto();
      } catch (err) {
        lastError = describeFailure(err);
        createResult = 'failed';
        // Leave nothing behind: no snapshot, no active row. A snapshot that
        // cannot be removed now is found and removed before the next one.
        await CancellationScope.nonCancellable(async () => {
          if (snapshotName && recorded) {
            await steps
              .removeSnapshot({
                checkpointId: checkpointId!,
                checkpointName: name!,
                runnerId: runner.runnerId,
                round: 0,
                snapshotName,
              })
              .catch((e: unknown) =>
                log.warn('could not remove the snapshot of a failed create', {
                  error: describeFailure(e),
                }),
              );
          }
          if (recorded) {
            await records.transitionCheckpoint({
              checkpointId: checkpointId!,
              from: ['created'],
              to: 'create_failed',
              errorDetail: lastError,
            });
          }
        });
        if (recorded) setState('create_failed');
        const type = failureType(err);
        if (type === FAILURE_TYPES.conflict)
          throw ApplicationFailure.create({
            type,
            message: lastError.replace(/^\w+: /, ''),
            nonRetryable: true,
          });
        const timedOut = type === 'BackendTimeout' || /timed? ?out/i.test(lastError);
        throw ApplicationFailure.create({
          type: timedOut ? FAILURE_TYPES.backendTimeout : FAILURE_TYPES.backendUnavailable,
          message: `Checkpoint could not be created: ${lastError}`,
          nonRetryable: true,
        });
      } finally {
        createSettled = true;
      }
    },
    {
      validator: (req: CreateRequest) => {
        if (phase === 'done') {
          // Finished and about to close; a new run can start in a moment.
          throw ApplicationFailure.create({
            type: FAILURE_TYPES.runClosing,
            message: 'Previous checkpoint is closing, try again',
          });
        }
        if (name !== null && state !== null && !isActiveState(state)) {
          throw ApplicationFailure.create({
            type: FAILURE_TYPES.cooldown,
            message: 'Cooldown period active, try again later',
          });
        }
        if (name !== null) {
          throw ApplicationFailure.create({
            type: FAILURE_TYPES.conflict,
            message: `Active checkpoint '${name}' already exists for runner '${runner.runnerId}'`,
          });
        }
        if (!req || typeof req.jobId !== 'string' || req.jobId.length === 0) {
          throw ApplicationFailure.create({
            type: FAILURE_TYPES.invalidRequest,
            message: 'job_id is required',
          });
        }
      },
    },
  );

  setHandler(
    finalizeUpdate,
    async (req: FinalizeRequest): Promise<FinalizeReply> => {
      if (endRequested || (state !== null && state !== 'created')) {
        return { detail: 'Already finalized', state: state! };
      }
      endRequested = true;
      finalizeStatus = req.status;
      finalizeSource = req.source;
      finalizedAt = new Date();
      // Answer once the runner is paused, so GitLab cannot hand it a new job
      // meanwhile; but never keep the caller waiting on a slow GitLab.
      await condition(() => pauseSettled, `${timing.finalizeAckSeconds} seconds`);
      return { detail: 'Finalize queued', checkpoint_name: name! };
    },
    {
      validator: (req: FinalizeRequest) => {
        if (name === null || req.checkpointName !== name) {
          throw ApplicationFailure.create({
            type: FAILURE_TYPES.notActive,
            message: 'Checkpoint is not held by this workflow run',
          });
        }
        if (createResult !== 'ok') {
          throw ApplicationFailure.create({
            type: FAILURE_TYPES.notActive,
            message: 'Checkpoint was not created',
          });
        }
      },
    },
  );

  setHandler(retrySignal, () => {
    if (phase === 'needs_attention') operatorDecision = 'retry';
  });
  setHandler(releaseSignal, () => {
    if (phase === 'needs_attention') operatorDecision = 'release';
  });

  // ---- life ----------------------------------------------------------------
  if (input.resume) {
    const r = input.resume;
    ({ name, jobId, projectId, checkpointId } = r);
    createdAt = new Date(r.createdAt);
    state = 'created';
    createResult = 'ok';
    createSettled = true;
    phase = 'waiting_for_job';
  }
  // A run started without a create (by hand, say) has nothing to do.
  if (!(await condition(() => phase !== 'waiting_for_create', '10 minutes'))) {
    phase = 'done';
    return { name: null, state: null };
  }
  // The create handler compensates a failure itself; let it finish even if we are canceled.
  await CancellationScope.nonCancellable(() => condition(() => createSettled));
  // (Read through a function: the handler sets it, which flow analysis cannot see.)
  const createFailed = () => createResult === 'failed';
  if (createFailed()) {
    return finish();
  }
  if (!input.resume && (!projectId || !timing.pollerEnabled)) {
    await records.noteOperation({
      checkpointId: checkpointId!,
      runnerId: runner.runnerId,
      key: `${name}:poller`,
      operation: 'poller',
      result: 'skipped',
      detail: !projectId
        ? 'no project_id: the job end is detected by finalize or the TTL only'
        : 'GitLab job polling is disabled: the job end is detected by finalize or the TTL only',
    });
  }

  const step = () => ({
    checkpointId: checkpointId!,
    checkpointName: name!,
    runnerId: runner.runnerId,
    round: resetRounds,
  });
  let outcome: CheckpointState | null = null;
  let cancellation: unknown = null;
  try {
    await waitForJobEnd();
    phase = 'finalizing';
    const ttlExpired = finalizeStatus === null;
    await records.transitionCheckpoint({
      checkpointId: checkpointId!,
      from: ['created'],
      to: 'finalize_queued',
      finalizeStatus,
      finalizeSource,
      finalizedAt: finalizedAt ? (finalizedAt as Date).toISOString() : null,
    });
    setState('finalize_queued');

    if (runner.gitlabRunnerId !== null) {
      try {
        const paused = await pauser.pauseRunner({
          ...step(),
          gitlabRunnerId: runner.gitlabRunnerId,
        });
        runnerPaused = paused.pausedByUs;
      } catch (err) {
        // Reset anyway (see `pauser`); a pause that may have landed is undone below.
        runnerPaused = true;
        log.warn('pausing the GitLab runner failed; resetting anyway', {
          error: describeFailure(err),
        });
      }
    }
    pauseSettled = true;

    const mode =
      ttlExpired || finalizeStatus !== 'success' || runner.resetOnSuccess ? 'reset' : 'cleanup';
    const success: CheckpointState = ttlExpired
      ? 'gc_reset'
      : mode === 'reset'
        ? 'reset'
        : 'deleted';
    for (;;) {
      try {
        await (mode === 'reset' ? resetRunner() : cleanupRunner());
        outcome = success;
        break;
      } catch (err) {
        if (isCancellation(err)) throw err;
        lastError = describeFailure(err);
        log.error('reset failed after its retries; waiting for an operator', { error: lastError });
        phase = 'needs_attention';
        operatorDecision = null;
        await records.transitionCheckpoint({
          checkpointId: checkpointId!,
          from: ['finalize_queued'],
          to: 'needs_attention',
          errorDetail: lastError,
          resetRounds: resetRounds + 1,
        });
        setState('needs_attention');
        await condition(() => operatorDecision !== null);
        resetRounds += 1;
        if (operatorDecision === 'release') {
          outcome = 'reset_failed';
          break;
        }
        phase = 'finalizing';
        await records.transitionCheckpoint({
          checkpointId: checkpointId!,
          from: ['needs_attention'],
          to: 'finalize_queued',
        });
        setState('finalize_queued');
      }
    }
  } catch (err) {
    if (!isCancellation(err)) throw err;
    cancellation = err;
    lastError = 'workflow canceled by an operator';
    outcome = 'reset_failed';
  } finally {
    // Every pause is paired with an unpause, whatever ended the checkpoint.
    await CancellationScope.nonCancellable(async () => {
      if (runnerPaused && runner.gitlabRunnerId !== null) {
        await unpauser.unpauseRunner({ ...step(), gitlabRunnerId: runner.gitlabRunnerId });
        runnerPaused = false;
      }
      if (outcome) {
        await records.transitionCheckpoint({
          checkpointId: checkpointId!,
          from: ['created', 'finalize_queued', 'needs_attention'],
          to: outcome,
          errorDetail: outcome === 'reset_failed' ? lastError : null,
        });
        setState(outcome);
      }
    });
  }
  // A canceled run ends as Canceled in Temporal, after its compensation above.
  if (cancellation) throw cancellation;
  return finish();

  // ---- helpers -------------------------------------------------------------
  async function waitForJobEnd(): Promise<void> {
    const ttlAt = createdAt!.getTime() + timing.ttlSeconds * 1000;
    const polling = timing.pollerEnabled && projectId !== null;
    let nextPollAt =
      createdAt!.getTime() +
      Math.max(timing.pollerMinAgeSeconds, timing.pollerIntervalSeconds) * 1000;
    for (;;) {
      const now = Date.now();
      if (endRequested) return;
      if (now >= ttlAt) {
        endRequested = true; // the TTL path: finalize status stays null, as the GC left it
        return;
      }
      const wakeAt = polling ? Math.min(ttlAt, nextPollAt) : ttlAt;
      if (await condition(() => endRequested, Math.max(1, wakeAt - now))) return;
      if (polling && Date.now() >= nextPollAt) {
        nextPollAt = Date.now() + timing.pollerIntervalSeconds * 1000;
        try {
          const status = await poller.pollJobStatus({ projectId: projectId!, jobId: jobId! });
          if (status !== 'running' && !endRequested) {
            endRequested = true;
            finalizeStatus = status;
            finalizeSource = 'poller';
            finalizedAt = new Date();
            return;
          }
        } catch (err) {
          log.warn('GitLab job poll failed; will poll again', { error: describeFailure(err) });
        }
      }
      if (workflowInfo().continueAsNewSuggested && !endRequested) {
        // Long waits grow the history: carry the checkpoint into a fresh run.
        await condition(allHandlersFinished);
        if (endRequested) return;
        const resume: ResumedCheckpoint = {
          name: name!,
          jobId: jobId!,
          projectId,
          checkpointId: checkpointId!,
          createdAt: createdAt!.toISOString(),
        };
        await makeContinueAsNewFunc<typeof checkpointWorkflow>({
          typedSearchAttributes: workflowInfo().typedSearchAttributes,
        })({ runner, timing, resume });
      }
    }
  }

  async function resetRunner(): Promise<void> {
    if (runner.backend === 'proxmox') {
      const snapshotName = snapshotNameFor(name!);
      await steps.stopVm(step());
      await steps.rollbackVm({ ...step(), snapshotName });
      const bootedAt = new Date().toISOString();
      await steps.startVm(step());
      await readiness.waitUntilReady({ ...step(), since: bootedAt });
      await steps.removeSnapshot({ ...step(), snapshotName });
    } else {
      await steps.runRunnerCommand({ ...step(), which: 'reset_cmd' });
      await readiness.waitUntilReady({ ...step(), since: null });
    }
  }

  async function cleanupRunner(): Promise<void> {
    await steps.runRunnerCommand({ ...step(), which: 'cleanup_cmd' });
    if (runner.backend === 'proxmox') {
      await steps.removeSnapshot({ ...step(), snapshotName: snapshotNameFor(name!) });
    }
    await readiness.waitUntilReady({ ...step(), since: null });
  }

  /** Cooldown: for a while after the end, creates for this runner get 429 (validator above). */
  async function finish(): Promise<CheckpointOutcome> {
    phase = 'cooldown';
    if (timing.cooldownSeconds > 0) await sleep(`${timing.cooldownSeconds} seconds`);
    phase = 'done';
    await condition(allHandlersFinished);
    return { name, state };
  }
}
