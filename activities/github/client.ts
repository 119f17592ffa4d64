import type { AxiosResponse } from 'axios';
import type { GitHubRunnerScope } from '../../common/checkpoint';
import { fail } from '../../common/fail';
import type { CiSystem, JobState } from '../ci/system';
import { pathSegment, RestClient, type CiClientOptions } from '../http';
import type { GitHubOp } from '../metrics';

/**
 * A finished GitHub job's `conclusion` → how it ended (as the webhook maps
 * it; see docs/protocol.md#webhooks): `success` → success, `failure` and `timed_out` → failure,
 * `cancelled` (British) → canceled. `skipped`, `neutral` and
 * `action_required` end no e2e run; they count as canceled, so the runner
 * is reset rather than left to the TTL.
 */
const CONCLUSIONS = new Map<unknown, JobState>([
  ['success', 'success'],
  ['failure', 'failure'],
  ['timed_out', 'failure'],
]);
const mapConclusion = (conclusion: unknown): JobState => CONCLUSIONS.get(conclusion) ?? 'canceled';

/** A label of a self-hosted runner: `read-only` ones (self-hosted, OS, arch) cannot be removed. */
export interface RunnerLabel {
  name: string;
  type: 'read-only' | 'custom';
}

/** With no hint in the answer, GitHub says to wait at least a minute before trying again. */
const DEFAULT_RATE_LIMIT_WAIT_MS = 60_000;

/**
 * How long a rate-limited answer asks us to wait, or undefined when it is no
 * rate limit. GitHub answers 403 or 429 for both kinds: a secondary limit
 * may carry `retry-after` (seconds); the primary one says
 * `x-ratelimit-remaining: 0` and when it resets (`x-ratelimit-reset`, epoch
 * seconds). A 403 with neither is a refusal (token, permission), not a limit,
 * unless its message says it is one.
 */
export function rateLimitWaitMs(
  res: Pick<AxiosResponse, 'status' | 'headers' | 'data'>,
  now = Date.now(),
): number | undefined {
  if (res.status !== 403 && res.status !== 429) return undefined;
  const retryAfter = Number(res.headers['retry-after']);
  if (res.headers['retry-after'] !== undefined && Number.isFinite(retryAfter) && retryAfter >= 0)
    return retryAfter * 1000;
  if (String(res.headers['x-ratelimit-remaining']) === '0') {
    const reset = Number(res.headers['x-ratelimit-reset']);
    // At least a second: the reset instant is in whole seconds, and clocks differ.
    return Number.isFinite(reset) ? Math.max(1000, reset * 1000 - now) : DEFAULT_RATE_LIMIT_WAIT_MS;
  }
  const message = (res.data as { message?: unknown } | null)?.message;
  if (res.status === 429 || (typeof message === 'string' && /rate limit/i.test(message)))
    return DEFAULT_RATE_LIMIT_WAIT_MS;
  return undefined;
}

const segment = (what: string, value: string | number) => pathSegment('GitHub', what, value);

/** `/repos/{owner}/{repo}` of an `owner/name`; anything else is refused without a request. */
function repoPath(repo: string): string {
  const parts = repo.split('/');
  if (parts.length !== 2) {
    throw fail('PermanentFailure', `GitHub: repository ${JSON.stringify(repo)} is not owner/name`);
  }
  return `/repos/${segment('owner', parts[0]!)}/${segment('repository', parts[1]!)}`;
}

function runnerPath(scope: GitHubRunnerScope, runnerId: number): string {
  const base =
    'repo' in scope ? repoPath(scope.repo) : `/orgs/${segment('organization', scope.org)}`;
  return `${base}/actions/runners/${segment('runner id', runnerId)}`;
}

/**
 * GitHub REST: a job's status, and a self-hosted runner's labels (GitHub's
 * only way to keep jobs off a runner). Failures are classified here.
 */
export class GitHubClient extends RestClient<GitHubOp> implements CiSystem {
  constructor(
    baseUrl: string,
    token: string,
    timeoutMs: number,
    options: CiClientOptions<GitHubOp> = {},
  ) {
    super({
      service: 'GitHub',
      baseURL: baseUrl.replace(/\/+$/, ''),
      timeoutMs,
      headers: {
        Authorization: `Bearer ${token}`,
        Accept: 'application/vnd.github+json',
        'X-GitHub-Api-Version': '2022-11-28',
        // GitHub refuses requests without a User-Agent.
        'User-Agent': 'e2epool',
      },
      rateLimitWait: (res) => rateLimitWaitMs(res),
      onResponse: options.onResponse,
    });
  }

  private call<T>(
    op: GitHubOp,
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    body?: unknown,
    notFoundIsAnswer = false,
  ): Promise<{ status: number; data: T }> {
    return this.send<T>(op, {
      method,
      path,
      data: body,
      accept: notFoundIsAnswer ? [404] : undefined,
    });
  }

  /** The job's state; `running` until GitHub says it completed (queued, waiting, in_progress…). */
  async jobState(repo: string, jobId: string): Promise<JobState> {
    const { data } = await this.call<{ status?: string; conclusion?: string | null }>(
      'job_status',
      'GET',
      `${repoPath(repo)}/actions/jobs/${segment('job id', jobId)}`,
    );
    return data.status === 'completed' ? mapConclusion(data.conclusion) : 'running';
  }

  /** The runner's labels now, read-only ones included. */
  async runnerLabels(scope: GitHubRunnerScope, runnerId: number): Promise<RunnerLabel[]> {
    const { data } = await this.call<{ labels?: RunnerLabel[] }>(
      'runner_labels',
      'GET',
      `${runnerPath(scope, runnerId)}/labels`,
    );
    return data.labels ?? [];
  }

  /**
   * Removes one custom label: true when it went, false when GitHub answered
   * 404, which it does when the runner does not carry the label, and also
   * when there is no such runner: the caller tells which by reading the
   * labels again.
   */
  async removeLabel(scope: GitHubRunnerScope, runnerId: number, label: string): Promise<boolean> {
    const { status } = await this.call(
      'label_remove',
      'DELETE',
      `${runnerPath(scope, runnerId)}/labels/${segment('label', label)}`,
      undefined,
      true,
    );
    return status !== 404;
  }

  /** Adds custom labels (the ones it already has stay as they are). */
  async addLabels(
    scope: GitHubRunnerScope,
    runnerId: number,
    labels: string[],
  ): Promise<RunnerLabel[]> {
    const { data } = await this.call<{ labels?: RunnerLabel[] }>(
      'label_add',
      'POST',
      `${runnerPath(scope, runnerId)}/labels`,
      { labels },
    );
    return data.labels ?? [];
  }
}
