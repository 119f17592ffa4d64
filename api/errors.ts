import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from '../config/logger';

/**
 * An error with an HTTP status whose `detail` is safe to show the caller. Its
 * `Retry-After` header (a 429 during the cooldown or past a rate limit) is
 * also `error.retry_after` on the agent WebSocket.
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

  /** The seconds of its `Retry-After` header, if it has one. */
  get retryAfterSeconds(): number | undefined {
    const v = Number(this.headers['Retry-After']);
    return this.headers['Retry-After'] !== undefined && Number.isFinite(v) ? v : undefined;
  }
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
 * The one place errors become responses: HttpError → its status and detail;
 * a body that is not JSON → 422; anything else → 500 with no internals.
 */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (res.headersSent) return;
    if (err instanceof HttpError) {
      res.set(err.headers).status(err.status).json({ detail: err.detail });
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
