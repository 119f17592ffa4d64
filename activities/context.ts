import { Context } from '@temporalio/activity';

/** Heartbeats the current activity; a no-op outside one (tests call activities directly). */
export function heartbeat(details?: unknown): void {
  try {
    Context.current().heartbeat(details);
  } catch {
    /* outside an activity */
  }
}

/** Heartbeats every 3 seconds while `p` is pending (an agent command can run for minutes). */
export async function heartbeating<T>(p: Promise<T>): Promise<T> {
  const timer = setInterval(() => heartbeat(), 3000);
  try {
    return await p;
  } finally {
    clearInterval(timer);
  }
}

/** Whether the current activity was asked to stop. */
export function cancelled(): boolean {
  try {
    return Context.current().cancellationSignal.aborted;
  } catch {
    return false;
  }
}

/**
 * When the current activity attempt stops, for an agent command that must not
 * outlive it: its cancellation signal and its deadline (start-to-close from
 * the attempt's scheduling). Empty outside an activity.
 */
export function activityBounds(): { signal?: AbortSignal; deadline?: number } {
  try {
    const { cancellationSignal, info } = Context.current();
    const deadline = info.currentAttemptScheduledTimestampMs + info.startToCloseTimeoutMs;
    return Number.isFinite(deadline) && info.startToCloseTimeoutMs > 0
      ? { signal: cancellationSignal, deadline }
      : { signal: cancellationSignal };
  } catch {
    return {};
  }
}
