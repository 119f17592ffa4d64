import type { Request } from 'express';
import { HttpError } from './errors';

/** More keys than this and the fullest buckets are forgotten (a full bucket is the same as none). */
const MAX_KEYS = 10_000;

/**
 * Token buckets by key (a client address, a runner id), in memory: each key
 * holds up to `burst` tokens and gets `perSecond` back; `take` spends one.
 * Per API instance: behind a load balancer the limit is per instance.
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    private readonly now: () => number = Date.now,
  ) {}

  private level(key: string): { tokens: number; at: number } {
    const t = this.now();
    const b = this.buckets.get(key);
    if (!b) return { tokens: this.burst, at: t };
    return { tokens: Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond), at: t };
  }

  /** Seconds until `key` has a token again; 0 when it has one now. */
  retryAfter(key: string): number {
    const { tokens } = this.level(key);
    return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / this.perSecond));
  }

  /** Spends one of `key`'s tokens: 0 when there was one, else the seconds until there is. */
  take(key: string): number {
    const wait = this.retryAfter(key);
    if (wait > 0) return wait;
    const b = this.level(key);
    this.buckets.delete(key); // re-inserted last: the Map's order is the order of use
    this.buckets.set(key, { tokens: b.tokens - 1, at: b.at });
    if (this.buckets.size > MAX_KEYS) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    return 0;
  }
}

/** The client a request comes from, as the socket says (`trust proxy` is off: a header could be forged). */
export function clientOf(req: Request): string {
  return req.socket.remoteAddress ?? 'unknown';
}

/** 429 with `Retry-After` and a detail saying what to wait for. */
export function tooMany(what: string, retryAfterSeconds: number): HttpError {
  return new HttpError(429, `${what}; retry after ${retryAfterSeconds} s`, {
    'Retry-After': String(retryAfterSeconds),
  });
}
