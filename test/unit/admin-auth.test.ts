import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import pino from 'pino';
import { AdminToken, adminAuth } from '../../api/auth';
import { errorHandler } from '../../api/errors';

/** SPEC §8 admin auth on a bare Express app: each refusal's status and detail. */
describe('adminAuth', () => {
  const servers: Server[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  /** An app with one admin route, on a free port; returns its URL. */
  async function appWith(token: string | undefined): Promise<string> {
    const app = express();
    app.get('/admin', adminAuth(new AdminToken(token)), (_req, res) => {
      res.json({ admin: res.locals.admin });
    });
    app.use(errorHandler(pino({ level: 'silent' })));
    const server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    servers.push(server);
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/admin`;
  }
  const call = async (url: string, authorization?: string) => {
    const res = await fetch(url, { headers: authorization ? { authorization } : {} });
    return [res.status, await res.json()];
  };

  it('answers 503 when no admin token is configured, whatever is sent', async () => {
    const url = await appWith(undefined);
    for (const header of [undefined, 'Bearer x', 'Bearer ']) {
      expect(await call(url, header)).toEqual([503, { detail: 'Admin API not configured' }]);
    }
  });

  it('401 without a Bearer header, 403 for another token, through for the token', async () => {
    const url = await appWith('s3cret-admin');
    expect(await call(url)).toEqual([401, { detail: 'Invalid authorization header' }]);
    expect(await call(url, 'Basic czNjcmV0')).toEqual([
      401,
      { detail: 'Invalid authorization header' },
    ]);
    expect(await call(url, 'bearer s3cret-admin')).toEqual([
      401,
      { detail: 'Invalid authorization header' },
    ]);
    for (const wrong of ['s3cret', 's3cret-admin2', 'x s3cret-admin']) {
      expect(await call(url, `Bearer ${wrong}`)).toEqual([403, { detail: 'Invalid admin token' }]);
    }
    expect(await call(url, 'Bearer s3cret-admin')).toEqual([200, { admin: true }]);
  });

  it('compares digests: any candidate length works and matches only the token', () => {
    const admin = new AdminToken('t');
    expect(admin.configured).toBe(true);
    expect(admin.matches('t')).toBe(true);
    expect(admin.matches('x'.repeat(10_000))).toBe(false);
    expect(new AdminToken(undefined).matches('')).toBe(false);
    expect(new AdminToken(undefined).sessionKey).toBeNull();
  });
});
