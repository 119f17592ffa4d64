/**
 * A stand-in for the slice of the GitLab REST v4 API that e2epool uses, served over real HTTP.
 *
 * Hazards it reproduces on purpose (see /work/shared/reference/external-apis.md, section 2):
 * - there is no `GET /api/v4/jobs/:id` for personal tokens: it is an unknown route
 *   (`{"error":"404 Not Found"}`), unlike a missing record (`{"message":"404 Not found"}`);
 * - pausing takes `paused` (or the deprecated `active`), never both; `status` says "paused";
 * - Grape coerces booleans from strings, so `paused=true` in a form works (unlike Proxmox);
 * - rate limiting is a text/plain 429 from Rack::Attack with Retry-After and RateLimit-* headers,
 *   and it fires before authentication, like every injected fault;
 * - the token has scopes (reference §2.1): `api` allows everything, `read_api` only GET,
 *   `manage_runner` only `/runners/:id...`, `read_user` only `GET /user`; anything else is a 403
 *   `insufficient_scope`. `GET /personal_access_tokens/self` answers any scope (GitLab allows
 *   every scope there so a token can inspect itself: lib/api/personal_access_tokens/self_information.rb,
 *   issue gitlab-org/gitlab#373999, python-gitlab's `personal_access_tokens.get("self")`).
 */
import { randomUUID } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type GitLabFault =
  | { kind: 'http'; status: number; body?: unknown; headers?: Record<string, string> }
  /** 429, `Content-Type: text/plain`, body `Retry later\n`, Retry-After and RateLimit-* headers. */
  | { kind: 'rate-limit'; retryAfterSeconds: number }
  | { kind: 'delay'; ms: number };

export interface GitLabCall {
  method: string;
  /** The path as sent (a project path stays URL-encoded, e.g. `/api/v4/projects/g%2Fp/jobs/1`). */
  path: string;
  query: Record<string, string>;
  body: Record<string, unknown>;
  /** 0 until the response has been sent. */
  status: number;
  at: number;
}

export interface GitLabJobOptions {
  runnerId?: number;
  name?: string;
  stage?: string;
  ref?: string;
  failureReason?: string;
}

export interface GitLabStandIn {
  /** Base URL; the API is under `/api/v4`. */
  url: string;
  /** Accepted via `PRIVATE-TOKEN` or `Authorization: Bearer`. */
  token: string;
  /** The token's scopes (default `['api']`); `GET /personal_access_tokens/self` lists them. */
  setScopes(scopes: string[]): void;
  /**
   * Creates or updates a job. `projectId` is the numeric id (registered on first use) or a path
   * registered with `addProject`. The optional `opts` is an extension of the agreed interface.
   */
  setJob(
    projectId: string | number,
    jobId: string | number,
    status: string,
    opts?: GitLabJobOptions,
  ): void;
  addProject(id: number, pathWithNamespace: string): void;
  addRunner(id: number, opts?: { paused?: boolean; description?: string }): void;
  /** `pausedHistory`: every value set through PUT, in order. */
  runner(id: number): { id: number; paused: boolean; pausedHistory: boolean[] };
  /**
   * Calls `listener` the instant a PUT sets a runner's `paused` (before the
   * answer is sent), as a CI system that hands out a job the moment its
   * runner is unpaused. Returns a function that removes the listener.
   */
  onPausedChange(listener: (id: number, paused: boolean) => void): () => void;
  /**
   * Fault: the next `times` unpauses of runner `id` are each followed at once
   * by a pause, as a pause request of an earlier, crashed attempt that landed
   * late: the unpause is answered 200, and the runner reads paused again.
   */
  pauseLandsAfterUnpause(id: number, times?: number): void;
  /** `bodyIncludes`: only requests whose raw body contains it (e.g. `paused=false`: an unpause). */
  failNext(
    match: { method?: string; pathIncludes?: string; bodyIncludes?: string },
    fault: GitLabFault,
    times?: number,
  ): void;
  clearFaults(): void;
  /** Whether a request like this has arrived and not been answered yet (e.g. one a delay fault holds). */
  inFlight(match: { method: string; pathEndsWith: string }): boolean;
  calls: GitLabCall[];
  close(): Promise<void>;
}

