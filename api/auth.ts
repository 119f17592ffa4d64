import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import type { InventoryStore } from '../config/inventory';
import { HttpError } from './errors';
import { clientOf, tooMany, type TokenBuckets } from './rate-limit';

/** The bearer token of an `Authorization: Bearer <token>` header, or null when the header is not one. */
export function bearerToken(req: Request): string | null {
  const header = req.get('authorization');
  if (!header || !header.startsWith('Bearer ')) return null;
  return header.slice('Bearer '.length);
}

/**
 * Runner bearer auth: `Authorization: Bearer <token>`; the token identifies
 * the runner (compared in constant time). Sets `res.locals.runnerId`.
 */
export function runnerAuth(inventory: InventoryStore): RequestHandler {
  return (req, res, next) => {
    const token = bearerToken(req);
    if (token === null) {
      next(new HttpError(401, 'Invalid authorization header'));
      return;
    }
    const runnerId = inventory.inventory.runnerIdForToken(token);
    if (!runnerId) {
      next(new HttpError(403, 'Invalid token'));
      return;
    }
    res.locals.runnerId = runnerId;
    next();
  };
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * The admin token (E2EPOOL_ADMIN_TOKEN). Candidates are compared as SHA-256
 * digests with timingSafeEqual: equal lengths whatever the candidate, so the
 * time taken says nothing about how much of it matched.
 */
export class AdminToken {
  private readonly digest: Buffer | null;
  /** Signs fleet-page sessions; derived from the token, so rotating the token ends every session. */
  readonly sessionKey: Buffer | null;

  /**
   * `failures`: wrong tokens per client address; once a client's bucket is
   * empty, its attempts are refused (429) without being compared, so the
   * token cannot be guessed at line speed.
   */
  constructor(
    token: string | undefined,
    private readonly failures: TokenBuckets | null = null,
  ) {
    this.digest = token ? sha256(token) : null;
    this.sessionKey = token
      ? createHmac('sha256', token).update('e2epool fleet page sessions v1').digest()
      : null;
  }

  get configured(): boolean {
    return this.digest !== null;
  }

  /** Whether `candidate` is the admin token (false when none is configured). */
  matches(candidate: string): boolean {
    if (!this.digest) return false;
    return timingSafeEqual(this.digest, sha256(candidate));
  }

  /** 429 when `client` used up its failed attempts; null when it may try. */
  refusedClient(client: string): HttpError | null {
    const wait = this.failures?.retryAfter(client) ?? 0;
    return wait > 0 ? tooMany('Too many failed admin token attempts from this client', wait) : null;
  }

  /** Counts a failed attempt of `client`. */
  failed(client: string): void {
    this.failures?.take(client);
  }
}

/** Why an admin bearer header is refused (429 after too many wrong ones from the client), or null when it is accepted. */
export function adminRefusal(admin: AdminToken, req: Request): HttpError | null {
  if (!admin.configured) return new HttpError(503, 'Admin API not configured');
  const token = bearerToken(req);
  if (token === null) return new HttpError(401, 'Invalid authorization header');
  const client = clientOf(req);
  const limited = admin.refusedClient(client);
  if (limited) return limited;
  if (!admin.matches(token)) {
    admin.failed(client);
    return new HttpError(403, 'Invalid admin token');
  }
  return null;
}

/**
 * Admin bearer auth (see docs/protocol.md#runner-registry): `Authorization: Bearer <E2EPOOL_ADMIN_TOKEN>`;
 * unset → 503, not `Bearer ` → 401, wrong → 403. Sets `res.locals.admin`.
 */
export function adminAuth(admin: AdminToken): RequestHandler {
  return (req, res, next) => {
    const refused = adminRefusal(admin, req);
    if (refused) {
      next(refused);
      return;
    }
    res.locals.admin = true;
    next();
  };
}

/**
 * A runner's token or the admin token (checkpoint logs, see docs/protocol.md#checkpoint-logs). Sets
 * `res.locals.runnerId` for a runner, `res.locals.admin` for the admin. A
 * token that is neither gets the runner route's answer (403 `Invalid token`),
 * so runners see no change, whether or not an admin token is configured; it
 * counts as a failed admin attempt, and past the client's limit it gets 429.
 */
export function runnerOrAdminAuth(inventory: InventoryStore, admin: AdminToken): RequestHandler {
  const asRunner = runnerAuth(inventory);
  return (req, res, next) => {
    const token = bearerToken(req);
    if (token !== null) {
      const client = clientOf(req);
      // A client out of admin attempts is still served as a runner; its token is not compared with the admin's.
      const limited = admin.refusedClient(client);
      if (!limited && admin.matches(token)) {
        res.locals.admin = true;
        next();
        return;
      }
      if (admin.configured && !inventory.inventory.runnerIdForToken(token)) {
        if (limited) {
          next(limited);
          return;
        }
        admin.failed(client);
      }
    }
    asRunner(req, res, next);
  };
}
