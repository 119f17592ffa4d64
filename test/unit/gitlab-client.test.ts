import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  GitLabClient,
  RATE_LIMIT_DEFAULT_WAIT_MS,
  RATE_LIMIT_MAX_WAIT_MS,
  rateLimitWaitMs,
} from '../../activities/gitlab/client';
import { retryAfterOf } from '../../common/fail';

/** A GitLab that records the path of every request and says every job succeeded. */
describe('GitLabClient paths', () => {
  let server: Server;
  let client: GitLabClient;
  const seen: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(req.url ?? '');
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ status: 'success', paused: false }));
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const { port } = server.address() as AddressInfo;
    client = new GitLabClient(`http://127.0.0.1:${port}`, 'tok', 5000);
  });
  afterAll(async () => new Promise<void>((ok) => server.close(() => ok())));
  beforeEach(() => {
    seen.length = 0;
  });

  it('encodes the project and job ids as single path segments', async () => {
    await expect(client.jobState('group/sub project?x#y', '5')).resolves.toBe('success');
    expect(seen).toEqual(['/api/v4/projects/group%2Fsub%20project%3Fx%23y/jobs/5']);
  });

  it.each([
    ['..', '5'],
    ['.', '5'],
    ['7', '..'],
    ['', '5'],
  ])(
    'refuses project %j job %j, which would leave /projects/:id/jobs/:id, without a request',
    async (projectId, jobId) => {
      await expect(client.jobState(projectId, jobId)).rejects.toMatchObject({
        type: 'PermanentFailure',
        nonRetryable: true,
      });
      expect(seen).toEqual([]);
    },
  );

  it('pauses a runner at /runners/:id', async () => {
    await client.setPaused(42, true);
    expect(seen).toEqual(['/api/v4/runners/42']);
  });
});

/** What e2epool_gitlab_requests_total counts: every request, by operation and status. */
describe('GitLabClient request counting', () => {
  let server: Server;
  let baseUrl: string;
  /** Status of the next answer, by method and path. */
  const answer = (method: string | undefined, url: string | undefined): number =>
    method === 'PUT' ? 200 : url?.includes('/jobs/') ? 401 : 200;

  beforeAll(async () => {
    server = createServer((req, res) => {
      res.statusCode = answer(req.method, req.url);
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ status: 'running', paused: true }));
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => new Promise<void>((ok) => server.close(() => ok())));

  it('reports each call with its operation and HTTP status, a refusal included', async () => {
    const seen: Array<[string, string]> = [];
    const client = new GitLabClient(baseUrl, 'secret-token', 5000, {
      onResponse: (op, code) => seen.push([op, code]),
    });
    await client.runnerPaused(7);
    await client.setPaused(7, true);
    await client.setPaused(7, false);
    await expect(client.jobState('9', '5')).rejects.toMatchObject({ type: 'PermanentFailure' });
    expect(seen).toEqual([
      ['runner_get', '200'],
      ['runner_pause', '200'],
      ['runner_unpause', '200'],
      ['job_status', '401'],
    ]);
  });

  it('reports a call that got no response as code "error"', async () => {
    // A port nothing listens on: the connection is refused.
    const closed = createServer();
    await new Promise<void>((ok) => closed.listen(0, '127.0.0.1', ok));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((ok) => closed.close(() => ok()));
    const seen: Array<[string, string]> = [];
    const client = new GitLabClient(`http://127.0.0.1:${port}`, 'secret-token', 5000, {
      onResponse: (op, code) => seen.push([op, code]),
    });
    await expect(client.runnerPaused(7)).rejects.toMatchObject({ type: 'GitLabUnavailable' });
    expect(seen).toEqual([['runner_get', 'error']]);
  });
});

describe('rateLimitWaitMs (after a 429)', () => {
  const now = Date.parse('2026-11-27T12:00:00Z');

  it('prefers RateLimit-ResetTime, then Retry-After, then RateLimit-Reset, as GitLab Runner does', () => {
    const all = {
      'ratelimit-resettime': 'Fri, 27 Nov 2026 12:00:30 GMT',
      'retry-after': '10',
      'ratelimit-reset': String(now / 1000 + 50),
    };
    expect(rateLimitWaitMs(all, now)).toBe(30_000);
    expect(rateLimitWaitMs({ ...all, 'ratelimit-resettime': undefined }, now)).toBe(10_000);
    expect(rateLimitWaitMs({ 'ratelimit-reset': all['ratelimit-reset'] }, now)).toBe(50_000);
  });

  it('reads Retry-After as an HTTP date too, and a reset already past as no wait', () => {
    expect(rateLimitWaitMs({ 'retry-after': 'Fri, 27 Nov 2026 12:00:05 GMT' }, now)).toBe(5000);
    expect(rateLimitWaitMs({ 'ratelimit-resettime': 'Fri, 27 Nov 2026 11:00:00 GMT' }, now)).toBe(
      0,
    );
  });

  it('waits a minute when no header says, skips garbage, and never waits more than 15 minutes', () => {
    expect(rateLimitWaitMs({}, now)).toBe(RATE_LIMIT_DEFAULT_WAIT_MS);
    expect(rateLimitWaitMs({ 'ratelimit-resettime': 'soon', 'retry-after': '-3' }, now)).toBe(
      RATE_LIMIT_DEFAULT_WAIT_MS,
    );
    expect(rateLimitWaitMs({ 'retry-after': '86400' }, now)).toBe(RATE_LIMIT_MAX_WAIT_MS);
  });

  it('makes a 429 a transient GitLabRateLimited failure carrying the wait', async () => {
    const server = createServer((_req, res) => {
      res.writeHead(429, { 'Content-Type': 'text/plain', 'Retry-After': '7' });
      res.end('Retry later\n');
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    try {
      const { port } = server.address() as AddressInfo;
      const client = new GitLabClient(`http://127.0.0.1:${port}`, 'tok', 5000);
      const err = await client.runnerPaused(1).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({
        type: 'GitLabRateLimited',
        nonRetryable: false,
        nextRetryDelay: 7000,
      });
      expect(retryAfterOf(err)).toBe(7000);
    } finally {
      await new Promise<void>((ok) => server.close(() => ok()));
    }
  });
});
