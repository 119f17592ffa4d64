/**
 * Hold for debugging: after a failed job the runner stays paused and
 * un-reset for its `hold_on_failure_seconds`, so someone can log in and look
 * at what the job left; the reset follows when the hold ends, or at once on
 * the `release-hold` signal.
 */
import { condition, isCancellation, log } from '@temporalio/workflow';
import { holdReleasedNote, holdStartedNote } from '../../common/checkpoint';
import { describeFailure } from '../../common/fail';
import { records } from './activities';
import type { CheckpointRun } from './run';

/**
 * Holds the runner when the job failed (a `failure` from a finalize, a
 * webhook or the poller). Not for success or canceled, and not for the TTL:
 * an expired TTL is not a failed job. Not for an adopted checkpoint either:
 * its run was terminated (a hold's end included), so nobody is waiting to look.
 *
 * The checkpoint stays `finalize_queued` and this open run holds it, so the
 * reconciler leaves it alone; the TTL is over (it ran only while waiting for
 * the job). Canceling the run during a hold unpauses without a reset, as it
 * does in needs_attention.
 */
export async function holdOnFailure(run: CheckpointRun): Promise<void> {
  const seconds = run.runner.holdOnFailureSeconds;
  if (seconds <= 0 || run.finalizeStatus !== 'failure' || run.input.resume?.adopted) return;
  const cp = run.checkpoint;
  const until = new Date(Date.now() + seconds * 1000);
  const untilIso = until.toISOString();
  run.heldUntil = until;
  run.holdReleased = false;
  run.phase = 'held';
  run.doing(holdStartedNote(untilIso));
  // The note is bookkeeping: the hold's clock runs whether or not Postgres answers.
  // It sets checkpoints.held_until, which the fleet page reads.
  const note = noteHold(run, `${cp.name}:hold`, holdStartedNote(untilIso), untilIso);
  // Handled here too: if a cancellation ends the wait, nobody awaits the note.
  note.catch(() => undefined);
  const released = await condition(() => run.holdReleased, seconds * 1000);
  await note;
  run.heldUntil = null;
  run.phase = 'finalizing';
  if (released) {
    await noteHold(run, `${cp.name}:hold-released`, holdReleasedNote(untilIso), null);
  }
}

/**
 * A `hold` row in the checkpoint's operation log, setting (or with null
 * clearing) checkpoints.held_until; informational, so a failure to write it
 * is only logged.
 */
function noteHold(
  run: CheckpointRun,
  key: string,
  detail: string,
  heldUntil: string | null,
): Promise<void> {
  const cp = run.checkpoint;
  return records
    .noteOperation({
      checkpointId: cp.id,
      runnerId: run.runner.runnerId,
      key,
      operation: 'hold',
      result: 'ok',
      detail,
      heldUntil,
    })
    .catch((err: unknown) => {
      if (isCancellation(err)) throw err;
      log.warn('could not log the hold for debugging', { error: describeFailure(err) });
    });
}
