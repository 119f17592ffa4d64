import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from '../config/logger';

/**
 * An error with an HTTP status whose `detail` is safe to show the caller;
 * `retryAfterSeconds` (a 429 during the cooldown) becomes a `Retry-After`
 * header on REST and `error.retry_after` on the agent WebSocket.
 */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    readonly detail: unknown,
    readonly retryAfterSeconds?: number,
  ) {
    super(typeof detail === 'string' ? detail : `HTTP ${status}`);
  }
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
      if (err.retryAfterSeconds !== undefined)
        res.set('Retry-After', String(err.retryAfterSeconds));
      res.status(err.status).json({ detail: err.detail });
      return;
    }
    const e = err as { type?: string; status?: number; statusCode?: number };
    if (e.type === 'entity.parse.failed') {
      res.status(422).json({ detail: 'Request body is not valid JSON' });
      return;
    }
    if (e.type === 'entity.too.large') {
      res.status(413).json({ detail: 'Request body too large' });
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
