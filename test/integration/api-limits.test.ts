import { request } from 'node:http';
import { FakeAgents } from '../helpers/fake-agents';
import { startTestController, type TestController } from '../helpers/controller';
import { sumOf } from '../helpers/metrics';
import { bareMetalRunnerYaml, testRunners, uniqueId } from '../helpers/env';
import { waitFor } from '../helpers/wait';

/**
 * Limits a token holder (or a guesser) cannot exceed: failed admin tokens
 * per client (bearer and fleet-page login), readiness checks per runner,
 * /metrics behind its own token with one collection per window.
 */
const R = testRunners(['ready', 'other', 'metrics']);
const ADMIN = `limits-test-admin-token-${'0123456789'.repeat(3)}`;
const METRICS_TOKEN = 'limits-test-metrics-token';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request from a chosen local address (127.0.0.x are all this host: another client to the API). */
function call(
  url: string,
  o: { method?: string; headers?: Record<string, string>; body?: string; from?: string } = {},
): Promise<Answer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: `${u.pathname}${u.search}`,
        method: o.method ?? 'GET',
        headers: o.headers,
        localAddress: o.from ?? '127.0.0.1',
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (b: Buffer) => chunks.push(b));
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(o.body);
  });
}

describe('limits', () => {
  const agents = new FakeAgents();
  let c: TestController;

  beforeAll(async () => {
    agents.connect(R.ready.id);
    agents.connect(R.other.id);
    c = await startTestController({
      agents,
      inventory: `runners:\n${Object.values(R)
        .map((r) => bareMetalRunnerYaml(r))
        .join('')}`,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_AUTH_FAILURE_BURST: '3',
        E2EPOOL_AUTH_FAILURE_PER_MINUTE: '1',
        E2EPOOL_READINESS_BURST: '2',
        E2EPOOL_READINESS_PER_SECOND: '0.02',
        E2EPOOL_METRICS_TOKEN: METRICS_TOKEN,
        E2EPOOL_METRICS_CACHE_SECONDS: '3',
        E2EPOOL_METRICS_FINDINGS_SECONDS: '600',
      },
    });
  });
  afterAll(async () => c?.stop());

  it('failed admin tokens are limited per client: past the burst, logins and bearer calls get 429 with Retry-After; other clients are not', async () => {
    const login = (token: string, from = '127.0.0.2') =>
      call(`${c.api.url}/ui/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token, next: '/ui' }).toString(),
        from,
      });
    const bearer = (token: string, from = '127.0.0.2') =>
      call(`${c.api.url}/api/runners`, { headers: { authorization: `Bearer ${token}` }, from });

    expect((await login('wrong-1')).status).toBe(403);
    expect((await bearer('wrong-2')).status).toBe(403);
    expect((await login('wrong-3')).status).toBe(403);
    const limitedLogin = await login('wrong-4');
    expect(limitedLogin.status).toBe(429);
    expect(Number(limitedLogin.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(limitedLogin.body).toContain('Too many failed admin token attempts');
    // The right token from the same client waits too: the limit is not a guessing oracle.
    const limited = await bearer(ADMIN);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(limited.body).detail).toMatch(
      /^Too many failed admin token attempts from this client; retry after \d+ s$/,
    );
    // Checkpoint logs take the admin token too: limited the same way, while a runner's own token still works.
    const logs = (token: string) =>
      call(`${c.api.url}/checkpoint/job-1-1-abcdef01/logs`, {
        headers: { authorization: `Bearer ${token}` },
        from: '127.0.0.2',
      });
    expect((await logs(ADMIN)).status).toBe(429);
    expect((await logs(R.ready.token)).status).toBe(404);
    // Another client is not affected.
    expect((await bearer(ADMIN, '127.0.0.3')).status).toBe(200);
    expect((await login(ADMIN, '127.0.0.3')).status).toBe(303);
  });

  it('GET /runner/readiness is limited per runner (each call starts a workflow): 429 with Retry-After past the burst', async () => {
    const readiness = (token: string) =>
      call(`${c.api.url}/runner/readiness`, { headers: { authorization: `Bearer ${token}` } });
    expect((await readiness(R.ready.token)).status).toBe(200);
    expect((await readiness(R.ready.token)).status).toBe(200);
    const limited = await readiness(R.ready.token);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(limited.body)).toEqual({
      detail: expect.stringMatching(
        /^Too many readiness checks for this runner; retry after \d+ s$/,
      ),
    });
    // Another runner has its own budget.
    expect((await readiness(R.other.token)).status).toBe(200);
  });

  it('/metrics wants E2EPOOL_METRICS_TOKEN when it is set (401 without, 403 wrong)', async () => {
    const none = await call(`${c.api.url}/metrics`);
    expect(none.status).toBe(401);
    expect(JSON.parse(none.body)).toEqual({ detail: 'Invalid authorization header' });
    const wrong = await call(`${c.api.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}x` },
    });
    expect(wrong.status).toBe(403);
    expect(JSON.parse(wrong.body)).toEqual({ detail: 'Invalid metrics token' });
    const ok = await call(`${c.api.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(ok.status).toBe(200);
    expect(ok.body).toContain('e2epool_checkpoints_active');
  });

  it('/metrics collects once per window for every scrape, and reads the reconciler findings (a count over operation_logs) far less often', async () => {
    const scrape = async () =>
      (
        await call(`${c.api.url}/metrics`, {
          headers: { authorization: `Bearer ${METRICS_TOKEN}` },
        })
      ).body;
    const findings = (text: string) =>
      sumOf(text, 'e2epool_reconcile_findings_total', { kind: 'limits_test' });

    // Concurrent and back-to-back scrapes get the same collection (process CPU and heap move between two).
    const first = await Promise.all([scrape(), scrape(), scrape()]);
    expect(new Set(first).size).toBe(1);
    expect(await scrape()).toBe(first[0]);

    const [{ id }] = await c.ds.query(
      `INSERT INTO checkpoints (name, runner_id, job_id, backend, state, workflow_id, ended_at)
       VALUES ($1, $2, '1', 'bare_metal', 'reset', 'wf-limits', now()) RETURNING id`,
      [`job-1-1-${uniqueId('').slice(1)}`, R.metrics.id],
    );
    await c.ds.query(
      `INSERT INTO operation_logs (checkpoint_id, idempotency_key, operation, runner_id, result)
       VALUES ($1, $2, 'reconcile:limits_test', $3, 'ok')`,
      [id, uniqueId('limits'), R.metrics.id],
    );
    // A new collection (the window passed), still with the findings read before the row.
    const next = await waitFor('a new collection', async () => {
      const t = await scrape();
      return t !== first[0] ? t : undefined;
    });
    expect(findings(next)).toBe(findings(first[0]!));
  });
});
