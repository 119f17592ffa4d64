import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from '../config/logger';
import { DomainError, wireCodeOf } from '../service/errors';

/**
 * An error with an HTTP status whose `detail` is safe to show the caller,
 * with the headers its answer carries (`Retry-After` of a 429 past a rate limit).
 */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    readonly detail: unknown,
    /** Headers the answer carries (e.g. `Retry-After` of a 429). */
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof detail === 'string' ? detail : `HTTP ${status}`);
  }
}

/**
 * `err` as the REST answer it gets, when it is one: an HttpError as it is, a
 * domain error as its status, its detail and (a cooldown) its `Retry-After`.
 */
export function toHttpError(err: unknown): HttpError | undefined {
  if (err instanceof HttpError) return err;
  if (!(err instanceof DomainError)) return undefined;
  const s = err.retryAfterSeconds;
  return new HttpError(
    wireCodeOf(err),
    err.detail,
    s === undefined ? {} : { 'Retry-After': String(s) },
  );
}

/**
 * Postgres errors of class 22 (data exception: a NUL or invalid byte in
 * text, a number out of range) are the request's values, not a fault: a
 * route that forgot to validate one answers 422 rather than 500.
 */
export function isDataException(err: unknown): boolean {
  const e = err as { code?: unknown; driverError?: { code?: unknown } } | null;
  const code = e?.driverError?.code ?? e?.code;
  return typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code);
}

/** 404 for routes that do not exist, in the API's JSON shape. */
export const notFound: RequestHandler = (_req, res) => {
  res.status(404).json({ detail: 'Not Found' });
};

/**
 * The one place errors become responses: HttpError or a domain error → its status and detail;
 * a body that is not JSON → 422; anything else → 500 with no internals.
 */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (res.headersSent) return;
    const http = toHttpError(err);
    if (http) {
      res.set(http.headers).status(http.status).json({ detail: http.detail });
      return;
    }
    const e = err as { type?: string; status?: number; statusCode?: number; limit?: unknown };
    if (e.type === 'entity.parse.failed') {
      res.status(422).json({ detail: 'Request body is not valid JSON' });
      return;
    }
    if (e.type === 'entity.too.large') {
      const limit = typeof e.limit === 'number' ? ` (at most ${e.limit} bytes)` : '';
      res.status(413).json({ detail: `Request body too large${limit}` });
      return;
    }
    if (isDataException(err)) {
      const code = (err as { driverError?: { code?: string } }).driverError?.code;
      log.warn(
        { method: req.method, path: req.path, code },
        'a request value the database refused',
      );
      res.status(422).json({ detail: 'The request holds a value the database cannot store' });
      return;
    }
    const status = e.status ?? e.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      res.status(status).json({ detail: 'Bad request' });
      return;
    }
    log.error({ err, method: req.method, path: req.path }, 'unhandled error in request');
    res.status(500).json({ detail: 'Internal server error' });
  };
}
