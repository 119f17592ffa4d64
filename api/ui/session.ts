import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Request } from 'express';
import type { AdminToken } from '../auth';

/** The fleet page's session cookie. */
export const SESSION_COOKIE = 'e2epool_session';
/** A session lasts this long from its login (a working day), then the login form comes back. */
export const SESSION_SECONDS = 12 * 3600;
/** The cookie is sent only to the fleet page's own routes. */
export const SESSION_PATH = '/ui';

/**
 * Fleet-page sessions as signed cookie values: `<expiry>.<random id>.<mac>`,
 * the mac an HMAC-SHA256 over the rest with a key derived from the admin
 * token. Nothing is kept on the server, so any API instance behind a load
 * balancer accepts a session another one issued (they share the admin
 * token), and changing E2EPOOL_ADMIN_TOKEN ends every session at once. The
 * value never contains the token; the random id only makes each login's
 * value different. Logout clears the cookie in the browser: a copy taken
 * before (it is HttpOnly, so not by a page script) stays valid until it expires.
 */
export class UiSessions {
  constructor(
    private readonly admin: AdminToken,
    private readonly now: () => number = Date.now,
  ) {}

  /** A new session's cookie value; the admin token must be configured. */
  issue(): string {
    const exp = Math.floor(this.now() / 1000) + SESSION_SECONDS;
    const body = `${exp}.${randomBytes(18).toString('base64url')}`;
    return `${body}.${this.mac(body).toString('base64url')}`;
  }

  /** Whether `value` is a session this admin token issued and it has not expired. */
  verify(value: string | undefined): boolean {
    if (!value || !this.admin.sessionKey) return false;
    const m = /^(\d{1,12})\.([A-Za-z0-9_-]{24})\.([A-Za-z0-9_-]{43})$/.exec(value);
    if (!m) return false;
    const given = Buffer.from(m[3]!, 'base64url');
    const expected = this.mac(`${m[1]}.${m[2]}`);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return false;
    return Number(m[1]) * 1000 > this.now();
  }

  /** Whether the request carries a valid session cookie. */
  valid(req: Request): boolean {
    return this.verify(cookieValue(req, SESSION_COOKIE));
  }

  /**
   * The form token of the request's session (null without a valid one): an
   * HMAC of the session cookie's value, so only a page of this session knows
   * it. Cookies go along with any request to /ui; this token goes only where
   * our pages put it (a form field), which another site cannot read.
   */
  formToken(req: Request): string | null {
    const value = cookieValue(req, SESSION_COOKIE);
    if (!this.verify(value)) return null;
    return createHmac('sha256', this.admin.sessionKey!)
      .update(`form v1.${value}`)
      .digest()
      .toString('base64url');
  }

  /** Whether `token` is the form token of the request's session. */
  formTokenValid(req: Request, token: unknown): boolean {
    const expected = this.formToken(req);
    if (expected === null || typeof token !== 'string') return false;
    const [a, b] = [Buffer.from(token), Buffer.from(expected)];
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private mac(body: string): Buffer {
    return createHmac('sha256', this.admin.sessionKey!).update(`v1.${body}`).digest();
  }
}

/** A cookie's value from the request's Cookie header (the first of that name). */
export function cookieValue(req: Request, name: string): string | undefined {
  for (const part of (req.get('cookie') ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/**
 * Whether the browser reached us over https: directly, or through a proxy
 * that says so. Believing X-Forwarded-Proto is safe here: it only decides
 * whether the cookie gets `Secure`, and a forged one only makes a client's
 * own cookie stricter.
 */
export function isHttps(req: Request): boolean {
  if (req.secure) return true;
  const proto = req.get('x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
  return proto === 'https';
}

/** The Set-Cookie value for a session: HttpOnly, SameSite=Strict, Path=/ui, Secure over https. */
export function sessionCookie(value: string, secure: boolean): string {
  return [
    `${SESSION_COOKIE}=${value}`,
    `Path=${SESSION_PATH}`,
    `Max-Age=${SESSION_SECONDS}`,
    'HttpOnly',
    'SameSite=Strict',
    ...(secure ? ['Secure'] : []),
  ].join('; ');
}

/** The Set-Cookie value that removes the session cookie. */
export function clearedSessionCookie(secure: boolean): string {
  return [
    `${SESSION_COOKIE}=`,
    `Path=${SESSION_PATH}`,
    'Max-Age=0',
    'HttpOnly',
    'SameSite=Strict',
    ...(secure ? ['Secure'] : []),
  ].join('; ');
}
