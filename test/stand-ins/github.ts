/**
 * A stand-in for the slice of the GitHub REST API that e2epool uses (jobs, and
 * self-hosted runners with their labels), served over real HTTP.
 *
 * Hazards it reproduces on purpose (see /work/shared/reference/external-apis.md, section 3):
 * - there is no pause for a self-hosted runner: only its custom labels change; the
 *   read-only ones (`self-hosted`, OS, architecture) cannot be removed;
 * - `DELETE .../labels/{name}` answers 404 when the runner does not carry that custom label;
 * - a job's `conclusion` spells `cancelled`; `runner_*` are null until a runner takes the job;
 * - every answer carries `x-ratelimit-*` headers; an exhausted quota is a 403 with
 *   `x-ratelimit-remaining: 0`, a secondary limit a 403 or 429 with `retry-after`;
 * - a request without a User-Agent is refused (403), a bad token is 401, and a token
 *   without admin rights may read but not change runner labels (403);
 * - injected faults fire before authentication, like GitHub's own rate limiting.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type GitHubFault =
  | { kind: 'http'; status: number; body?: unknown; headers?: Record<string, string> }
  /** A secondary rate limit: 403 (default) or 429 with `retry-after`. */
  | { kind: 'secondary-rate-limit'; retryAfterSeconds: number; status?: 403 | 429 }
  /** The primary quota used up: 403 (default) or 429, `x-ratelimit-remaining: 0` until the reset. */
  | { kind: 'primary-rate-limit'; resetInSeconds: number; status?: 403 | 429 }
  | { kind: 'delay'; ms: number };

export interface GitHubCall {
  method: string;
  /** The path as sent (a label name stays URL-encoded). */
  path: string;
  body: unknown;
  /** Which token came: the admin one, the read-only one, none, or a wrong one. */
  auth: 'admin' | 'read' | 'none' | 'bad';
  /** 0 until the response has been sent. */
  status: number;
  at: number;
}

export type GitHubScope = { repo: string } | { org: string };

export interface GitHubJobOptions {
  /** Required for `completed` (default `success`): success, failure, cancelled, skipped, timed_out, … */
  conclusion?: string;
  /** The runner that took the job; `runner_*` stay null while the job is queued or waiting. */
  runnerId?: number;
  name?: string;
  /** `runs-on` labels. */
  labels?: string[];
}

export interface GitHubRunnerView {
  id: number;
  /** Every label name (read-only ones first). */
  labels: string[];
  /** The custom labels only. */
  custom: string[];
  /** Each change made through the API, in order. */
  changes: Array<{ method: string; labels: string[] }>;
}

export interface GitHubStandIn {
  /** Base URL, as api.github.com (no /api/v3 prefix). */
  url: string;
  /** A token with admin rights: it may change runner labels. */
  token: string;
  /** A token with read access only: jobs and labels can be read, labels not changed (403). */
  readToken: string;
  setJob(repo: string, jobId: number, status: string, opts?: GitHubJobOptions): void;
  addRunner(
    scope: GitHubScope,
    id: number,
    opts?: { name?: string; labels?: string[]; os?: 'Linux' | 'Windows' | 'macOS'; busy?: boolean },
  ): void;
  runner(id: number): GitHubRunnerView;
  /** An operator's own change of the custom labels (not a recorded API call). */
  setCustomLabels(id: number, labels: string[]): void;
  /**
   * Fault: the next `times` label additions (POST) on runner `id` are each
   * followed at once by the removal of the labels they added, as a removal
   * request of an earlier, crashed attempt that landed late (recorded as a DELETE).
   */
  removalLandsAfterRestore(id: number, times?: number): void;
  /** Online runners whose labels include all of `runsOn` (case-insensitive): who could take such a job. */
  runnersMatching(runsOn: string[]): number[];
  /** What the primary quota says now; requests with a token count against it. */
  setRateLimit(o: { remaining: number; limit?: number; resetInSeconds?: number }): void;
  failNext(
    match: { method?: string; pathIncludes?: string },
    fault: GitHubFault,
    times?: number,
  ): void;
  clearFaults(): void;
  calls: GitHubCall[];
  close(): Promise<void>;
}

