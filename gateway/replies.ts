import type { z } from 'zod';
import type { Reply } from '../common/agent-protocol';
import type { DomainError, DomainErrorCode } from '../service/errors';
import { validationDetail } from '../service/schemas';

/**
 * The WebSocket `error.code` of each domain error (service/errors.ts): the
 * number REST answers with as its status, so an agent CLI tells the same
 * outcomes apart (docs/protocol.md).
 */
const WS_ERROR_CODE: Record<DomainErrorCode, number> = {
  RunnerNotFound: 404,
  CheckpointNotFound: 404,
  NotAuthorized: 403,
  RunnerDraining: 423,
  Conflict: 409,
  CooldownActive: 429,
  RunClosing: 503,
  InvalidInput: 422,
  BackendUnavailable: 502,
  DeadlinePassed: 504,
  TemporalUnavailable: 503,
  InternalFailure: 500,
};

export const ok = (id: string, data: unknown): Reply => ({ id, status: 'ok', data, error: null });

/** An error reply; `retryAfter` (seconds, a cooldown's 429) adds `error.retry_after`. */
export const fail = (id: string, code: number, detail: string, retryAfter?: number): Reply => ({
  id,
  status: 'error',
  data: null,
  error: retryAfter === undefined ? { code, detail } : { code, detail, retry_after: retryAfter },
});

/** The error reply to a domain error: its code, its detail as text, its retry_after. */
export function domainErrorReply(id: string, err: DomainError): Reply {
  const detail = typeof err.detail === 'string' ? err.detail : JSON.stringify(err.detail);
  return fail(id, WS_ERROR_CODE[err.code], detail, err.retryAfterSeconds);
}

/** A validation error as one line, e.g. `job_id: Field required`. */
export function oneLine(err: z.ZodError, input: unknown): string {
  return validationDetail(err, 'payload', input)
    .map((d) => `${d.loc.slice(1).join('.') || 'payload'}: ${d.msg}`)
    .join('; ');
}
