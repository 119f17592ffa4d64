/**
 * The HTTP plumbing the GitLab, GitHub and Proxmox clients share: one axios
 * instance per API, path segments that cannot climb out of their route, and
 * (for the CI systems) the classification of every answer into transient,
 * permanent and rate-limited failures.
 *
 * Secrets: the token travels only in the instance's default headers. Failure
 * messages name the method, the path and at most 300 characters of the
 * answer's body, never a header, and no axios error (whose config holds the
 * headers) is kept as a cause.
 */
import type { Agent as HttpsAgent } from 'node:https';
import axios, { type AxiosInstance, type AxiosResponse, type CreateAxiosDefaults } from 'axios';
import { fail, noAnswer } from '../common/fail';
import type { FailureType } from '../common/failures';

export interface HttpOptions {
  baseURL: string;
  timeoutMs: number;
  /** Sent with every request: the auth header goes here. */
  headers: Record<string, string>;
  httpsAgent?: HttpsAgent;
  transitional?: CreateAxiosDefaults['transitional'];
}

/**
 * An axios instance for one API. Every status comes back as an answer (the
 * client classifies it), and no redirect is followed: it would carry the
 * auth header to wherever it points.
 */
export function createHttp(o: HttpOptions): AxiosInstance {
  return axios.create({
    baseURL: o.baseURL,
    timeout: o.timeoutMs,
    headers: o.headers,
    ...(o.httpsAgent ? { httpsAgent: o.httpsAgent } : {}),
    ...(o.transitional ? { transitional: o.transitional } : {}),
    validateStatus: () => true,
    maxRedirects: 0,
  });
}

/**
 * One path segment: percent-encoded, and never empty, `.` or `..`, which URL
 * resolution would drop or climb with (`/projects/../jobs/5` is `/jobs/5`).
 */
export function pathSegment(service: string, what: string, value: string | number): string {
  const s = String(value);
  if (s === '' || s === '.' || s === '..') {
    throw fail(
      'PermanentFailure',
      `${service}: ${what} ${JSON.stringify(s)} is not a path segment`,
    );
  }
  return encodeURIComponent(s);
}

/** An answer's body for a failure message: at most 300 characters. */
function bodyText(data: unknown): string {
  return typeof data === 'object' && data
    ? JSON.stringify(data).slice(0, 300)
    : String(data ?? '')
        .trim()
        .slice(0, 300);
}

/** What every CI client takes besides its address and token. */
export interface CiClientOptions<Op extends string> {
  /**
   * Told of every request as it ends: its operation and HTTP status, or
   * `error` when no response came (e2epool_<service>_requests_total).
   */
  onResponse?: (op: Op, code: string) => void;
}

/**
 * How a CI system's REST API is reached and answers. No answer, or a 5xx,
 * is `<service>Unavailable` (transient); a rate limit `<service>RateLimited`
 * (transient, and the next attempt waits as asked); anything else permanent.
 */
export interface RestApi<Op extends string> extends HttpOptions, CiClientOptions<Op> {
  service: 'GitLab' | 'GitHub';
  /** How long a rate-limited answer asks to wait; undefined: it is no rate limit. */
  rateLimitWait: (res: AxiosResponse) => number | undefined;
}

export interface RestCall {
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  path: string;
  data?: unknown;
  headers?: Record<string, string>;
  /** Statuses besides 2xx that are an answer, not a failure (GitHub's 404 of a label). */
  accept?: number[];
}

/**
 * A CI system's REST API, the base of its client: sends a call, counts it,
 * and classifies its failure.
 */
export class RestClient<Op extends string> {
  /** How messages name the CI system. */
  readonly name: RestApi<Op>['service'];
  private readonly http: AxiosInstance;
  private readonly unavailable: FailureType;

  constructor(private readonly api: RestApi<Op>) {
    this.name = api.service;
    this.http = createHttp(api);
    this.unavailable = `${api.service}Unavailable`;
  }

  protected async send<T>(op: Op, call: RestCall): Promise<{ status: number; data: T }> {
    const { service, onResponse } = this.api;
    const what = `${call.method} ${call.path}`;
    let res: AxiosResponse;
    try {
      res = await this.http.request({
        method: call.method,
        url: call.path,
        data: call.data,
        headers: call.headers,
      });
    } catch (err) {
      onResponse?.(op, 'error');
      throw noAnswer(service, this.unavailable, what, err);
    }
    onResponse?.(op, String(res.status));
    if ((res.status >= 200 && res.status < 300) || call.accept?.includes(res.status))
      return { status: res.status, data: res.data as T };
    const msg = `${service} ${what}: ${res.status} ${bodyText(res.data)}`;
    const wait = this.api.rateLimitWait(res);
    // The next attempt (or poll) waits as long as the API asked (callers bound the whole wait).
    if (wait !== undefined) throw fail(`${service}RateLimited`, msg, { nextRetryDelayMs: wait });
    if (res.status >= 500) throw fail(this.unavailable, msg);
    throw fail('PermanentFailure', msg);
  }
}