const JOB_STATUSES = new Set([
  'created',
  'waiting_for_resource',
  'preparing',
  'waiting_for_callback',
  'pending',
  'running',
  'canceling',
  'success',
  'failed',
  'canceled',
  'skipped',
  'manual',
  'scheduled',
]);
/** Statuses in which no runner has picked the job up yet. */
const UNASSIGNED = new Set([
  'created',
  'waiting_for_resource',
  'pending',
  'manual',
  'scheduled',
  'skipped',
]);
const FINISHED = new Set(['success', 'failed', 'canceled']);
const AT_LEAST_ONE_RUNNER_ATTR =
  'description, active, paused, tag_list, run_untagged, locked, access_level, maximum_timeout, maintenance_note are missing, at least one parameter must be provided';

interface Project {
  id: number;
  path: string;
}

interface Job {
  id: number;
  projectId: number;
  status: string;
  name: string;
  stage: string;
  ref: string;
  pipelineId: number;
  runnerId?: number;
  /** Set once a runner has picked the job up; until then the API shows `runner: null`. */
  pickedUp: boolean;
  failureReason?: string;
  createdAt: Date;
  startedAt?: Date;
  finishedAt?: Date;
}

interface Runner {
  id: number;
  description: string;
  paused: boolean;
  pausedHistory: boolean[];
  tagList: string[];
  runUntagged: boolean;
  locked: boolean;
  maximumTimeout: number | null;
  accessLevel: string;
  maintenanceNote: string | null;
  createdAt: Date;
}

interface FaultEntry {
  match: { method?: string; pathIncludes?: string; bodyIncludes?: string };
  fault: GitLabFault;
  remaining: number;
}

/** An API error: Grape's `error!` (`{"error":...}`) or a helper's `{"message":...}`. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(JSON.stringify(body));
    this.name = 'ApiError';
  }
}

const notFoundRoute = (): ApiError => new ApiError(404, { error: '404 Not Found' });
const badRequest = (error: string): ApiError => new ApiError(400, { error });

/** Grape's Boolean coercion (dry-types Params::Bool). */
function coerceBool(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v === 1 ? true : v === 0 ? false : undefined;
  if (typeof v !== 'string') return undefined;
  const s = v.toLowerCase();
  if (['true', '1', 't', 'yes', 'y', 'on'].includes(s)) return true;
  if (['false', '0', 'f', 'no', 'n', 'off'].includes(s)) return false;
  return undefined;
}

function coerceInt(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'string' && /^[+-]?\d+$/.test(v.trim())) return Number(v);
  return undefined;
}

function decodeForm(data: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(data)) out[k] = v;
  return out;
}

