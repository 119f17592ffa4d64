/**
 * Raising and reading the failures of common/failures.ts. Workflow-safe
 * (only @temporalio/common), so activities, workflows and the API share it.
 */
import { ApplicationFailure, TimeoutFailure } from '@temporalio/common';
import { FAILURES, isFailureType, type FailureType } from './failures';

/**
 * A failure of a listed type; whether it is retried follows from its kind.
 * `nextRetryDelayMs` (transient only) makes the next attempt wait that long;
 * it is also carried in the failure's details (`{ retryAfterMs }`), since
 * the SDK does not hand `nextRetryDelay` on to the workflow (retryAfterOf).
 * `retryAfterMs` only tells a caller when to ask again (a create during the
 * cooldown: REST's Retry-After), without changing how the failure is retried.
 */
export function fail(
  type: FailureType,
  message: string,
  opts: { nextRetryDelayMs?: number; retryAfterMs?: number } = {},
): ApplicationFailure {
  const retryAfterMs = opts.nextRetryDelayMs ?? opts.retryAfterMs;
  return ApplicationFailure.create({
    type,
    message,
    nonRetryable: FAILURES[type].kind !== 'transient',
    nextRetryDelay: opts.nextRetryDelayMs,
    details: retryAfterMs !== undefined ? [{ retryAfterMs }] : undefined,
  });
}

/** How long the failed call asked to wait before the next try (a rate limit), if it said. */
export function retryAfterOf(err: unknown): number | undefined {
  const d = applicationFailureOf(err)?.details?.[0] as { retryAfterMs?: unknown } | undefined;
  const ms = d?.retryAfterMs;
  return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

/** The causes of an error, outermost first (ActivityFailure → ApplicationFailure, …). */
function* causes(err: unknown): Generator<unknown> {
  let e: unknown = err;
  for (let depth = 0; e && depth < 10; depth++) {
    yield e;
    e = (e as { cause?: unknown }).cause;
  }
}

/** The application failure behind an error (an activity's, an update's), if any. */
export function applicationFailureOf(err: unknown): ApplicationFailure | undefined {
  for (const e of causes(err)) if (e instanceof ApplicationFailure) return e;
  return undefined;
}

/**
 * A request to `service` that got no HTTP answer (axios threw): a timeout is
 * BackendTimeout, anything else (refused, reset, DNS) the service's own
 * unavailability. Both are transient.
 */
export function noAnswer(
  service: string,
  unavailable: FailureType,
  what: string,
  err: unknown,
): ApplicationFailure {
  const e = err as { code?: string; message?: string };
  return fail(
    /timeout/i.test(e.message ?? '') || e.code === 'ECONNABORTED' ? 'BackendTimeout' : unavailable,
    `${service} ${what}: ${e.code ?? e.message}`,
  );
}

/** The listed failure type behind an error, if it carries one. */
export function failureTypeOf(err: unknown): FailureType | undefined {
  const t = applicationFailureOf(err)?.type;
  return isFailureType(t) ? t : undefined;
}

/** Whether the error is a timeout: Temporal's own (an activity ran too long) or a backend's. */
export function isTimeout(err: unknown): boolean {
  for (const e of causes(err)) if (e instanceof TimeoutFailure) return true;
  return failureTypeOf(err) === 'BackendTimeout';
}

/** A short, secret-free description of a failure: `Type: message`. */
export function describeFailure(err: unknown): string {
  const app = applicationFailureOf(err);
  if (app) return `${app.type ?? 'Error'}: ${app.message}`;
  let last: unknown = err;
  for (const e of causes(err)) last = e;
  return last instanceof Error ? last.message : String(last);
}
