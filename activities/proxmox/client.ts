import type { Agent as HttpsAgent } from 'node:https';
import type { AxiosInstance, AxiosResponse } from 'axios';
import { fail } from '../../common/fail';
import { heartbeating } from '../context';
import { createHttp } from '../http';

/** Proxmox VE API coordinates of one VM (secrets stay in the worker: never in workflow history). */
export interface ProxmoxTarget {
  baseUrl: string;
  node: string;
  vmid: number;
  /** `user@realm!tokenname` */
  tokenId: string;
  tokenSecret: string;
  httpsAgent?: HttpsAgent;
  timeoutMs: number;
}

/** The fields of a Proxmox snapshot entry that e2epool reads. */
export interface SnapshotInfo {
  name: string;
  description: string;
  /** Set while the snapshot is being made (or was left half-made). */
  snapstate?: string;
}

/** The fields of a VM's current status that e2epool reads. */
export interface VmStatus {
  status: 'running' | 'stopped';
  lock?: string;
}

/** A task that ended with an error exit status (locks and duplicate names surface here). */
export class ProxmoxTaskError extends Error {
  override name = 'ProxmoxTaskError';
  constructor(readonly exitstatus: string) {
    super(`Proxmox task failed: ${exitstatus}`);
  }
}

const UPID_RE =
  /^UPID:([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?):[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:[0-9A-Fa-f]{8}:([^:\s/]+):([^:\s/]*):([^:\s/]+):$/;
const TRANSPORT_STATUSES = new Set([502, 503, 504, 595, 596, 597, 599]);
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNABORTED',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

/** Task exit statuses that mean success: `OK` and `WARNINGS: n`. */
function taskSucceeded(exitstatus: string | undefined): boolean {
  return exitstatus === 'OK' || /^WARNINGS: \d+$/.test(exitstatus ?? '');
}

/** Whether a failed task ended on a transient condition (a lock held by another operation). */
export function isTransientTaskError(exitstatus: string): boolean {
  return /^VM is locked|can't lock file|got timeout|Failed to obtain guest migration lock/.test(
    exitstatus,
  );
}

function form(params: Record<string, string | number | boolean | undefined>): URLSearchParams {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    // The API accepts only 1/0 for booleans in form and query encoding.
    out.set(k, typeof v === 'boolean' ? (v ? '1' : '0') : String(v));
  }
  return out;
}

/**
 * A thin Proxmox VE REST client for one VM. Every call's failure is
 * classified here: transport trouble and 5xx are transient; auth, permission,
 * bad parameters and missing VMs are permanent.
 */
export class ProxmoxClient {
  private readonly http: AxiosInstance;
  private readonly vmPath: string;

  constructor(private readonly t: ProxmoxTarget) {
    this.http = createHttp({
      baseURL: `${t.baseUrl}/api2/json`,
      timeoutMs: t.timeoutMs,
      httpsAgent: t.httpsAgent,
      headers: { Authorization: `PVEAPIToken=${t.tokenId}=${t.tokenSecret}` },
      // Errors come back with JSON bodies or none at all; parse leniently.
      transitional: { silentJSONParsing: true, forcedJSONParsing: true, clarifyTimeoutError: true },
    });
    this.vmPath = `/nodes/${encodeURIComponent(t.node)}/qemu/${t.vmid}`;
  }

  private async call<T>(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    params?: Record<string, string | number | boolean | undefined>,
  ): Promise<T> {
    const what = `${method} ${path}`;
    let res: AxiosResponse;
    try {
      // Inside an activity, beat while the request is pending: one slow call
      // (up to the HTTP timeout) must not outlast the step's heartbeat timeout.
      res = await heartbeating(
        this.http.request({
          method,
          url: path,
          // GET/DELETE parameters go in the query string: a body there is a 501.
          params: method === 'POST' ? undefined : params && form(params),
          data: method === 'POST' && params ? form(params).toString() : undefined,
          headers:
            method === 'POST' ? { 'Content-Type': 'application/x-www-form-urlencoded' } : undefined,
        }),
      );
    } catch (err) {
      throw classifyTransportError(err, what, this.t.baseUrl);
    }
    if (res.status >= 200 && res.status < 300) return (res.data as { data: T }).data;
    throw classifyHttpError(res, what);
  }

  /**
   * The token's effective privileges on `path` (`GET /access/permissions`:
   * "Retrieve effective permissions of given user/token"; without `userid` the
   * caller's own, which any token may read; with privilege separation the
   * intersection of its user's and its own ACLs). Privilege → propagate flag.
   */
  async permissions(path: string): Promise<Record<string, number>> {
    const all = await this.call<Record<string, Record<string, number>>>(
      'GET',
      '/access/permissions',
      { path },
    );
    return all?.[path] ?? {};
  }

  /** The path the privileges of this VM's calls are checked on. */
  get aclPath(): string {
    return `/vms/${this.t.vmid}`;
  }