class GlStandIn implements GitLabStandIn {
  url = '';
  readonly calls: GitLabCall[] = [];
  private readonly projects = new Map<number, Project>();
  private readonly jobs = new Map<string, Job>();
  private readonly runners = new Map<number, Runner>();
  private faults: FaultEntry[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private nextPipelineId = 5000;
  private closed = false;
  private readonly server = createServer((req, res) => {
    this.handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(599, 'stand-in internal error', { Connection: 'close' });
        res.end(String(err instanceof Error ? err.stack : err));
      } else {
        res.destroy();
      }
    });
  });

  private scopes: string[];

  constructor(
    readonly token: string,
    scopes: string[],
    /** Added to every answer, as a real GitLab's latency (benchmarks). */
    private readonly latencyMs = 0,
  ) {
    this.scopes = [...scopes];
  }

  setScopes(scopes: string[]): void {
    this.scopes = [...scopes];
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
  }

  addProject(id: number, pathWithNamespace: string): void {
    this.projects.set(id, { id, path: pathWithNamespace });
  }

  addRunner(id: number, opts: { paused?: boolean; description?: string } = {}): void {
    this.runners.set(id, {
      id,
      description: opts.description ?? `ci-vm-${id}`,
      paused: opts.paused ?? false,
      pausedHistory: [],
      tagList: ['proxmox'],
      runUntagged: false,
      locked: true,
      maximumTimeout: 3600,
      accessLevel: 'not_protected',
      maintenanceNote: null,
      createdAt: new Date(Date.now() - 86_400_000),
    });
  }

  private readonly pausedListeners = new Set<(id: number, paused: boolean) => void>();
  private readonly latePauses = new Map<number, number>();

  onPausedChange(listener: (id: number, paused: boolean) => void): () => void {
    this.pausedListeners.add(listener);
    return () => this.pausedListeners.delete(listener);
  }

  pauseLandsAfterUnpause(id: number, times = 1): void {
    this.latePauses.set(id, (this.latePauses.get(id) ?? 0) + times);
  }

  private setRunnerPaused(runner: Runner, paused: boolean): void {
    runner.paused = paused;
    runner.pausedHistory.push(paused);
    for (const l of this.pausedListeners) l(runner.id, paused);
  }

  runner(id: number): { id: number; paused: boolean; pausedHistory: boolean[] } {
    const r = this.runners.get(id);
    if (!r) throw new Error(`no runner ${id}`);
    return { id: r.id, paused: r.paused, pausedHistory: [...r.pausedHistory] };
  }

  setJob(
    projectId: string | number,
    jobId: string | number,
    status: string,
    opts: GitLabJobOptions = {},
  ): void {
    if (!JOB_STATUSES.has(status)) throw new Error(`unknown GitLab job status '${status}'`);
    const project = this.resolveProjectForSetup(projectId);
    const id = Number(jobId);
    if (!Number.isInteger(id) || id <= 0) throw new Error(`invalid job id '${jobId}'`);
    const key = `${project.id}/${id}`;
    const now = new Date();
    let job = this.jobs.get(key);
    if (!job) {
      job = {
        id,
        projectId: project.id,
        status,
        name: opts.name ?? 'e2e',
        stage: opts.stage ?? 'test',
        ref: opts.ref ?? 'main',
        pipelineId: this.nextPipelineId++,
        pickedUp: false,
        createdAt: new Date(now.getTime() - 1000),
      };
      this.jobs.set(key, job);
    }
    job.status = status;
    if (opts.name) job.name = opts.name;
    if (opts.stage) job.stage = opts.stage;
    if (opts.ref) job.ref = opts.ref;
    if (opts.runnerId !== undefined) job.runnerId = opts.runnerId;
    if (opts.failureReason) job.failureReason = opts.failureReason;
    if (!UNASSIGNED.has(status) && !(status === 'canceled' && !job.pickedUp)) {
      job.pickedUp = true;
      job.runnerId ??= this.runners.keys().next().value ?? 1;
    }
    if ((status === 'running' || status === 'success' || status === 'failed') && !job.startedAt) {
      job.startedAt = now;
    }
    if (FINISHED.has(status)) job.finishedAt ??= now;
    else delete job.finishedAt;
  }

  inFlight(match: { method: string; pathEndsWith: string }): boolean {
    return this.calls.some(
      (c) => c.method === match.method && c.path.endsWith(match.pathEndsWith) && c.status === 0,
    );
  }

  failNext(
    match: { method?: string; pathIncludes?: string; bodyIncludes?: string },
    fault: GitLabFault,
    times = 1,
  ): void {
    this.faults.push({ match, fault, remaining: times });
  }

  clearFaults(): void {
    this.faults = [];
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // ---- plumbing ------------------------------------------------------------------------------

  private resolveProjectForSetup(projectId: string | number): Project {
    if (typeof projectId === 'number' || /^\d+$/.test(projectId)) {
      const id = Number(projectId);
      let p = this.projects.get(id);
      if (!p) {
        p = { id, path: `e2e/project-${id}` };
        this.projects.set(id, p);
      }
      return p;
    }
    const p = this.projectByPath(projectId);
    if (!p) throw new Error(`project '${projectId}' was not registered with addProject`);
    return p;
  }

  private projectByPath(path: string): Project | undefined {
    const wanted = path.toLowerCase();
    return [...this.projects.values()].find((p) => p.path.toLowerCase() === wanted);
  }

  private wait(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private takeFault(
    method: string,
    rawPath: string,
    path: string,
    kinds: ReadonlyArray<GitLabFault['kind']>,
    rawBody: string,
  ): GitLabFault | undefined {
    const entry = this.faults.find(
      (f) =>
        f.remaining > 0 &&
        kinds.includes(f.fault.kind) &&
        (f.match.method === undefined || f.match.method.toUpperCase() === method) &&
        (f.match.pathIncludes === undefined ||
          rawPath.includes(f.match.pathIncludes) ||
          path.includes(f.match.pathIncludes)) &&
        (f.match.bodyIncludes === undefined || rawBody.includes(f.match.bodyIncludes)),
    );
    if (!entry) return undefined;
    entry.remaining -= 1;
    if (entry.remaining <= 0) this.faults = this.faults.filter((f) => f !== entry);
    return entry.fault;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const rawPath = url.pathname;
    let path = rawPath;
    try {
      path = decodeURIComponent(rawPath);
    } catch {
      // keep the raw path: a malformed escape just never matches a route
    }
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();

    const call: GitLabCall = { method, path: rawPath, query, body: {}, status: 0, at: Date.now() };
    this.calls.push(call);

    const requestId = randomUUID().replace(/-/g, '').slice(0, 26).toUpperCase();
    const send = (
      status: number,
      body: unknown,
      extraHeaders: Record<string, string> = {},
    ): void => {
      if (this.closed) return;
      const isText = typeof body === 'string';
      const payload = Buffer.from(isText ? body : JSON.stringify(body), 'utf8');
      call.status = status;
      res.writeHead(status, {
        'Content-Type': isText ? 'text/plain' : 'application/json',
        'Cache-Control': 'max-age=0, private, must-revalidate',
        'X-Request-Id': requestId,
        'X-Content-Type-Options': 'nosniff',
        'X-Frame-Options': 'SAMEORIGIN',
        Vary: 'Origin, Accept-Encoding',
        ...extraHeaders,
        'Content-Length': String(payload.length),
      });
      res.end(payload);
    };

    if (this.latencyMs > 0) await this.wait(this.latencyMs);
    const delay = this.takeFault(method, rawPath, path, ['delay'], rawBody);
    if (delay?.kind === 'delay') await this.wait(delay.ms);
    if (this.closed) return;

    const fault = this.takeFault(method, rawPath, path, ['rate-limit', 'http'], rawBody);
    if (fault?.kind === 'rate-limit') {
      const resetAt = Math.floor(Date.now() / 1000) + fault.retryAfterSeconds;
      return send(429, 'Retry later\n', {
        'Retry-After': String(fault.retryAfterSeconds),
        'RateLimit-Name': 'throttle_authenticated_api',
        'RateLimit-Limit': '2000',
        'RateLimit-Observed': '2001',
        'RateLimit-Remaining': '0',
        'RateLimit-Reset': String(resetAt),
        'RateLimit-ResetTime': new Date(resetAt * 1000).toUTCString(),
      });
    }
    if (fault?.kind === 'http') {
      const body = fault.body ?? {
        message: `${fault.status} ${STATUS_CODES[fault.status] ?? ''}`.trim(),
      };
      return send(fault.status, body, fault.headers);
    }

    let body: Record<string, unknown> = {};
    if (rawBody.length > 0) {
      if (contentType === 'application/json') {
        try {
          const parsed: unknown = JSON.parse(rawBody);
          if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
            body = parsed as Record<string, unknown>;
          }
        } catch {
          call.body = { _raw: rawBody };
          return send(400, {
            error: 'message body does not match declared format',
          });
        }
      } else {
        body = decodeForm(rawBody);
      }
    }
    call.body = body;
    // Grape sees query and body parameters as one hash.
    const params: Record<string, unknown> = { ...query, ...body };

    try {
      if (!path.startsWith('/api/v4/')) {
        call.status = 404;
        res.writeHead(404, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end(
          "<!DOCTYPE html>\n<html><head><title>The page you're looking for could not be found (404)</title></head><body></body></html>\n",
        );
        return;
      }
      const segs = rawPath.slice('/api/v4/'.length).split('/');
      const result = this.route(method, segs, params, req);
      send(result.status ?? 200, result.body);
    } catch (err) {
      if (err instanceof ApiError) return send(err.status, err.body);
      throw err;
    }
  }

  /**
   * Checks the token, then its scopes for this kind of route: `runner` is
   * `/runners/:id...` (manage_runner applies), `user` is `GET /user`
   * (read_user applies), `self` is `/personal_access_tokens/self` (any scope).
   */
  private authenticate(
    req: IncomingMessage,
    route: 'other' | 'runner' | 'user' | 'self' = 'other',
  ): void {
    const priv = req.headers['private-token'];
    const auth = String(req.headers.authorization ?? '');
    const bearer = /^Bearer\s+(.+)$/i.exec(auth)?.[1]?.trim();
    const presented = (Array.isArray(priv) ? priv[0] : priv) ?? bearer;
    if (presented !== this.token) throw new ApiError(401, { message: '401 Unauthorized' });
    const read = req.method === 'GET' || req.method === 'HEAD';
    const has = (s: string) => this.scopes.includes(s);
    const allowed =
      route === 'self' ||
      has('api') ||
      (read && has('read_api')) ||
      (route === 'runner' && has('manage_runner')) ||
      (route === 'user' && read && has('read_user'));
    if (!allowed) {
      throw new ApiError(403, {
        error: 'insufficient_scope',
        error_description:
          'The request requires higher privileges than provided by the access token.',
        scope: 'api',
      });
    }
  }

  private route(
    method: string,
    segs: string[],
    params: Record<string, unknown>,
    req: IncomingMessage,
  ): { status?: number; body: unknown } {
    const seg = (i: number): string | undefined => {
      const s = segs[i];
      if (s === undefined) return undefined;
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    };
    const n = segs.length;

    // GET /projects/:id/jobs/:job_id
    if (method === 'GET' && n === 4 && segs[0] === 'projects' && segs[2] === 'jobs' && seg(1)) {
      this.authenticate(req);
      const jobId = coerceInt(seg(3));
      if (jobId === undefined) throw badRequest('job_id is invalid');
      const project = this.findProject(seg(1)!);
      const job = this.jobs.get(`${project.id}/${jobId}`);
      if (!job) throw new ApiError(404, { message: '404 Not found' });
      return { body: this.jobJson(job, project) };
    }

    if (segs[0] === 'runners' && n >= 2 && segs[1] !== '') {
      // GET /runners/:id, PUT /runners/:id, GET /runners/:id/jobs
      const isRunner = n === 2 && (method === 'GET' || method === 'PUT');
      const isJobs = n === 3 && segs[2] === 'jobs' && method === 'GET';
      if (isRunner || isJobs) {
        this.authenticate(req, 'runner');
        const id = coerceInt(seg(1));
        if (id === undefined) throw badRequest('id is invalid');
        if (isJobs) return { body: this.runnerJobs(id, params) };
        const runner = this.runners.get(id);
        if (method === 'PUT') {
          const update = this.parseRunnerUpdate(params);
          if (!runner) throw new ApiError(404, { message: '404 Not found' });
          this.applyRunnerUpdate(runner, update);
          return { body: this.runnerDetails(runner) };
        }
        if (!runner) throw new ApiError(404, { message: '404 Not found' });
        return { body: this.runnerDetails(runner) };
      }
    }

    if (method === 'GET' && n === 1 && segs[0] === 'job') {
      // The CI-job-token endpoint: a personal token owns no job.
      this.authenticate(req);
      throw new ApiError(404, { message: '404 Job Not Found' });
    }
    if (method === 'GET' && n === 2 && segs[0] === 'personal_access_tokens' && segs[1] === 'self') {
      // The token describes itself (GitLab 15.5+; lib/api/entities/personal_access_token.rb).
      this.authenticate(req, 'self');
      return {
        body: {
          id: 17,
          name: 'e2epool',
          revoked: false,
          created_at: '2026-01-05T09:12:44.103Z',
          description: null,
          scopes: [...this.scopes],
          user_id: 42,
          last_used_at: new Date().toISOString(),
          active: true,
          expires_at: '2027-01-05',
        },
      };
    }
    if (method === 'GET' && n === 1 && segs[0] === 'user') {
      this.authenticate(req, 'user');
      return {
        body: {
          id: 42,
          username: 'e2epool-bot',
          name: 'e2epool bot',
          state: 'active',
          locked: false,
          avatar_url: null,
          web_url: `${this.url}/e2epool-bot`,
          bot: false,
        },
      };
    }
    if (method === 'GET' && n === 1 && segs[0] === 'version') {
      this.authenticate(req);
      return { body: { version: '17.5.2-ee', revision: 'b3f2c6a1d4e', enterprise: true } };
    }
    // Everything else, notably GET /jobs/:id, is an unknown route for a personal token.
    throw notFoundRoute();
  }

  private findProject(idOrPath: string): Project {
    const p = /^\d+$/.test(idOrPath)
      ? this.projects.get(Number(idOrPath))
      : this.projectByPath(idOrPath);
    if (!p) throw new ApiError(404, { message: '404 Project Not Found' });
    return p;
  }

  private parseRunnerUpdate(params: Record<string, unknown>): Partial<Runner> & {
    pausedSet?: boolean;
  } {
    const errors: string[] = [];
    const update: Partial<Runner> & { pausedSet?: boolean } = {};
    const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(params, k);

    let paused: boolean | undefined;
    let active: boolean | undefined;
    if (has('active')) {
      active = coerceBool(params.active);
      if (active === undefined) errors.push('active is invalid');
    }
    if (has('paused')) {
      paused = coerceBool(params.paused);
      if (paused === undefined) errors.push('paused is invalid');
    }
    if (has('description')) update.description = String(params.description);
    if (has('tag_list')) {
      const v = params.tag_list;
      update.tagList = Array.isArray(v)
        ? v.map(String)
        : String(v)
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean);
    }
    for (const [key, field] of [
      ['run_untagged', 'runUntagged'],
      ['locked', 'locked'],
    ] as const) {
      if (!has(key)) continue;
      const b = coerceBool(params[key]);
      if (b === undefined) errors.push(`${key} is invalid`);
      else update[field] = b;
    }
    if (has('maximum_timeout')) {
      const t = coerceInt(params.maximum_timeout);
      if (t === undefined) errors.push('maximum_timeout is invalid');
      else update.maximumTimeout = t;
    }
    if (has('access_level')) {
      const a = String(params.access_level);
      if (a !== 'not_protected' && a !== 'ref_protected') {
        errors.push('access_level does not have a valid value');
      } else {
        update.accessLevel = a;
      }
    }
    if (has('maintenance_note')) update.maintenanceNote = String(params.maintenance_note);

    if (has('active') && has('paused')) errors.push('active, paused are mutually exclusive');
    const updatable = [
      'description',
      'active',
      'paused',
      'tag_list',
      'run_untagged',
      'locked',
      'access_level',
      'maximum_timeout',
      'maintenance_note',
    ];
    if (!updatable.some(has)) errors.push(AT_LEAST_ONE_RUNNER_ATTR);
    if (errors.length > 0) throw badRequest(errors.join(', '));

    if (paused !== undefined) {
      update.paused = paused;
      update.pausedSet = true;
    } else if (active !== undefined) {
      // The server stores active = !paused; the deprecated parameter is the same switch.
      update.paused = !active;
      update.pausedSet = true;
    }
    return update;
  }

  private applyRunnerUpdate(
    runner: Runner,
    update: Partial<Runner> & { pausedSet?: boolean },
  ): void {
    if (update.description !== undefined) runner.description = update.description;
    if (update.tagList !== undefined) runner.tagList = update.tagList;
    if (update.runUntagged !== undefined) runner.runUntagged = update.runUntagged;
    if (update.locked !== undefined) runner.locked = update.locked;
    if (update.maximumTimeout !== undefined) runner.maximumTimeout = update.maximumTimeout;
    if (update.accessLevel !== undefined) runner.accessLevel = update.accessLevel;
    if (update.maintenanceNote !== undefined) runner.maintenanceNote = update.maintenanceNote;
    if (update.pausedSet && update.paused !== undefined) {
      this.setRunnerPaused(runner, update.paused);
      const late = this.latePauses.get(runner.id) ?? 0;
      if (!update.paused && late > 0) {
        this.latePauses.set(runner.id, late - 1);
        this.setRunnerPaused(runner, true);
      }
    }
  }

  private runnerJobs(id: number, params: Record<string, unknown>): unknown[] {
    const runner = this.runners.get(id);
    if (!runner) throw new ApiError(404, { message: '404 Runner Not Found' });
    const status = params.status;
    if (status !== undefined && !JOB_STATUSES.has(String(status))) {
      throw badRequest('status does not have a valid value');
    }
    const sortDesc = params.sort !== 'asc';
    return [...this.jobs.values()]
      .filter(
        (j) =>
          j.pickedUp && j.runnerId === id && (status === undefined || j.status === String(status)),
      )
      .sort((a, b) => (sortDesc ? b.id - a.id : a.id - b.id))
      .map((j) => {
        const project = this.projects.get(j.projectId)!;
        return {
          ...this.jobJson(j, project),
          project: {
            id: project.id,
            name: project.path.split('/').pop(),
            path_with_namespace: project.path,
            name_with_namespace: project.path.replace(/\//g, ' / '),
            path: project.path.split('/').pop(),
          },
        };
      });
  }

  private runnerBasic(r: Runner): Record<string, unknown> {
    return {
      id: r.id,
      description: r.description,
      ip_address: null,
      active: !r.paused,
      paused: r.paused,
      is_shared: false,
      runner_type: 'project_type',
      name: 'gitlab-runner',
      online: true,
      status: r.paused ? 'paused' : 'online',
    };
  }

  private runnerDetails(r: Runner): Record<string, unknown> {
    return {
      ...this.runnerBasic(r),
      created_by: null,
      created_at: r.createdAt.toISOString(),
      job_execution_status: [...this.jobs.values()].some(
        (j) => j.pickedUp && j.runnerId === r.id && j.status === 'running',
      )
        ? 'active'
        : 'idle',
      tag_list: r.tagList,
      run_untagged: r.runUntagged,
      locked: r.locked,
      maximum_timeout: r.maximumTimeout,
      access_level: r.accessLevel,
      version: '17.5.0',
      revision: '66269445',
      platform: 'linux',
      architecture: 'amd64',
      contacted_at: new Date(Date.now() - 2000).toISOString(),
      maintenance_note: r.maintenanceNote,
      projects: [],
      groups: [],
    };
  }

  private jobJson(job: Job, project: Project): Record<string, unknown> {
    const iso = (d: Date | undefined): string | null => (d ? d.toISOString() : null);
    const end = job.finishedAt ?? new Date();
    const runner =
      !job.pickedUp || job.runnerId === undefined
        ? null
        : this.runners.has(job.runnerId)
          ? this.runnerBasic(this.runners.get(job.runnerId)!)
          : {
              id: job.runnerId,
              description: `ci-vm-${job.runnerId}`,
              ip_address: null,
              active: true,
              paused: false,
              is_shared: false,
              runner_type: 'project_type',
              name: 'gitlab-runner',
              online: true,
              status: 'online',
            };
    const sha = `${job.pipelineId.toString(16).padStart(8, '0')}${'0'.repeat(32)}`;
    const webBase = `${this.url}/${project.path}`;
    const out: Record<string, unknown> = {
      id: job.id,
      status: job.status,
      stage: job.stage,
      name: job.name,
      ref: job.ref,
      tag: false,
      coverage: null,
      allow_failure: false,
      created_at: iso(job.createdAt),
      started_at: iso(job.startedAt),
      finished_at: iso(job.finishedAt),
      erased_at: null,
      duration: job.startedAt ? (end.getTime() - job.startedAt.getTime()) / 1000 : null,
      queued_duration: job.startedAt
        ? (job.startedAt.getTime() - job.createdAt.getTime()) / 1000
        : (Date.now() - job.createdAt.getTime()) / 1000,
      user: {
        id: 7,
        username: 'dev',
        name: 'Developer',
        state: 'active',
        locked: false,
        avatar_url: null,
        web_url: `${this.url}/dev`,
      },
      commit: {
        id: sha,
        short_id: sha.slice(0, 8),
        title: 'Run end-to-end tests',
        message: 'Run end-to-end tests\n',
        author_name: 'Developer',
        author_email: 'dev@example.com',
        created_at: iso(job.createdAt),
      },
      pipeline: {
        id: job.pipelineId,
        iid: job.pipelineId - 4000,
        project_id: project.id,
        sha,
        ref: job.ref,
        status: job.status,
        source: 'push',
        created_at: iso(job.createdAt),
        updated_at: iso(job.finishedAt ?? job.startedAt ?? job.createdAt),
        web_url: `${webBase}/-/pipelines/${job.pipelineId}`,
      },
      web_url: `${webBase}/-/jobs/${job.id}`,
      project: { ci_job_token_scope_enabled: false },
      artifacts: [],
      runner,
      runner_manager: runner
        ? {
            id: 9000 + (job.runnerId ?? 0),
            system_id: `s_${(job.runnerId ?? 0).toString(16).padStart(12, '0')}`,
            version: '17.5.0',
            revision: '66269445',
            platform: 'linux',
            architecture: 'amd64',
            status: 'online',
          }
        : null,
      artifacts_expire_at: null,
      archived: false,
      tag_list: ['proxmox'],
    };
    if (job.status === 'failed') out.failure_reason = job.failureReason ?? 'script_failure';
    return out;
  }
}

/** Starts a GitLab REST v4 stand-in on 127.0.0.1 (random port). */
export async function startGitLabStandIn(
  opts: { token?: string; scopes?: string[]; latencyMs?: number } = {},
): Promise<GitLabStandIn> {
  const s = new GlStandIn(
    opts.token ?? 'glpat-e2epool-stand-in-token',
    opts.scopes ?? ['api'],
    opts.latencyMs,
  );
  await s.listen();
  return s;
}