const JOB_STATUSES = new Set([
  'queued',
  'in_progress',
  'completed',
  'waiting',
  'requested',
  'pending',
]);
const CONCLUSIONS = new Set([
  'success',
  'failure',
  'neutral',
  'cancelled',
  'skipped',
  'timed_out',
  'action_required',
]);
const DOCS = 'https://docs.github.com/rest';

interface Label {
  id: number;
  name: string;
  type: 'read-only' | 'custom';
}

interface Runner {
  id: number;
  scope: GitHubScope;
  name: string;
  os: string;
  busy: boolean;
  labels: Label[];
  changes: Array<{ method: string; labels: string[] }>;
}

interface Job {
  id: number;
  repo: string;
  runId: number;
  status: string;
  conclusion: string | null;
  name: string;
  labels: string[];
  runnerId: number | null;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
}

interface FaultEntry {
  match: { method?: string; pathIncludes?: string };
  fault: GitHubFault;
  remaining: number;
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const notFound = (): ApiError => new ApiError(404, 'Not Found');
const scopeKey = (s: GitHubScope) =>
  ('repo' in s ? `repo:${s.repo}` : `org:${s.org}`).toLowerCase();

class GhStandIn implements GitHubStandIn {
  url = '';
  readonly calls: GitHubCall[] = [];
  private readonly jobs = new Map<string, Job>();
  private readonly runners = new Map<number, Runner>();
  private readonly labelIds = new Map<string, number>();
  private faults: FaultEntry[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private quota = { limit: 5000, remaining: 5000, reset: Math.floor(Date.now() / 1000) + 3600 };
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

  constructor(
    readonly token: string,
    readonly readToken: string,
  ) {}

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  // ---- test controls ---------------------------------------------------------------------------

  setJob(repo: string, jobId: number, status: string, opts: GitHubJobOptions = {}): void {
    if (!JOB_STATUSES.has(status)) throw new Error(`unknown GitHub job status '${status}'`);
    const conclusion = status === 'completed' ? (opts.conclusion ?? 'success') : null;
    if (conclusion !== null && !CONCLUSIONS.has(conclusion))
      throw new Error(`unknown GitHub job conclusion '${conclusion}'`);
    const key = `${repo.toLowerCase()}#${jobId}`;
    const now = new Date();
    let job = this.jobs.get(key);
    if (!job) {
      job = {
        id: jobId,
        repo,
        runId: 2_000_000_000 + jobId,
        status,
        conclusion,
        name: opts.name ?? 'e2e',
        labels: opts.labels ?? ['self-hosted', 'e2e'],
        runnerId: null,
        createdAt: new Date(now.getTime() - 1000),
        startedAt: null,
        completedAt: null,
      };
      this.jobs.set(key, job);
    }
    job.status = status;
    job.conclusion = conclusion;
    if (opts.name) job.name = opts.name;
    if (opts.labels) job.labels = opts.labels;
    if (opts.runnerId !== undefined) job.runnerId = opts.runnerId;
    const taken = status === 'in_progress' || (status === 'completed' && conclusion !== 'skipped');
    if (taken) {
      job.runnerId ??= this.runners.keys().next().value ?? 1;
      job.startedAt ??= now;
    }
    job.completedAt = status === 'completed' ? (job.completedAt ?? now) : null;
  }

  addRunner(
    scope: GitHubScope,
    id: number,
    opts: {
      name?: string;
      labels?: string[];
      os?: 'Linux' | 'Windows' | 'macOS';
      busy?: boolean;
    } = {},
  ): void {
    const os = opts.os ?? 'Linux';
    const readOnly = ['self-hosted', os, 'X64'].map((name) => this.label(name, 'read-only'));
    this.runners.set(id, {
      id,
      scope,
      name: opts.name ?? `gh-runner-${id}`,
      os,
      busy: opts.busy ?? false,
      labels: [...readOnly, ...(opts.labels ?? []).map((n) => this.label(n, 'custom'))],
      changes: [],
    });
  }

  runner(id: number): GitHubRunnerView {
    const r = this.runners.get(id);
    if (!r) throw new Error(`no runner ${id}`);
    return {
      id,
      labels: r.labels.map((l) => l.name),
      custom: r.labels.filter((l) => l.type === 'custom').map((l) => l.name),
      changes: r.changes.map((c) => ({ method: c.method, labels: [...c.labels] })),
    };
  }

  private readonly lateRemovals = new Map<number, number>();

  removalLandsAfterRestore(id: number, times = 1): void {
    this.lateRemovals.set(id, (this.lateRemovals.get(id) ?? 0) + times);
  }

  setCustomLabels(id: number, labels: string[]): void {
    const r = this.runners.get(id);
    if (!r) throw new Error(`no runner ${id}`);
    r.labels = [
      ...r.labels.filter((l) => l.type === 'read-only'),
      ...labels.map((n) => this.label(n, 'custom')),
    ];
  }

  runnersMatching(runsOn: string[]): number[] {
    const wanted = runsOn.map((l) => l.toLowerCase());
    return [...this.runners.values()]
      .filter((r) => {
        const has = new Set(r.labels.map((l) => l.name.toLowerCase()));
        return wanted.every((l) => has.has(l));
      })
      .map((r) => r.id);
  }

  setRateLimit(o: { remaining: number; limit?: number; resetInSeconds?: number }): void {
    this.quota = {
      limit: o.limit ?? this.quota.limit,
      remaining: o.remaining,
      reset: Math.floor(Date.now() / 1000) + (o.resetInSeconds ?? 3600),
    };
  }

  failNext(match: { method?: string; pathIncludes?: string }, fault: GitHubFault, times = 1): void {
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

  // ---- plumbing --------------------------------------------------------------------------------

  /** A label object; ids are stable per name, as GitHub's are per label. */
  private label(name: string, type: Label['type']): Label {
    const key = name.toLowerCase();
    let id = this.labelIds.get(key);
    if (id === undefined) {
      id = 100 + this.labelIds.size;
      this.labelIds.set(key, id);
    }
    return { id, name, type };
  }

  private wait(ms: number): Promise<void> {
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
    path: string,
    kinds: ReadonlyArray<GitHubFault['kind']>,
  ): GitHubFault | undefined {
    const entry = this.faults.find(
      (f) =>
        f.remaining > 0 &&
        kinds.includes(f.fault.kind) &&
        (f.match.method === undefined || f.match.method.toUpperCase() === method) &&
        (f.match.pathIncludes === undefined || path.includes(f.match.pathIncludes)),
    );
    if (!entry) return undefined;
    entry.remaining -= 1;
    if (entry.remaining <= 0) this.faults = this.faults.filter((f) => f !== entry);
    return entry.fault;
  }

  private rateHeaders(): Record<string, string> {
    return {
      'x-ratelimit-limit': String(this.quota.limit),
      'x-ratelimit-remaining': String(this.quota.remaining),
      'x-ratelimit-used': String(this.quota.limit - this.quota.remaining),
      'x-ratelimit-reset': String(this.quota.reset),
      'x-ratelimit-resource': 'core',
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const path = url.pathname;
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const call: GitHubCall = {
      method,
      path,
      body: rawBody,
      auth: this.authOf(req),
      status: 0,
      at: Date.now(),
    };
    this.calls.push(call);

    const send = (status: number, body: unknown, extra: Record<string, string> = {}): void => {
      if (this.closed) return;
      const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
      call.status = status;
      res.writeHead(status, {
        'Content-Type': 'application/json; charset=utf-8',
        'X-GitHub-Api-Version-Selected': '2022-11-28',
        'X-GitHub-Media-Type': 'github.v3; format=json',
        'X-GitHub-Request-Id': `E2E0:${Math.floor(Math.random() * 1e6).toString(16)}`,
        ...this.rateHeaders(),
        ...extra,
        'Content-Length': String(payload.length),
      });
      res.end(payload);
    };
    const error = (status: number, message: string, extra: Record<string, string> = {}) =>
      send(status, { message, documentation_url: DOCS, status: String(status) }, extra);

    const delay = this.takeFault(method, path, ['delay']);
    if (delay?.kind === 'delay') await this.wait(delay.ms);
    if (this.closed) return;

    const fault = this.takeFault(method, path, [
      'http',
      'secondary-rate-limit',
      'primary-rate-limit',
    ]);
    if (fault?.kind === 'http') {
      return send(
        fault.status,
        fault.body ?? { message: 'Injected', status: String(fault.status) },
        fault.headers,
      );
    }
    if (fault?.kind === 'secondary-rate-limit') {
      return error(
        fault.status ?? 403,
        'You have exceeded a secondary rate limit. Please wait a few minutes before you try again.',
        { 'retry-after': String(fault.retryAfterSeconds) },
      );
    }
    if (fault?.kind === 'primary-rate-limit') {
      this.setRateLimit({ remaining: 0, resetInSeconds: fault.resetInSeconds });
      return error(fault.status ?? 403, 'API rate limit exceeded for user ID 4242.');
    }

    if (!req.headers['user-agent']) {
      call.status = 403;
      res.writeHead(403, { 'Content-Type': 'text/plain' });
      res.end(
        'Request forbidden by administrative rules. Please make sure your request has a User-Agent header.\n',
      );
      return;
    }
    if (call.auth === 'none') return error(401, 'Requires authentication');
    if (call.auth === 'bad') return error(401, 'Bad credentials');
    // The quota resets at its time; an exhausted one refuses until then.
    if (Date.now() / 1000 >= this.quota.reset) this.setRateLimit({ remaining: this.quota.limit });
    if (this.quota.remaining <= 0) return error(403, 'API rate limit exceeded for user ID 4242.');
    this.quota.remaining -= 1;

    let body: unknown = undefined;
    if (rawBody.length > 0) {
      try {
        body = JSON.parse(rawBody);
      } catch {
        return error(400, 'Problems parsing JSON');
      }
    }
    call.body = body ?? null;
    try {
      const result = this.route(method, path, body, call.auth === 'admin');
      send(result.status ?? 200, result.body);
    } catch (err) {
      if (err instanceof ApiError) return error(err.status, err.message);
      throw err;
    }
  }

  private authOf(req: IncomingMessage): GitHubCall['auth'] {
    const m = /^(?:Bearer|token)\s+(\S+)$/i.exec(String(req.headers.authorization ?? '').trim());
    if (!m) return 'none';
    return m[1] === this.token ? 'admin' : m[1] === this.readToken ? 'read' : 'bad';
  }

  private route(
    method: string,
    path: string,
    body: unknown,
    admin: boolean,
  ): { status?: number; body: unknown } {
    const segs = path
      .split('/')
      .slice(1)
      .map((s) => decodeURIComponent(s));
    // GET /repos/{owner}/{repo}/actions/jobs/{job_id}
    if (segs[0] === 'repos' && segs[3] === 'actions' && segs[4] === 'jobs' && segs.length === 6) {
      if (method !== 'GET') throw notFound();
      const job = this.jobs.get(`${segs[1]}/${segs[2]}#${Number(segs[5])}`.toLowerCase());
      if (!job || !/^\d+$/.test(segs[5]!)) throw notFound();
      return { body: this.jobJson(job) };
    }
    // /repos/{o}/{r}/actions/runners[...] and /orgs/{org}/actions/runners[...]
    let scope: GitHubScope | undefined;
    let rest: string[] = [];
    if (segs[0] === 'repos' && segs[3] === 'actions' && segs[4] === 'runners') {
      scope = { repo: `${segs[1]}/${segs[2]}` };
      rest = segs.slice(5);
    } else if (segs[0] === 'orgs' && segs[2] === 'actions' && segs[3] === 'runners') {
      scope = { org: segs[1]! };
      rest = segs.slice(4);
    }
    if (!scope) throw notFound();
    if (rest.length === 0 && method === 'GET') {
      const runners = [...this.runners.values()].filter(
        (r) => scopeKey(r.scope) === scopeKey(scope),
      );
      return {
        body: { total_count: runners.length, runners: runners.map((r) => this.runnerJson(r)) },
      };
    }
    const runner = /^\d+$/.test(rest[0] ?? '') ? this.runners.get(Number(rest[0])) : undefined;
    if (!runner || scopeKey(runner.scope) !== scopeKey(scope)) throw notFound();
    if (rest.length === 1 && method === 'GET') return { body: this.runnerJson(runner) };
    if (rest[1] !== 'labels' || rest.length > 3) throw notFound();
    const mutation = method !== 'GET';
    // Changing a runner needs admin rights on the repository (or the organization's runner permission).
    if (mutation && !admin)
      throw new ApiError(
        403,
        `Must have admin rights to ${'repo' in scope ? 'Repository' : 'Organization'}.`,
      );
    if (rest.length === 3) {
      if (method !== 'DELETE') throw notFound();
      const name = rest[2]!.toLowerCase();
      const found = runner.labels.find((l) => l.type === 'custom' && l.name.toLowerCase() === name);
      if (!found) throw notFound();
      runner.labels = runner.labels.filter((l) => l !== found);
      runner.changes.push({ method: 'DELETE', labels: [found.name] });
      return { body: this.labelsJson(runner) };
    }
    if (method === 'GET') return { body: this.labelsJson(runner) };
    if (method === 'DELETE') {
      const gone = runner.labels.filter((l) => l.type === 'custom').map((l) => l.name);
      runner.labels = runner.labels.filter((l) => l.type === 'read-only');
      runner.changes.push({ method: 'DELETE', labels: gone });
      return { body: this.labelsJson(runner) };
    }
    const labels = (body as { labels?: unknown } | undefined)?.labels;
    if (
      !Array.isArray(labels) ||
      !labels.every((l) => typeof l === 'string' && l.length > 0) ||
      (method === 'POST' && labels.length === 0) ||
      labels.length > 100
    )
      throw new ApiError(422, 'Validation Failed');
    const names = labels as string[];
    if (method === 'PUT') {
      this.setCustomLabels(runner.id, names);
      runner.changes.push({ method: 'PUT', labels: [...names] });
      return { body: this.labelsJson(runner) };
    }
    if (method === 'POST') {
      const has = new Set(runner.labels.map((l) => l.name.toLowerCase()));
      for (const n of names) {
        if (!has.has(n.toLowerCase())) runner.labels.push(this.label(n, 'custom'));
        has.add(n.toLowerCase());
      }
      runner.changes.push({ method: 'POST', labels: [...names] });
      const body = this.labelsJson(runner);
      const late = this.lateRemovals.get(runner.id) ?? 0;
      if (late > 0) {
        this.lateRemovals.set(runner.id, late - 1);
        const gone = new Set(names.map((n) => n.toLowerCase()));
        runner.labels = runner.labels.filter(
          (l) => l.type !== 'custom' || !gone.has(l.name.toLowerCase()),
        );
        runner.changes.push({ method: 'DELETE', labels: [...names] });
      }
      return { body };
    }
    throw notFound();
  }

  private labelsJson(r: Runner) {
    return { total_count: r.labels.length, labels: r.labels.map((l) => ({ ...l })) };
  }

  private runnerJson(r: Runner) {
    return {
      id: r.id,
      runner_group_id: 1,
      name: r.name,
      os: r.os,
      status: 'online',
      busy: r.busy,
      ephemeral: false,
      labels: r.labels.map((l) => ({ ...l })),
    };
  }

  private jobJson(j: Job) {
    const iso = (d: Date | null) => (d ? d.toISOString().replace(/\.\d{3}Z$/, 'Z') : null);
    const api = `${this.url}/repos/${j.repo}`;
    const runner = j.runnerId !== null ? this.runners.get(j.runnerId) : undefined;
    const assigned = j.runnerId !== null && j.status !== 'queued' && j.status !== 'waiting';
    return {
      id: j.id,
      run_id: j.runId,
      run_url: `${api}/actions/runs/${j.runId}`,
      run_attempt: 1,
      node_id: `CR_kwDO${j.id.toString(36)}`,
      head_sha: '3484a3fb'.padEnd(40, '0'),
      head_branch: 'main',
      url: `${api}/actions/jobs/${j.id}`,
      html_url: `https://github.com/${j.repo}/actions/runs/${j.runId}/job/${j.id}`,
      status: j.status,
      conclusion: j.conclusion,
      created_at: iso(j.createdAt),
      started_at: iso(j.startedAt ?? j.createdAt),
      completed_at: iso(j.completedAt),
      name: j.name,
      steps: [],
      check_run_url: `${api}/check-runs/${j.id}`,
      labels: [...j.labels],
      runner_id: assigned ? j.runnerId : null,
      runner_name: assigned ? (runner?.name ?? `gh-runner-${j.runnerId}`) : null,
      runner_group_id: assigned ? 1 : null,
      runner_group_name: assigned ? 'Default' : null,
      workflow_name: 'CI',
    };
  }
}

/** Starts a GitHub REST stand-in on 127.0.0.1 (random port). */
export async function startGitHubStandIn(
  opts: { token?: string; readToken?: string } = {},
): Promise<GitHubStandIn> {
  const s = new GhStandIn(
    opts.token ?? 'ghp_e2epoolStandInAdminToken',
    opts.readToken ?? 'ghp_e2epoolStandInReadOnlyToken',
  );
  await s.listen();
  return s;
}
