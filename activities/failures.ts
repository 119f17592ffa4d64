import { ApplicationFailure } from '@temporalio/common';

/**
 * Failure classification, decided where the failure is seen:
 * - transient: retried with backoff (optionally after a server-given delay);
 * - permanent: no retry can fix it (`PermanentFailure`, or a specific type the
 *   workflow lists as non-retryable);
 * - conflict: the request clashes with existing state (an operator may need to look).
 */
export function transient(
  type: string,
  message: string,
  nextRetryDelayMs?: number,
): ApplicationFailure {
  return ApplicationFailure.create({
    type,
    message,
    nonRetryable: false,
    nextRetryDelay: nextRetryDelayMs === undefined ? undefined : nextRetryDelayMs,
  });
}

export function permanent(message: string, type = 'PermanentFailure'): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

export function conflict(message: string, type = 'CheckpointConflict'): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

/** First line of an error, trimmed: error text that is safe to store and show. */
export function errorText(err: unknown, max = 2000): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0]!.slice(0, max);
}
