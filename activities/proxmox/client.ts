import type { Agent as HttpsAgent } from 'node:https';
import type { AxiosInstance, AxiosResponse } from 'axios';
import { fail, failureTypeOf } from '../../common/fail';
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

/** What a command run in the guest through the QEMU guest agent ended with. */
export interface GuestExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** The most `agent/file-write` takes in `content` (characters). */
export const GUEST_FILE_WRITE_MAX = 61440;

/**
 * Whether a VM's `agent` option enables the QEMU guest agent: `1`, `enabled=1` or
 * `enabled=1,fstrim_cloned_disks=1,...` (the first value without a key is `enabled`).
 */
export function agentOptionEnabled(option: unknown): boolean {
  if (option === 1 || option === true) return true;
  if (typeof option !== 'string') return false;
  for (const part of option.split(',')) {
    const eq = part.indexOf('=');
    const [key, value] = eq < 0 ? ['enabled', part] : [part.slice(0, eq), part.slice(eq + 1)];
    if (key.trim() === 'enabled') return value.trim() === '1';
  }
  return false;
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

type ParamValue = string | number | boolean | string[] | undefined;

function form(params: Record<string, ParamValue>): URLSearchParams {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    // An array is a repeated field (agent/exec's argv).
    if (Array.isArray(v)) for (const item of v) out.append(k, item);
    // The API accepts only 1/0 for booleans in form and query encoding.
    else out.set(k, typeof v === 'boolean' ? (v ? '1' : '0') : String(v));
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
    params?: Record<string, ParamValue>,
  ): Promise<T> {
    const res = await this.request(method, path, params);
    if (res.status >= 200 && res.status < 300) return (res.data as { data: T }).data;
    throw classifyHttpError(res, `${method} ${path}`);
  }

  /** The response of one call (any HTTP status); transport failures are classified here. */
  private async request(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    params?: Record<string, ParamValue>,
  ): Promise<AxiosResponse> {
    try {
      // Inside an activity, beat while the request is pending: one slow call
      // (up to the HTTP timeout) must not outlast the step's heartbeat timeout.
      return await heartbeating(
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
      throw classifyTransportError(err, `${method} ${path}`, this.t.baseUrl);
    }
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

  /** The snapshot the VM now descends from (`current`'s `parent` in the list); null: none. */
  async currentParent(): Promise<string | null> {
    const list = await this.call<Array<{ name: string; parent?: string }>>(
      'GET',
      `${this.vmPath}/snapshot`,
    );
    return list.find((s) => s.name === 'current')?.parent ?? null;
  }

  /** Whether the VM's `agent` option enables the QEMU guest agent (it must also run in the guest). */
  async vmAgentEnabled(): Promise<boolean> {
    const config = await this.call<{ agent?: unknown }>('GET', `${this.vmPath}/config`);
    return agentOptionEnabled(config?.agent);
  }

  /**
   * Resolves when the guest agent answers; GuestAgentUnavailable when it cannot (the option is
   * off, qemu-ga does not run, or the VM is off): "cannot verify", never "verified".
   */
  async guestPing(): Promise<void> {
    await this.call('POST', `${this.vmPath}/agent/ping`);
  }

  /**
   * qemu-ga's version and which of its commands are enabled (`GET agent/info`, read-only; a
   * guest may run it with `--block-rpcs`, e.g. without guest-exec or guest-file-*).
   */
  async guestInfo(): Promise<{ version: string; commands: Record<string, boolean> }> {
    const data = await this.call<{
      result?: { version?: string; supported_commands?: Array<{ name: string; enabled: boolean }> };
    }>('GET', `${this.vmPath}/agent/info`);
    const commands = Object.fromEntries(
      (data?.result?.supported_commands ?? []).map((c) => [c.name, c.enabled !== false]),
    );
    return { version: String(data?.result?.version ?? 'unknown'), commands };
  }

  /**
   * Waits until the guest agent answers (qemu-ga starts only once the guest has booted):
   * pings every `pollMs` (default 500 ms) while it is GuestAgentUnavailable, and rethrows that
   * after `timeoutMs`. Any other failure is thrown at once. `onPoll` runs on every poll.
   */
  async waitGuestAgent(opts: {
    timeoutMs: number;
    pollMs?: number;
    onPoll?: () => void;
  }): Promise<void> {
    const deadline = Date.now() + opts.timeoutMs;
    for (;;) {
      opts.onPoll?.();
      try {
        return await this.guestPing();
      } catch (err) {
        if (failureTypeOf(err) !== 'GuestAgentUnavailable' || Date.now() >= deadline) throw err;
      }
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 500));
    }
  }

  /**
   * Writes `content` to `path` in the guest (replacing the file). Proxmox base64-encodes it for
   * QEMU (`encode` left at its default); at most GUEST_FILE_WRITE_MAX characters. The file's
   * directory must exist in the guest.
   */
  async guestFileWrite(path: string, content: string): Promise<void> {
    if (content.length > GUEST_FILE_WRITE_MAX) {
      throw fail(
        'PermanentFailure',
        `guest file ${path}: ${content.length} characters, Proxmox takes at most ${GUEST_FILE_WRITE_MAX}`,
      );
    }
    await this.call('POST', `${this.vmPath}/agent/file-write`, { file: path, content });
  }

  /**
   * The content of `path` in the guest; null exactly when Proxmox says the file does not exist
   * (`No such file or directory`), as after a rollback to before it was written.
   */
  async guestFileRead(path: string): Promise<string | null> {
    const what = `GET ${this.vmPath}/agent/file-read`;
    const res = await this.request('GET', `${this.vmPath}/agent/file-read`, { file: path });
    if (res.status >= 200 && res.status < 300) {
      const data = (res.data as { data?: { content?: unknown } }).data;
      if (typeof data?.content !== 'string') {
        throw fail('ProxmoxUnavailable', `Proxmox ${what}: answer without content`);
      }
      return data.content;
    }
    if (res.status === 500 && /No such file or directory/.test(reasonOf(res))) return null;
    throw classifyHttpError(res, what);
  }

  /**
   * Runs `argv` in the guest through the agent (no shell unless argv asks for one) and polls
   * exec-status every `pollMs` (default 200 ms) until it has exited; BackendTimeout after
   * `timeoutMs`; `onPoll` runs on every poll (activities heartbeat there: a long command
   * outlasts any heartbeat timeout). A command that cannot be started at all fails as ProxmoxUnavailable or
   * PermanentFailure as Proxmox answers; an agent that does not answer is GuestAgentUnavailable.
   */
  async guestExec(
    argv: string[],
    opts: { input?: string; timeoutMs: number; pollMs?: number; onPoll?: () => void },
  ): Promise<GuestExecResult> {
    if (argv.length === 0) throw fail('PermanentFailure', 'guest command: empty argv');
    const { pid } = await this.call<{ pid: number }>('POST', `${this.vmPath}/agent/exec`, {
      command: argv,
      'input-data': opts.input,
    });
    const deadline = Date.now() + opts.timeoutMs;
    for (;;) {
      opts.onPoll?.();
      const st = await this.call<{
        exited?: unknown;
        exitcode?: number;
        'out-data'?: string;
        'err-data'?: string;
      }>('GET', `${this.vmPath}/agent/exec-status`, { pid });
      // QEMU's boolean: 1/0 through Proxmox, true/false in some versions.
      if (st.exited === 1 || st.exited === true) {
        return {
          exitCode: typeof st.exitcode === 'number' ? st.exitcode : -1,
          stdout: st['out-data'] ?? '',
          stderr: st['err-data'] ?? '',
        };
      }
      if (Date.now() >= deadline) {
        throw fail(
          'BackendTimeout',
          `guest command ${JSON.stringify(argv[0])} on VM ${this.t.vmid} still running after ${Math.round(opts.timeoutMs / 1000)}s`,
        );
      }
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 200));
    }
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

/**
 * PVE's `assert_agent_available` and qemu-ga's silence: the option unset or off, the VM off,
 * the agent not running or not answering (a QMP `got timeout` on a guest command), or the
 * command disabled in the guest (qemu-ga `--block-rpcs`).
 */
const AGENT_UNAVAILABLE_RE =
  /^(No QEMU guest agent configured|QEMU guest agent is not (running|enabled)|VM \d+ is not running|VM \d+ qmp command 'guest-[\w-]+' failed - (got timeout|The command [\w-]+ has been disabled))/;

function classifyHttpError(res: AxiosResponse, what: string) {
  const reason = reasonOf(res);
  const msg = `Proxmox ${what}: ${res.status} ${reason}`;
  if (res.status === 500 && what.includes('/agent/')) {
    if (AGENT_UNAVAILABLE_RE.test(reason))
      return fail('GuestAgentUnavailable', `Proxmox: the guest agent cannot be asked (${reason})`);
    // The guest command itself failed (a missing directory, a program that does not exist):
    // the agent answered, and asking again gets the same answer.
    if (/^VM \d+ qmp command 'guest-[\w-]+' failed - /.test(reason))
      return fail('PermanentFailure', `Proxmox: the guest refused: ${reason}`);
  }
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
