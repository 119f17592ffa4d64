import type { CiSystem, JobState } from '../ci/system';
import { pathSegment, RestClient, type CiClientOptions } from '../http';
import type { GitLabOp } from '../metrics';

export type { JobState };

/**
 * GitLab job statuses → what they mean for a checkpoint: `success` → success,
 * `failed` → failure, `canceled` and `skipped` → canceled; `canceling`,
 * `manual`, `scheduled` and the rest mean the job is still running.
 */
const JOB_STATES = new Map<string, JobState>([
  ['success', 'success'],
  ['failed', 'failure'],
  ['canceled', 'canceled'],
  ['skipped', 'canceled'],
]);
const mapJobStatus = (status: string): JobState => JOB_STATES.get(status) ?? 'running';

const segment = (what: string, value: string | number) => pathSegment('GitLab', what, value);

/** The wait after a 429 when GitLab names none. */
export const RATE_LIMIT_DEFAULT_WAIT_MS = 60_000;
/** The longest wait a 429 can ask for: a bad clock or header must not park a reset for hours. */
export const RATE_LIMIT_MAX_WAIT_MS = 15 * 60_000;

/**
 * How long to wait after a 429, in GitLab Runner's own order: the
 * `RateLimit-ResetTime` date, else `Retry-After` (seconds, or an HTTP date),
 * else the `RateLimit-Reset` Unix time, else a minute. A reset time in the
 * past means "now". Clamped to RATE_LIMIT_MAX_WAIT_MS.
 */
export function rateLimitWaitMs(
  headers: Record<string, unknown>,
  now: number = Date.now(),
): number {
  const header = (name: string) => {
    const v = headers[name];
    return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
  };
  const untilDate = (v: string | undefined) => {
    // HTTP dates name the day and month; Date.parse would read "-3" as a year.
    if (v === undefined || !/^[A-Za-z]{3},? /.test(v)) return undefined;
    const at = Date.parse(v);
    return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
  };
  const seconds = (v: string | undefined) =>
    v !== undefined && /^\d+(\.\d+)?$/.test(v) ? Number(v) * 1000 : undefined;
  const unixTime = (v: string | undefined) =>
    v !== undefined && /^\d+$/.test(v) ? Math.max(0, Number(v) * 1000 - now) : undefined;
  const retryAfter = header('retry-after');
  const wait =
    untilDate(header('ratelimit-resettime')) ??
    seconds(retryAfter) ??
    untilDate(retryAfter) ??
    unixTime(header('ratelimit-reset')) ??
    RATE_LIMIT_DEFAULT_WAIT_MS;
  return Math.min(wait, RATE_LIMIT_MAX_WAIT_MS);
}

/** GitLab REST v4: job status and runner pause. Failures are classified here (see RestClient). */
export class GitLabClient extends RestClient<GitLabOp> implements CiSystem {
  constructor(
    baseUrl: string,
    token: string,
    timeoutMs: number,
    options: CiClientOptions<GitLabOp> = {},
  ) {
    super({
      service: 'GitLab',
      baseURL: `${baseUrl.replace(/\/+$/, '')}/api/v4`,
      timeoutMs,
      headers: { 'PRIVATE-TOKEN': token },
      rateLimitWait: (res) =>
        res.status === 429 ? rateLimitWaitMs(res.headers as Record<string, unknown>) : undefined,
      onResponse: options.onResponse,
    });
  }

  private async call<T>(
    op: GitLabOp,
    method: 'GET' | 'PUT',
    path: string,
    form?: Record<string, string>,
  ): Promise<T> {
    const { data } = await this.send<T>(op, {
      method,
      path,
      data: form ? new URLSearchParams(form).toString() : undefined,
      headers: form ? { 'Content-Type': 'application/x-www-form-urlencoded' } : undefined,
    });
    return data;
  }

  /** The job's status through the project jobs API (the global /jobs/:id is not public). */
  async jobState(projectId: string, jobId: string): Promise<JobState> {
    const job = await this.call<{ status: string }>(
      'job_status',
      'GET',
      `/projects/${segment('project id', projectId)}/jobs/${segment('job id', jobId)}`,
    );
    return mapJobStatus(job.status);
  }

  async runnerPaused(runnerId: number): Promise<boolean> {
    const r = await this.call<{ paused?: boolean; active?: boolean }>(
      'runner_get',
      'GET',
      `/runners/${segment('runner id', runnerId)}`,
    );
    return r.paused ?? r.active === false;
  }

  /**
   * The scopes of the token itself, through `GET /personal_access_tokens/self`
   * (GitLab 15.5+; any scope may call it, so a token can inspect itself:
   * docs.gitlab.com/api/personal_access_tokens, issue gitlab-org/gitlab#373999,
   * python-gitlab's `personal_access_tokens.get("self")`). Personal, project
   * and group access tokens all answer; null when GitLab answers 404 (an
   * older GitLab, or a token of another kind, e.g. OAuth).
   */
  async tokenScopes(): Promise<string[] | null> {
    try {
      const t = await this.call<{ scopes?: unknown }>(
        'token_self',
        'GET',
        '/personal_access_tokens/self',
      );
      return Array.isArray(t.scopes) ? t.scopes.map(String) : [];
    } catch (err) {
      if (/: 404 /.test((err as Error).message)) return null;
      throw err;
    }
  }

  /** Pauses or unpauses with `paused` (not the deprecated `active`). */
  async setPaused(runnerId: number, paused: boolean): Promise<void> {
    await this.call(
      paused ? 'runner_pause' : 'runner_unpause',
      'PUT',
      `/runners/${segment('runner id', runnerId)}`,
      {
        paused: paused ? 'true' : 'false',
      },
    );
  }
}
