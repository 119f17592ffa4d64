/**
 * The create update: claim the runner, record the checkpoint, take the
 * snapshot; on any failure leave nothing behind (no snapshot, no active row).
 */
import {
  CancellationScope,
  log,
  upsertSearchAttributes,
  uuid4,
  type ApplicationFailure,
} from '@temporalio/workflow';
import { snapshotNameFor, type CheckpointDto, type CreateRequest } from '../../common/checkpoint';
import {
  applicationFailureOf,
  describeFailure,
  fail,
  failureTypeOf,
  isTimeout,
} from '../../common/fail';
import { SA_BACKEND, SA_CHECKPOINT_NAME, SA_JOB_ID } from '../../common/search-attributes';
import { records, stepActivities } from './activities';
import { goldenBaseline, writeCanary } from './proof';
import type { NewCheckpoint } from '../../store/checkpoints';
import type { CheckpointRun, HeldCheckpoint, SearchAttributePairs } from './run';

/**
 * Claims the runner for this job. Synchronous, before any await: a create
 * arriving meanwhile sees the claim in its validator and gets 409.
 */
function claim(run: CheckpointRun, req: CreateRequest): HeldCheckpoint {
  run.phase = 'creating';
  run.doing('create: recording the checkpoint');
  const createdAt = new Date(); // workflow time: deterministic
  const name = `job-${req.jobId}-${Math.floor(createdAt.getTime() / 1000)}-${uuid4().replace(/-/g, '').slice(0, 8)}`;
  run.held = {
    name,
    jobId: req.jobId,
    projectId: req.projectId,
    createdAt,
    id: null,
    pollJobs: false,
  };
  return run.held;
}

/**
 * The held checkpoint's search attributes. Upserted with the `created`
 * state in one command (or, for a create that failed, before its
 * compensation): the name is nobody's to search for before the create answers.
 */
function heldAttributes(run: CheckpointRun, held: HeldCheckpoint): SearchAttributePairs {
  return [
    { key: SA_CHECKPOINT_NAME, value: held.name },
    { key: SA_JOB_ID, value: held.jobId },
    { key: SA_BACKEND, value: run.runner.backend },
  ];
}

export async function createCheckpoint(
  run: CheckpointRun,
  req: CreateRequest,
): Promise<CheckpointDto> {
  const held = claim(run, req);
  const { runner } = run;
  const steps = stepActivities(run.input.timing.resetMaxAttempts);
  // Golden baseline: the baseline is the restore point, no snapshot of its own.
  const snapshotName =
    runner.backend === 'proxmox' && goldenBaseline(run) === null
      ? snapshotNameFor(held.name)
      : null;
  const record: NewCheckpoint = {
    name: held.name,
    runnerId: runner.runnerId,
    jobId: req.jobId,
    projectId: req.projectId,
    caller: req.caller,
    backend: runner.backend,
    workflowId: run.workflowId,
    snapshotName,
    createdAt: held.createdAt.toISOString(),
  };
  try {
    await withinDeadline(req, async () => {
      const row = await records.recordCheckpoint(record);
      held.id = row.id;
      held.pollJobs = row.pollJobs;
      if (snapshotName) {
        run.doing('snapshot');
        await steps.takeSnapshot({ ...run.step(), round: 0, snapshotName });
      }
      await writeCanary(run);
    });
    run.setState('created', heldAttributes(run, held));
    run.createResult = 'ok';
    run.doing('waiting for the job');
    run.phase = 'waiting_for_job';
    return run.dto();
  } catch (err) {
    const timedOut = pastDeadline(req);
    run.lastError = timedOut
      ? `not created before its deadline (E2EPOOL_CREATE_TIMEOUT_SECONDS); cut off: ${describeFailure(err)}`
      : describeFailure(err);
    run.createResult = 'failed';
    upsertSearchAttributes(heldAttributes(run, held));
    // A record cut off by the deadline may have landed anyway: record (idempotent) to end it.
    const rerecord = timedOut ? record : null;
    await CancellationScope.nonCancellable(() => compensate(run, snapshotName, rerecord));
    throw timedOut
      ? fail('BackendTimeout', 'Checkpoint could not be created before the create deadline')
      : answerFor(err);
  } finally {
    run.createSettled = true;
  }
}

/**
 * Runs the create's steps until the request's deadline, then cancels them:
 * past it nobody waits for the answer, and a checkpoint made anyway would
 * hold the runner against the next job.
 */
async function withinDeadline(req: CreateRequest, steps: () => Promise<void>): Promise<void> {
  const left = Date.parse(req.deadline) - Date.now();
  return CancellationScope.withTimeout(Math.max(1, left), steps);
}

function pastDeadline(req: CreateRequest): boolean {
  return Date.now() >= Date.parse(req.deadline);
}

/** Removes what a failed create made. A snapshot that cannot go now is swept before the next one. */
async function compensate(
  run: CheckpointRun,
  snapshotName: string | null,
  rerecord: NewCheckpoint | null,
): Promise<void> {
  run.doing('create failed: removing what it made');
  const held = run.held;
  if (held && held.id === null && rerecord) held.id = (await records.recordCheckpoint(rerecord)).id;
  if (!held || held.id === null) return; // nothing recorded, nothing taken
  if (snapshotName) {
    await stepActivities(run.input.timing.resetMaxAttempts)
      .removeSnapshot({ ...run.step(), round: 0, snapshotName })
      .catch((e: unknown) =>
        log.warn('could not remove the snapshot of a failed create', { error: describeFailure(e) }),
      );
  }
  await run.moveTo('create_failed', ['created'], { errorDetail: run.lastError });
}

/** What the caller of a failed create is told: a conflict as it is, else 502 (or 504 for a timeout). */
function answerFor(err: unknown): ApplicationFailure {
  const conflict = applicationFailureOf(err);
  if (conflict && failureTypeOf(err) === 'CheckpointConflict') {
    return fail('CheckpointConflict', conflict.message);
  }
  return fail(
    isTimeout(err) ? 'BackendTimeout' : 'BackendUnavailable',
    `Checkpoint could not be created: ${describeFailure(err)}`,
  );
}
