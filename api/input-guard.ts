import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RequestHandler, RequestParamHandler } from 'express';
import { HttpError } from './errors';

/** An unpaired UTF-16 surrogate: valid in a JS string, not encodable as UTF-8. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Whether Postgres can store `s` as it is: text refuses a NUL, jsonb refuses
 * `\u0000` and unpaired surrogate escapes, and text silently turns a lone
 * surrogate into U+FFFD (a different value than the caller sent).
 */
export function storable(s: string): boolean {
  return !s.includes('\u0000') && !LONE_SURROGATE.test(s);
}

/** Decodes one percent-encoded URL component (`+` is a space in a query), or null when it is not UTF-8. */
function decoded(part: string, plusIsSpace: boolean): string | null {
  try {
    return decodeURIComponent(plusIsSpace ? part.replace(/\+/g, ' ') : part);
  } catch {
    return null;
  }
}

/**
 * Refuses, before any route sees it, a URL whose path is not percent-encoded
 * UTF-8 (a lone surrogate arrives so), or whose query is not or decodes to
 * a NUL: a route would otherwise hand the value to a query and answer the
 * database's error as a 500. A NUL in a path parameter is refused by the
 * parameter's own validation (422), as the routes document.
 */
export const urlGuard: RequestHandler = (req, _res, next) => {
  const url = req.originalUrl;
  const q = url.indexOf('?');
  if (decoded(q < 0 ? url : url.slice(0, q), false) === null) {
    next(new HttpError(400, 'Request path is not valid percent-encoded UTF-8'));
    return;
  }
  if (q >= 0) {
    for (const part of url.slice(q + 1).split(/[&=]/)) {
      const v = decoded(part, true);
      if (v === null || !storable(v)) {
        next(
          new HttpError(
            400,
            'Query string is not valid percent-encoded UTF-8 or holds a NUL character',
          ),
        );
        return;
      }
    }
  }
  next();
};

/** A path parameter's check for `router.param`: 422 when it holds what Postgres cannot store. */
export function storableParam(what: string): RequestParamHandler {
  return (_req, _res, next, value: string) => {
    next(
      storable(value)
        ? undefined
        : new HttpError(422, `${what} holds a NUL character or an unpaired surrogate`),
    );
  };
}

/** The path to the first string (or key) Postgres cannot store in a parsed JSON value, or null. */
export function unstorableAt(value: unknown): Array<string | number> | null {
  // Iterative: a deeply nested body must not overflow the stack (a RangeError would be a 500).
  const stack: Array<[unknown, Array<string | number>]> = [[value, []]];
  while (stack.length) {
    const [v, at] = stack.pop()!;
    if (typeof v === 'string') {
      if (!storable(v)) return at;
    } else if (Array.isArray(v)) {
      v.forEach((item, i) => stack.push([item, [...at, i]]));
    } else if (v !== null && typeof v === 'object') {
      for (const [k, item] of Object.entries(v)) {
        if (!storable(k)) return [...at, JSON.stringify(k)];
        stack.push([item, [...at, k]]);
      }
    }
  }
  return null;
}

/** 422 in the validation shape (`[{type, loc, msg}]`) when `value` holds a string Postgres cannot store. */
export function unstorableError(value: unknown, where: 'body' | 'payload'): HttpError | null {
  const at = unstorableAt(value);
  if (at === null) return null;
  return new HttpError(422, [
    {
      type: 'string_not_storable',
      loc: [where, ...at],
      msg: 'String should not contain a NUL character or an unpaired surrogate',
    },
  ]);
}

/** Refuses a parsed body holding a string Postgres cannot store (422 saying where). */
export const bodyGuard: RequestHandler = (req, _res, next) => {
  next(unstorableError(req.body, 'body') ?? undefined);
};

const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  HPE_HEADER_OVERFLOW: [
    431,
    'Request Header Fields Too Large',
    'Request line or headers too large',
  ],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'Request headers not received in time'],
};

/**
 * Answers requests Node's HTTP parser refuses (a URL or headers over its
 * size limit, a malformed request line, headers too slow) in the API's JSON
 * shape, with the status Node would send, instead of Node's bodyless answer.
 */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // A response already started on this socket cannot be followed by another.
    if (
      (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent
    ) {
      socket.destroy();
      return;
    }
    const code = err.code ?? '';
    const [status, reason, detail] = Object.hasOwn(CLIENT_ERRORS, code)
      ? CLIENT_ERRORS[code]!
      : [400, 'Bad Request', 'Malformed HTTP request'];
    const body = JSON.stringify({ detail });
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}