  async vmStatus(): Promise<VmStatus> {
    return this.call<VmStatus>('GET', `${this.vmPath}/status/current`);
  }

  /** Snapshots of the VM, without the `current` pseudo-entry. */
  async listSnapshots(): Promise<SnapshotInfo[]> {
    const list = await this.call<SnapshotInfo[]>('GET', `${this.vmPath}/snapshot`);
    return list.filter((s) => s.name !== 'current');
  }

  createSnapshot(name: string, description: string): Promise<string> {
    return this.call('POST', `${this.vmPath}/snapshot`, {
      snapname: name,
      description,
      vmstate: false,
    });
  }

  deleteSnapshot(name: string): Promise<string> {
    return this.call('DELETE', `${this.vmPath}/snapshot/${encodeURIComponent(name)}`);
  }

  rollback(name: string): Promise<string> {
    return this.call('POST', `${this.vmPath}/snapshot/${encodeURIComponent(name)}/rollback`, {
      start: false,
    });
  }

  stop(): Promise<string> {
    return this.call('POST', `${this.vmPath}/status/stop`);
  }

  start(): Promise<string> {
    return this.call('POST', `${this.vmPath}/status/start`);
  }

  /**
   * Waits for a task to stop and checks its exit status: resolves on `OK` or
   * `WARNINGS: n`, rejects with ProxmoxTaskError otherwise. `onPoll` runs on
   * every poll (activities heartbeat there).
   */
  async waitTask(
    upid: string,
    opts: { timeoutMs: number; pollMs: number; onPoll?: () => void },
  ): Promise<string> {
    const m = UPID_RE.exec(upid);
    if (!m)
      throw fail(
        'PermanentFailure',
        `Proxmox returned an unparsable task id: ${JSON.stringify(upid).slice(0, 120)}`,
      );
    const path = `/nodes/${encodeURIComponent(m[1]!)}/tasks/${encodeURIComponent(upid)}/status`;
    const deadline = Date.now() + opts.timeoutMs;
    for (;;) {
      opts.onPoll?.();
      const st = await this.call<{ status: string; exitstatus?: string }>('GET', path);
      if (st.status === 'stopped') {
        if (taskSucceeded(st.exitstatus)) return st.exitstatus!;
        throw new ProxmoxTaskError(st.exitstatus ?? 'unknown exit status');
      }
      if (Date.now() >= deadline) {
        throw fail(
          'BackendTimeout',
          `Proxmox task ${m[3]} on VM ${this.t.vmid} still running after ${Math.round(opts.timeoutMs / 1000)}s`,
        );
      }
      await new Promise((r) => setTimeout(r, opts.pollMs));
    }
  }
}

function reasonOf(res: AxiosResponse): string {
  const data = res.data as { message?: unknown; errors?: unknown } | string | undefined;
  const fromBody =
    typeof data === 'object' && data && typeof data.message === 'string' ? data.message.trim() : '';
  const reason = (res.statusText || fromBody || `HTTP ${res.status}`).split('\n')[0]!;
  const errors =
    typeof data === 'object' && data && data.errors ? ` ${JSON.stringify(data.errors)}` : '';
  return `${reason}${errors}`;
}

function classifyHttpError(res: AxiosResponse, what: string) {
  const reason = reasonOf(res);
  const msg = `Proxmox ${what}: ${res.status} ${reason}`;
  if (res.status === 401)
    return fail('PermanentFailure', `Proxmox rejected the API token (${res.status} ${reason})`);
  if (res.status === 403) return fail('PermanentFailure', `Proxmox denied permission: ${reason}`);
  if (res.status === 400 || res.status === 501) return fail('PermanentFailure', msg);
  if (res.status === 500 && /Configuration file .* does not exist/.test(reason))
    return fail('PermanentFailure', `Proxmox: VM not found (${reason})`);
  if (TRANSPORT_STATUSES.has(res.status) || res.status >= 500)
    return fail('ProxmoxUnavailable', msg);
  return fail('PermanentFailure', msg);
}

function classifyTransportError(err: unknown, what: string, baseUrl: string) {
  const e = err as { code?: string; message?: string };
  const code = e.code ?? '';
  if (
    code === 'E2EPOOL_FINGERPRINT_MISMATCH' ||
    /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)
  ) {
    return fail(
      'PermanentFailure',
      `Proxmox at ${baseUrl}: TLS verification failed (${code}: ${e.message}); set proxmox_ca_file or proxmox_fingerprint for this runner`,
    );
  }
  if (TRANSIENT_CODES.has(code) || /timeout/i.test(e.message ?? '')) {
    return fail(
      code === 'ETIMEDOUT' || code === 'ECONNABORTED' ? 'BackendTimeout' : 'ProxmoxUnavailable',
      `Proxmox ${what}: ${code || e.message}`,
    );
  }
  return fail('ProxmoxUnavailable', `Proxmox ${what}: ${code || e.message || 'request failed'}`);
}
