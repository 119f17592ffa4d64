import type { z } from 'zod';
import type { Reply } from '../common/agent-protocol';
import { wireCodeOf, type DomainError } from '../service/errors';
import { validationDetail } from '../service/schemas';

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
  return fail(id, wireCodeOf(err), detail, err.retryAfterSeconds);
}

/** A validation error as one line, e.g. `job_id: Field required`. */
export function oneLine(err: z.ZodError, input: unknown): string {
  return validationDetail(err, 'payload', input)
    .map((d) => `${d.loc.slice(1).join('.') || 'payload'}: ${d.msg}`)
    .join('; ');
}
