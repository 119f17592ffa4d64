import {
  CancellationScope,
  allHandlersFinished,
  condition,
  isCancellation,
  sleep,
} from '@temporalio/workflow';
import type { CheckpointOutcome, CheckpointWorkflowInput } from '../../common/checkpoint';
import type { CheckpointState } from '../../common/states';
import { holdOnFailure } from './hold';
import { installHandlers } from './messages';
import { pauseBeforeBookkeeping, pauseRunner } from './pause';
import { releaseRunner } from './release';
import { resetUntilDone } from './reset';
import { CheckpointRun } from './run';
import { waitForJobEnd } from './waiting';

/**
 * One checkpoint of one runner, from snapshot to clean runner. The workflow
 * id is per runner, so Temporal guarantees one such run per runner at a time.
 *
 * create (update) → wait for the job's end → pause → (a failed job: hold for
 * debugging) → reset or cleanup → readiness → cooldown, still paused (creates
 * get 429) → unpause → terminal state → done.
 */
export async function checkpointWorkflow(
  input: CheckpointWorkflowInput,
): Promise<CheckpointOutcome> {
  const run = new CheckpointRun(input);
  installHandlers(run);

  // A run started without a create (by hand, say) has nothing to do.
  if (!(await condition(() => run.phase !== 'waiting_for_create', '10 minutes'))) {
    run.doing('nothing: no create came');
    run.phase = 'done';
    return { name: null, state: null };
  }
  // The create handler compensates a failure itself; let it finish even if we are canceled.
  await CancellationScope.nonCancellable(() => condition(() => run.createSettled));
  if (run.createResult === 'failed') return cooldown(run);
  // Why nothing polls the job (if so) was logged with the record (recordCheckpoint).

  let cancellation: unknown = null;
  try {
    await waitForJobEnd(run);
    run.phase = 'finalizing';
    // An adopted checkpoint may be past `created` already.
    const from: CheckpointState[] = input.resume?.adopted
      ? ['created', 'finalize_queued', 'needs_attention']
      : ['created'];
    // Pause first, so the finalize's answer waits on GitLab only, never on
    // Postgres. An adopted checkpoint's earlier run may have paused already:
    // its pause step reads the log to tell.
    const pauseFirst = !input.resume?.adopted;
    const pauseLog = pauseFirst ? await pauseBeforeBookkeeping(run) : undefined;
    run.doing('finalize_queued: recording the job end');
    await run.moveTo('finalize_queued', from, {
      finalizeStatus: run.finalizeStatus,
      finalizeSource: run.finalizeSource,
      finalizedAt: run.finalizedAt?.toISOString() ?? null,
      ...(pauseLog ? { pauseLog } : {}),
    });
    if (!pauseFirst) await pauseRunner(run);
    await holdOnFailure(run);
    run.outcome = await resetUntilDone(run);
  } catch (err) {
    if (!isCancellation(err)) throw err;
    cancellation = err;
    run.lastError = 'workflow canceled by an operator';
    run.outcome = 'reset_failed';
  } finally {
    // The cooldown follows a reset or cleanup that ended (an operator's release
    // included), never a cancel or a failure of the workflow itself.
    const ended = run.outcome !== null && cancellation === null;
    await CancellationScope.nonCancellable(() => releaseRunner(run, { cooldown: ended }));
  }
  // A canceled run ends as Canceled in Temporal, after its compensation above.
  if (cancellation) throw cancellation;
  return cooldown(run);
}

/**
 * Closes the run. A run that cooled down before its unpause closes at once;
 * a failed create (its runner was never paused) sleeps the cooldown here,
 * creates getting 429.
 */
async function cooldown(run: CheckpointRun): Promise<CheckpointOutcome> {
  if (!run.cooledDown) {
    run.phase = 'cooldown';
    const { cooldownSeconds } = run.input.timing;
    run.cooldownUntil = new Date(Date.now() + cooldownSeconds * 1000);
    run.doing(`cooldown until ${run.cooldownUntil.toISOString()}`);
    if (cooldownSeconds > 0) await sleep(`${cooldownSeconds} seconds`);
  }
  run.phase = 'done';
  run.doing('nothing: the run is closing');
  await condition(allHandlersFinished);
  return { name: run.held?.name ?? null, state: run.state };
}
