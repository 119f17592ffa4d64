/**
 * A stand-in for the Proxmox VE API (`/api2/json`) that integration tests run over real HTTP.
 *
 * It copies the server's observable behaviour, not just the happy path, because the product
 * must cope with the real thing:
 * - errors travel in the HTTP reason phrase and in `{"data":null,"message":...}`; transport-level
 *   rejections (401, bodies on GET/DELETE, chunked uploads) have no body at all, as in pveproxy;
 * - every mutation answers 200 + UPID at once and fails, if it fails, only in the task's
 *   `exitstatus` (locks, duplicate names, missing snapshots, an already running VM);
 * - booleans in form or query encoding must be `1`/`0`, snapshot names follow `pve-configid`,
 *   unknown parameters are rejected, DELETE parameters belong in the query string;
 * - the snapshot list is unsorted with `current` last, and `lock` is absent when unlocked;
 * - the token's privileges on `/vms` (an ACL that propagates; reference §1.2, §1.12) are checked
 *   before each handler runs, as PVE's `permissions => { check => ['perm', '/vms/{vmid}', ...] }`
 *   does: 403 `Permission check failed (/vms/100, VM.PowerMgmt)`. `GET /access/permissions`
 *   ("Retrieve effective permissions of given user/token"; `path` narrows it to one path,
 *   `userid` names another user or token, which needs Sys.Audit on /access) answers
 *   `{path: {privilege: propagate 0|1}}`;
 * - each VM has a guest filesystem that snapshots keep and rollbacks restore, and the QEMU guest
 *   agent endpoints (`agent/ping`, `file-write`, `file-read`, `exec`, `exec-status`, `info`)
 *   with PVE 8 or PVE 9 privileges (`pveVersion`): test/stand-ins/proxmox/guest.ts. A test
 *   reads or seeds the guest through `vm(...).files`, runs `exec` through `setExecHandler`, and
 *   makes a rollback leave the disk as it was with the `disk-not-restored` fault.
 * Sources are named in /work/shared/reference/external-apis.md (section 1).
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';

import {
  CONFIGID_RE,
  die,
  decodeUrlencoded,
  hex8,
  isTrue,
  jsonToParams,
  MAX_POST_BYTES,
  nowSec,
  NODE,
  OPT_BOOL,
  OPT_TIMEOUT,
  paramExc,
  paramsForLog,
  PveError,
  safeUnescape,
  SNAPNAME,
  TaskFailure,
  TOKEN_ID_RE,
  UPID_RE,
  validateParams,
  VM_PATH,
  type Ctx,
  type ParamValue,
  type Params,
  type RequestInfo,
  type Route,
  type TaskType,
} from './proxmox/http';
import {
  agentEnabled,
  agentRoutes,
  captureDisk,
  DEFAULT_GUEST_DIRS,
  defaultGuestExec,
  guestAgentRunning,
  guestPoweredOff,
  restoreDisk,
  type DiskImage,
  type GuestExecHandler,
  type GuestState,
} from './proxmox/guest';

export type { TaskType } from './proxmox/http';
export {
  agentEnabled,
  DEFAULT_GUEST_DIRS,
  defaultGuestExec,
  type GuestExecHandler,
  type GuestExecResult,
} from './proxmox/guest';

export type ProxmoxFault =
  /** Respond with this status and reason phrase (+ JSON `{"data":null,"message":reason+"\n"}`) instead of handling. */
  | { kind: 'http'; status: number; reason: string }
  /** Accept the call (200 + UPID); the task ends stopped with this exitstatus and has no effect. */
  | { kind: 'task'; exitstatus: string }
  /** The task succeeds (has its effect) with exitstatus `WARNINGS: <count>`. */
  | { kind: 'warnings'; count: number }
  /** Delay the HTTP response by `ms`, then handle the request normally. */
  | { kind: 'delay'; ms: number }
  /** The task stays `running` until `clearFaults()`, then completes normally. */
  | { kind: 'hang' }
  /**
   * A storage bug (match `taskType: 'qmrollback'`): the rollback task ends `OK` and the config
   * says the VM descends from the snapshot (`current.parent`; unchanged too with `keepParent`),
   * but the disk was not restored: the guest filesystem keeps what it held.
   */
  | { kind: 'disk-not-restored'; keepParent?: boolean };

export interface FaultMatch {
  method?: string;
  pathIncludes?: string;
  taskType?: TaskType;
}

export interface ProxmoxCall {
  method: string;
  /** The URI-unescaped path, as pveproxy sees it (e.g. `/api2/json/nodes/pve1/tasks/UPID:.../status`). */
  path: string;
  query: Record<string, string>;
  body: Record<string, string>;
  /** 0 until the response has been sent. */
  status: number;
  at: number;
}

export interface SnapshotState {
  name: string;
  description: string;
  snaptime: number;
  vmstate: 0 | 1;
  parent?: string;
  snapstate?: 'prepare' | 'delete';
}

/**
 * A VM's live state. Its guest part (GuestState, test/stand-ins/proxmox/guest.ts): `agent`, the
 * VM option; `guestAgent`, whether qemu-guest-agent runs in the guest while the VM runs;
 * `files` and `dirs`, the guest filesystem, which snapshots keep and rollbacks restore.
 */
export interface VmState extends GuestState {
  node: string;
  vmid: number;
  status: 'running' | 'stopped';
  lock?: string;
  snapshots: SnapshotState[];
  currentParent?: string;
  /** How many times the VM really changed power state or was rolled back (no-op stops do not count). */
  starts: number;
  stops: number;
  rollbacks: number;
}

export interface ProxmoxStandIn {
  /** e.g. `http://127.0.0.1:PORT` (no trailing slash; the API is under `/api2/json`). */
  url: string;
  tokenId: string;
  tokenSecret: string;
  addVm(node: string, vmid: number, opts?: AddVmOptions): void;
  /** The live state (mutations are visible to the API, e.g. `vm(...).lock = 'backup'`); throws if unknown. */
  vm(node: string, vmid: number): VmState;
  /** Whether the guest agent answers now: the VM runs, its `agent` option is enabled, qemu-ga runs. */
  guestAgentRunning(node: string, vmid: number): boolean;
  /** Runs the VM's `agent/exec` commands through `handler`; undefined: defaultGuestExec again. */
  setExecHandler(node: string, vmid: number, handler: GuestExecHandler | undefined): void;
  /**
   * The token's privileges on `/vms` (propagated to every VM); default: what PVEVMAdmin grants
   * there in the version played (PVE_VM_ADMIN_PRIVILEGES, or PVE9_VM_ADMIN_PRIVILEGES).
   */
  setPrivileges(privileges: string[]): void;
  /** The Proxmox VE major version played (`GET /version`, the guest agent's privileges). */
  readonly pveVersion: 8 | 9;
  /** `times` defaults to 1; `Infinity` keeps the fault until `clearFaults()`. */
  failNext(match: FaultMatch, fault: ProxmoxFault, times?: number): void;
  /** Drops all faults and lets hung tasks complete. */
  clearFaults(): void;
  /** Every request, in arrival order, including rejected and faulted ones. */
  calls: ProxmoxCall[];
  close(): Promise<void>;
}

export interface AddVmOptions {
  status?: 'running' | 'stopped';
  /** Oldest first; each is a chain link and holds the disk as `files`/`dirs` give it. */
  snapshots?: Array<Pick<SnapshotState, 'name' | 'description'>>;
  /** The VM option `agent` (`'1'`, `'enabled=1,fstrim_cloned_disks=1'`, `'0'`); null: unset. Default `'1'`. */
  agent?: string | null;
  /** Whether qemu-guest-agent is installed and runs while the VM runs. Default true. */
  guestAgent?: boolean;
  /** How long after each start qemu-ga begins to answer (`QEMU guest agent is not running` before). Default 0. */
  guestAgentBootMs?: number;
  /** qemu-ga commands disabled in the guest (`--block-rpcs`), e.g. `['guest-exec']`. Default none. */
  blockedRpcs?: string[];
  /** The guest filesystem (path → content). Default: empty. */
  files?: Record<string, string>;
  /** The guest's directories. Default: DEFAULT_GUEST_DIRS (which include /var/lib/e2epool). */
  dirs?: string[];
}

const DEFAULT_TOKEN_ID = 'ci@pve!e2epool';
/** PVEVMAdmin's privileges (AC `$privgroups`): everything a VM operator may do. */
export const PVE_VM_ADMIN_PRIVILEGES = [
  'VM.Allocate',
  'VM.Audit',
  'VM.Backup',
  'VM.Clone',
  'VM.Config.CDROM',
  'VM.Config.CPU',
  'VM.Config.Cloudinit',
  'VM.Config.Disk',
  'VM.Config.HWType',
  'VM.Config.Memory',
  'VM.Config.Network',
  'VM.Config.Options',
  'VM.Console',
  'VM.Migrate',
  'VM.Monitor',
  'VM.PowerMgmt',
  'VM.Snapshot',
  'VM.Snapshot.Rollback',
];
/**
 * PVEVMAdmin in Proxmox VE 9: `VM.Monitor` is gone, split into the `VM.GuestAgent.*`
 * privileges (`Unrestricted` covers exec).
 */
export const PVE9_VM_ADMIN_PRIVILEGES = [
  ...PVE_VM_ADMIN_PRIVILEGES.filter((p) => p !== 'VM.Monitor'),
  'VM.GuestAgent.Audit',
  'VM.GuestAgent.FileRead',
  'VM.GuestAgent.FileSystemMgmt',
  'VM.GuestAgent.FileWrite',
  'VM.GuestAgent.Unrestricted',
].sort();
const DEFAULT_TOKEN_SECRET = '4f1c2b7e-93a5-4d0e-b8c6-2a9d5e7f3b10';

interface TaskWork {
  /** Runs when the worker starts: checks and takes locks. Throws TaskFailure to fail the task. */
  begin(): void;
  /** Runs when the worker's time is up: applies the effect and releases locks. */
  finish(fault?: TaskFault): void;
  /** Log lines the worker prints (before the final TASK line). */
  lines: string[];
}

type TaskFault = Extract<
  ProxmoxFault,
  { kind: 'task' | 'warnings' | 'hang' | 'disk-not-restored' }
>;

interface Task {
  upid: string;
  node: string;
  pid: number;
  pstart: number;
  starttime: number;
  type: TaskType;
  id: string;
  user: string;
  tokenid: string;
  log: string[];
  exitstatus?: string;
  hung: boolean;
  complete(): void;
}

interface VmRecord {
  state: VmState;
  name: string;
  /** What each snapshot's disk holds (the guest filesystem at the time it was taken). */
  disks: Map<string, DiskImage>;
  execHandler?: GuestExecHandler;
  pid?: number;
  startedAt?: number;
}

interface FaultEntry {
  match: FaultMatch;
  fault: ProxmoxFault;
  remaining: number;
}

const KNOWN_METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE']);

class PveStandIn implements ProxmoxStandIn {
  url = '';
  readonly calls: ProxmoxCall[] = [];
  private readonly vms = new Map<number, VmRecord>();
  private readonly tasks = new Map<string, Task>();
  private faults: FaultEntry[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly routes: Route[];
  private readonly server = createServer((req, res) => {
    this.handle(req, res).catch((err: unknown) => {
      // A bug in the stand-in must show up in the test, not hang the client.
      if (!res.headersSent) {
        res.writeHead(599, 'stand-in internal error', { Connection: 'close' });
        res.end(String(err instanceof Error ? err.stack : err));
      } else {
        res.destroy();
      }
    });
  });
  private nextPid = 0x000a1b2c;
  private readonly bootMs = Date.now() - 3_600_000;
  private readonly user: string;
  private readonly tokenName: string;
  private closed = false;
  private privileges: Set<string>;

  constructor(
    readonly tokenId: string,
    readonly tokenSecret: string,
    private readonly taskDurationMs: number,
    private readonly authFailureDelayMs: number,
    readonly pveVersion: 8 | 9,
    private readonly taskDurationsMs: Partial<Record<TaskType, number>> = {},
  ) {
    this.privileges = new Set(
      pveVersion === 9 ? PVE9_VM_ADMIN_PRIVILEGES : PVE_VM_ADMIN_PRIVILEGES,
    );
    const m = TOKEN_ID_RE.exec(tokenId);
    if (!m) throw new Error(`tokenId '${tokenId}' is not of the form user@realm!tokenid`);
    this.user = m[1]!;
    this.tokenName = m[2]!;
    this.routes = this.buildRoutes();
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
  }

  setPrivileges(privileges: string[]): void {
    this.privileges = new Set(privileges);
  }

  /** PVE's `check_api2_permissions` for a route's `['perm', '/vms/{vmid}', privs]`. */
  private checkPerm(route: Route, params: Params): void {
    if (!route.perm) return;
    const { privs, any } = typeof route.perm === 'function' ? route.perm() : route.perm;
    const ok = any
      ? privs.some((p) => this.privileges.has(p))
      : privs.every((p) => this.privileges.has(p));
    if (!ok) {
      throw new PveError(
        403,
        `Permission check failed (/vms/${String(params.vmid)}, ${privs.join('|')})\n`,
      );
    }
  }

  /** Effective privileges on `path` (the ACL is on /vms and propagates), privilege → propagate. */
  private permissionsOn(path: string): Record<string, number> {
    if (!/^\/vms(\/[1-9][0-9]*)?\/?$/.test(path)) return {};
    return Object.fromEntries([...this.privileges].sort().map((p) => [p, 1]));
  }

  addVm(node: string, vmid: number, opts: AddVmOptions = {}): void {
    if (this.vms.has(vmid)) throw new Error(`VM ${vmid} already exists`);
    const given = opts.snapshots ?? [];
    const base = nowSec() - given.length * 600;
    const snapshots: SnapshotState[] = [];
    let parent: string | undefined;
    given.forEach((s, i) => {
      if (!CONFIGID_RE.test(s.name) || s.name.length > 40) {
        throw new Error(`invalid snapshot name '${s.name}'`);
      }
      const snap: SnapshotState = {
        name: s.name,
        description: s.description,
        snaptime: base + i * 600,
        vmstate: 0,
      };
      if (parent) snap.parent = parent;
      snapshots.push(snap);
      parent = s.name;
    });
    const state: VmState = {
      node,
      vmid,
      status: opts.status ?? 'running',
      snapshots,
      starts: 0,
      stops: 0,
      rollbacks: 0,
      guestAgent: opts.guestAgent ?? true,
      guestAgentBootMs: opts.guestAgentBootMs ?? 0,
      blockedRpcs: opts.blockedRpcs ?? [],
      files: new Map(Object.entries(opts.files ?? {})),
      dirs: new Set(opts.dirs ?? DEFAULT_GUEST_DIRS),
    };
    if (opts.agent !== null) state.agent = opts.agent ?? '1';
    if (parent) state.currentParent = parent;
    const disk = captureDisk(state);
    const disks = new Map(snapshots.map((s) => [s.name, captureDisk(disk)]));
    const rec: VmRecord = { state, name: `ci-runner-${vmid}`, disks };
    if (state.status === 'running') this.markRunning(rec);
    this.vms.set(vmid, rec);
  }

  vm(node: string, vmid: number): VmState {
    const rec = this.vms.get(vmid);
    if (!rec || rec.state.node !== node) throw new Error(`no VM ${vmid} on node ${node}`);
    return rec.state;
  }

  guestAgentRunning(node: string, vmid: number): boolean {
    return guestAgentRunning(this.vm(node, vmid));
  }

  setExecHandler(node: string, vmid: number, handler: GuestExecHandler | undefined): void {
    this.vm(node, vmid);
    const rec = this.vms.get(vmid)!;
    if (handler) rec.execHandler = handler;
    else delete rec.execHandler;
  }

  failNext(match: FaultMatch, fault: ProxmoxFault, times = 1): void {
    this.faults.push({ match, fault, remaining: times });
  }

  clearFaults(): void {
    this.faults = [];
    for (const task of this.tasks.values()) {
      if (task.hung) {
        task.hung = false;
        task.complete();
      }
    }
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

  private after(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private wait(ms: number): Promise<void> {
    return ms > 0 ? new Promise((resolve) => this.after(ms, resolve)) : Promise.resolve();
  }

  private takeFault(
    req: RequestInfo,
    kinds: ReadonlyArray<ProxmoxFault['kind']>,
  ): ProxmoxFault | undefined {
    const entry = this.faults.find(
      (f) =>
        f.remaining > 0 &&
        kinds.includes(f.fault.kind) &&
        (f.match.method === undefined || f.match.method.toUpperCase() === req.method) &&
        (f.match.pathIncludes === undefined ||
          req.path.includes(f.match.pathIncludes) ||
          req.rawPath.includes(f.match.pathIncludes)) &&
        (f.match.taskType === undefined || f.match.taskType === req.taskType),
    );
    if (!entry) return undefined;
    entry.remaining -= 1;
    if (entry.remaining <= 0) this.faults = this.faults.filter((f) => f !== entry);
    return entry.fault;
  }

  private findRoute(
    method: string,
    segs: string[],
  ): { route: Route; pathParams: Record<string, string> } | 'no-method' | undefined {
    let pathMatched = false;
    for (const route of this.routes) {
      if (route.path.length !== segs.length) continue;
      const pathParams: Record<string, string> = {};
      const ok = route.path.every((p, i) => {
        const seg = segs[i]!;
        if (p.startsWith('{')) {
          pathParams[p.slice(1, -1)] = seg;
          return true;
        }
        return p === seg;
      });
      if (!ok) continue;
      pathMatched = true;
      if (route.method === method) return { route, pathParams };
    }
    return pathMatched ? 'no-method' : undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const rawPath = q >= 0 ? rawUrl.slice(0, q) : rawUrl;
    const path = safeUnescape(rawPath);
    const query = decodeUrlencoded(q >= 0 ? rawUrl.slice(q + 1) : '');
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const contentType = (req.headers['content-type'] ?? '').split(/\s*[;,]\s*/)[0]!.toLowerCase();

    const call: ProxmoxCall = { method, path, query, body: {}, status: 0, at: Date.now() };
    try {
      call.body = paramsForLog(
        contentType === 'application/json' ? jsonToParams(rawBody) : decodeUrlencoded(rawBody),
      );
    } catch {
      call.body = {};
    }
    this.calls.push(call);

    const apiMatch = /^\/api2\/+json(\/.*)?$/.exec(path);
    const rel = apiMatch ? apiMatch[1] || '/' : undefined;
    const segs = rel === undefined ? [] : rel.split('/').filter((s) => s !== '');
    const found = rel === undefined ? undefined : this.findRoute(method, segs);
    const info: RequestInfo = {
      method,
      path,
      rawPath,
      taskType: typeof found === 'object' ? found.route.taskType : undefined,
    };
    const acceptGzip = /gzip/.test(String(req.headers['accept-encoding'] ?? ''));

    const send = (status: number, message: string, json?: unknown): void => {
      if (this.closed) return;
      // The reason phrase is the first line of the message (pveproxy: `m/^(.*)$/m`).
      const reason = (message.split('\n')[0] ?? '').replace(/[^\t\x20-\x7e\x80-\xff]/g, '?');
      const date = new Date().toUTCString();
      const headers: Record<string, string | number> = {
        'Cache-Control': 'max-age=0',
        Expires: date,
        Pragma: 'no-cache',
        Server: 'pve-api-daemon/3.0',
        // pveproxy ends keep-alive on every error.
        Connection: status >= 400 ? 'close' : 'Keep-Alive',
      };
      let body: Buffer | undefined;
      if (json !== undefined) {
        body = Buffer.from(JSON.stringify(json), 'utf8');
        headers['Content-Type'] = 'application/json;charset=UTF-8';
        if (acceptGzip && body.length > 1024) {
          body = gzipSync(body);
          headers['Content-Encoding'] = 'gzip';
        }
        headers['Content-Length'] = body.length;
      } else {
        headers['Content-Length'] = 0;
      }
      call.status = status;
      res.writeHead(status, reason, headers);
      res.end(body);
    };
    const sendError = (err: PveError): void => {
      if (err.bare) return send(err.status, err.message);
      const json: Record<string, unknown> = { data: null, message: err.message };
      if (err.errors) json.errors = err.errors;
      send(err.status, err.message, json);
    };

    const delay = this.takeFault(info, ['delay']);
    if (delay?.kind === 'delay') await this.wait(delay.ms);
    if (this.closed) return;

    if (!KNOWN_METHODS.has(method)) return send(501, `method '${method}' not available`);
    const te = req.headers['transfer-encoding'];
    if (te) {
      return send(
        501,
        te.toLowerCase() === 'chunked'
          ? 'chunked transfer encoding not supported'
          : `Unknown transfer encoding '${te}'`,
      );
    }
    if (!path.startsWith('/api2')) return send(501, `no such file '${path}'`);
    if (rel === undefined) return send(501, 'no such uri');

    const authError = this.authenticate(req);
    if (authError) {
      await this.wait(this.authFailureDelayMs);
      return send(401, authError);
    }

    const contentLength = Number(req.headers['content-length'] ?? 0);
    let bodyParams: Params = {};
    if (contentLength > 0) {
      if (method !== 'POST' && method !== 'PUT') {
        return send(501, `Unexpected content for method '${method}'`);
      }
      if (contentLength > MAX_POST_BYTES) return send(501, 'for data too large');
      if (contentType && contentType !== 'application/x-www-form-urlencoded') {
        if (contentType !== 'application/json') {
          return send(506, `upload 'Content-Type '${req.headers['content-type']}' not implemented`);
        }
      }
      try {
        bodyParams =
          contentType === 'application/json' ? jsonToParams(rawBody) : decodeUrlencoded(rawBody);
      } catch (err) {
        if (err instanceof PveError) return sendError(err);
        throw err;
      }
    }
    const params: Params = { ...bodyParams, ...query };
    delete params._dc;

    const httpFault = this.takeFault(info, ['http']);
    if (httpFault?.kind === 'http') {
      return send(httpFault.status, httpFault.reason, {
        data: null,
        message: `${httpFault.reason}\n`,
      });
    }

    if (typeof found !== 'object') {
      return sendError(new PveError(501, `Method '${method} ${rel}' not implemented`));
    }
    const { route, pathParams } = found;
    try {
      const merged: Params = { ...params, ...pathParams };
      validateParams(merged, route.schema);
      this.checkPerm(route, merged);
      const ctx: Ctx = { params: merged, node: pathParams.node ?? '', req: info };
      const data = route.handler(ctx);
      const json: Record<string, unknown> = { data: data ?? null };
      if (ctx.total) json.total = ctx.total;
      send(200, 'OK', json);
    } catch (err) {
      if (err instanceof PveError) return sendError(err);
      throw err;
    }
  }

  /** Returns the 401 reason phrase, or undefined when the request carries our API token. */
  private authenticate(req: IncomingMessage): string | undefined {
    const cookie = String(req.headers.cookie ?? '');
    const authHeader = String(req.headers.authorization ?? '');
    // A ticket (cookie or header) wins over a token; the stand-in never issues tickets.
    if (
      /(?:^|\s|;)PVEAuthCookie=/.test(cookie) ||
      /(?:^|\s)PVEAuthCookie(?:=| )/.test(authHeader)
    ) {
      return 'Authentication failed!';
    }
    const m = /(?:^|\s)PVEAPIToken(?:=| )([^;]*)/.exec(authHeader);
    if (!m) return 'No ticket';
    const value = safeUnescape(m[1]!);
    const split = /^(.*)=(.*)$/.exec(value);
    if (!split) return 'Authentication failed!';
    const [, tokenId, secret] = split;
    if (tokenId !== this.tokenId || secret !== this.tokenSecret) return 'Authentication failed!';
    return undefined;
  }

  // ---- VM model ------------------------------------------------------------------------------

  private record(node: string, vmid: number): VmRecord | undefined {
    const rec = this.vms.get(vmid);
    return rec && rec.state.node === node ? rec : undefined;
  }

  /** GC `load_config` in a synchronous handler: HTTP 500. */
  private loadConfig(node: string, vmid: number): VmRecord {
    const rec = this.record(node, vmid);
    if (!rec)
      throw die(`Configuration file 'nodes/${node}/qemu-server/${vmid}.conf' does not exist`);
    return rec;
  }

  /** `load_config` inside a worker: the task fails. */
  private workerConfig(node: string, vmid: number): VmRecord {
    const rec = this.record(node, vmid);
    if (!rec) {
      throw new TaskFailure(
        `Configuration file 'nodes/${node}/qemu-server/${vmid}.conf' does not exist`,
      );
    }
    return rec;
  }

  private checkLock(vm: VmState): void {
    if (vm.lock) throw new TaskFailure(`VM is locked (${vm.lock})`);
  }

  private markRunning(rec: VmRecord): void {
    rec.state.status = 'running';
    rec.pid = 100_000 + Math.floor(Math.random() * 800_000);
    rec.startedAt = Date.now();
    rec.state.runningSince = rec.startedAt;
  }

  private powerOn(rec: VmRecord): void {
    if (rec.state.status === 'running') return;
    this.markRunning(rec);
    rec.state.starts += 1;
  }

  private powerOff(rec: VmRecord): void {
    if (rec.state.status === 'stopped') return;
    rec.state.status = 'stopped';
    guestPoweredOff(rec.state);
    delete rec.state.runningSince;
    delete rec.pid;
    delete rec.startedAt;
    rec.state.stops += 1;
  }

  private releaseLock(vm: VmState, lock: string): void {
    if (vm.lock === lock) delete vm.lock;
  }

  private digest(rec: VmRecord): string {
    const { snapshots, currentParent, lock } = rec.state;
    return createHash('sha1')
      .update(JSON.stringify({ name: rec.name, snapshots, currentParent, lock }))
      .digest('hex');
  }

  private vmConfig(rec: VmRecord): Record<string, string | number> {
    const { vmid } = rec.state;
    return {
      boot: 'order=scsi0;net0',
      cores: 2,
      memory: '2048',
      name: rec.name,
      net0: 'virtio=BC:24:11:3A:5F:0E,bridge=vmbr0',
      ostype: 'l26',
      scsi0: `local-lvm:vm-${vmid}-disk-0,size=32G`,
      scsihw: 'virtio-scsi-single',
      smbios1: 'uuid=6b1f3a9e-0c44-4a51-9b0a-2d1e5c7f8a90',
      ...(rec.state.agent === undefined ? {} : { agent: rec.state.agent }),
    };
  }

  // ---- tasks ---------------------------------------------------------------------------------

  private startTask(ctx: Ctx, type: TaskType, vmid: number, work: TaskWork): string {
    const pid = this.nextPid++;
    const pstart = Math.floor((Date.now() - this.bootMs) / 10);
    const starttime = nowSec();
    const node = ctx.node;
    const upid = `UPID:${node}:${hex8(pid)}:${hex8(pstart)}:${hex8(starttime)}:${type}:${vmid}:${this.tokenId}:`;
    const fault = this.takeFault(ctx.req, ['task', 'warnings', 'hang', 'disk-not-restored']) as
      TaskFault | undefined;

    let failure: string | undefined;
    const run = fault?.kind !== 'task';
    if (run) {
      try {
        work.begin();
      } catch (err) {
        if (!(err instanceof TaskFailure)) throw err;
        failure = err.message;
      }
    }
    const task: Task = {
      upid,
      node,
      pid,
      pstart,
      starttime,
      type,
      id: String(vmid),
      user: this.user,
      tokenid: this.tokenName,
      log: run && failure === undefined ? [...work.lines] : [],
      hung: fault?.kind === 'hang',
      complete: () => {
        if (task.exitstatus !== undefined) return;
        if (fault?.kind === 'task') {
          task.exitstatus = fault.exitstatus;
        } else if (failure !== undefined) {
          task.exitstatus = failure;
        } else {
          work.finish(fault);
          if (fault?.kind === 'warnings') {
            for (let i = 0; i < fault.count; i++) {
              task.log.push('WARN: unable to freeze guest filesystems - guest agent not running');
            }
            task.exitstatus = `WARNINGS: ${fault.count}`;
          } else {
            task.exitstatus = 'OK';
          }
        }
        const status = task.exitstatus;
        task.log.push(
          status === 'OK'
            ? 'TASK OK'
            : /^WARNINGS: \d+$/.test(status)
              ? `TASK ${status}`
              : `TASK ERROR: ${status}`,
        );
      },
    };
    this.tasks.set(upid, task);
    const ms = this.taskDurationsMs[type] ?? this.taskDurationMs;
    if (!task.hung) this.after(ms, () => task.complete());
    return upid;
  }

  private findTask(node: string, upid: string): Task {
    if (!UPID_RE.test(upid)) throw paramExc({ upid: 'unable to parse worker upid' });
    const task = this.tasks.get(upid);
    // Task files live on the node that ran the task; asking another node finds nothing.
    if (!task || task.node !== node) throw paramExc({ upid: 'no such task' });
    return task;
  }

  // ---- endpoints -----------------------------------------------------------------------------

  private buildRoutes(): Route[] {
    const vmPath = (...rest: string[]): string[] => ['nodes', '{node}', 'qemu', '{vmid}', ...rest];
    const vmidOf = (ctx: Ctx): number => Number(ctx.params.vmid);
    const str = (v: ParamValue | undefined): string | undefined =>
      typeof v === 'string' ? v : undefined;

    return [
      {
        method: 'GET',
        path: ['access', 'permissions'],
        schema: {
          path: { type: 'string', optional: true },
          userid: { type: 'string', optional: true },
        },
        handler: (ctx) => {
          const userid = typeof ctx.params.userid === 'string' ? ctx.params.userid : undefined;
          // A token may dump its own permissions; anyone else's need Sys.Audit on /access.
          if (userid !== undefined && userid !== this.tokenId) {
            throw new PveError(403, 'Permission check failed (/access, Sys.Audit)\n');
          }
          const path = typeof ctx.params.path === 'string' ? ctx.params.path : undefined;
          if (path !== undefined) return { [path]: this.permissionsOn(path) };
          return { '/vms': this.permissionsOn('/vms') };
        },
      },
      {
        method: 'GET',
        path: ['version'],
        schema: {},
        handler: () =>
          this.pveVersion === 9
            ? { version: '9.0.10', release: '9.0', repoid: 'deb1ca707ec72a89' }
            : { version: '8.3.2', release: '8.3', repoid: '3e76eec21c4a14a7' },
      },
      {
        method: 'GET',
        path: vmPath('config'),
        perm: { privs: ['VM.Audit'] },
        schema: { ...VM_PATH, current: OPT_BOOL },
        handler: (ctx) => {
          const rec = this.loadConfig(ctx.node, vmidOf(ctx));
          return { ...this.vmConfig(rec), digest: this.digest(rec) };
        },
      },
      ...agentRoutes({
        guestVm: (ctx) => this.loadConfig(ctx.node, vmidOf(ctx)).state,
        generation: () => this.pveVersion,
        execHandler: (vm) => this.vms.get(vm.vmid)?.execHandler ?? defaultGuestExec,
      }),
      {
        method: 'GET',
        path: vmPath('status'),
        schema: VM_PATH,
        handler: (ctx) => {
          this.loadConfig(ctx.node, vmidOf(ctx));
          return ['current', 'start', 'stop', 'reset', 'shutdown', 'suspend', 'reboot'].map(
            (subdir) => ({ subdir }),
          );
        },
      },
      {
        method: 'GET',
        path: vmPath('status', 'current'),
        perm: { privs: ['VM.Audit'] },
        schema: VM_PATH,
        handler: (ctx) => this.statusCurrent(this.loadConfig(ctx.node, vmidOf(ctx))),
      },
      {
        method: 'GET',
        path: vmPath('snapshot'),
        perm: { privs: ['VM.Audit'] },
        schema: VM_PATH,
        handler: (ctx) => this.snapshotList(this.loadConfig(ctx.node, vmidOf(ctx))),
      },
      {
        method: 'POST',
        path: vmPath('snapshot'),
        perm: { privs: ['VM.Snapshot'] },
        schema: {
          ...VM_PATH,
          snapname: SNAPNAME,
          vmstate: OPT_BOOL,
          description: { type: 'string', optional: true },
        },
        taskType: 'qmsnapshot',
        handler: (ctx) => {
          const snapname = String(ctx.params.snapname);
          if (snapname === 'current') {
            throw die(`unable to use snapshot name 'current' (reserved name)`);
          }
          if (snapname.toLowerCase() === 'pending') {
            throw die(`unable to use snapshot name 'pending' (reserved name)`);
          }
          const vmid = vmidOf(ctx);
          this.loadConfig(ctx.node, vmid);
          return this.startTask(
            ctx,
            'qmsnapshot',
            vmid,
            this.snapshotCreateWork(ctx.node, vmid, snapname, {
              description: str(ctx.params.description),
              vmstate: isTrue(ctx.params.vmstate),
            }),
          );
        },
      },
      {
        method: 'GET',
        path: vmPath('snapshot', '{snapname}'),
        schema: { ...VM_PATH, snapname: SNAPNAME },
        // The index never checks that the VM or the snapshot exists.
        handler: () => [{ cmd: 'rollback' }, { cmd: 'config' }],
      },
      {
        method: 'DELETE',
        path: vmPath('snapshot', '{snapname}'),
        perm: { privs: ['VM.Snapshot'] },
        schema: { ...VM_PATH, snapname: SNAPNAME, force: OPT_BOOL },
        taskType: 'qmdelsnapshot',
        handler: (ctx) => {
          const vmid = vmidOf(ctx);
          return this.startTask(
            ctx,
            'qmdelsnapshot',
            vmid,
            this.snapshotDeleteWork(ctx.node, vmid, String(ctx.params.snapname)),
          );
        },
      },
      {
        method: 'GET',
        path: vmPath('snapshot', '{snapname}', 'config'),
        perm: { privs: ['VM.Audit'] },
        schema: { ...VM_PATH, snapname: SNAPNAME },
        handler: (ctx) => {
          const rec = this.loadConfig(ctx.node, vmidOf(ctx));
          const name = String(ctx.params.snapname);
          const snap = rec.state.snapshots.find((s) => s.name === name);
          if (!snap) throw die(`snapshot '${name}' does not exist`);
          const conf: Record<string, string | number> = {
            ...this.vmConfig(rec),
            snaptime: snap.snaptime,
          };
          if (snap.description) conf.description = snap.description;
          if (snap.parent) conf.parent = snap.parent;
          if (snap.snapstate) conf.snapstate = snap.snapstate;
          if (snap.vmstate) conf.vmstate = `local-lvm:vm-${rec.state.vmid}-state-${snap.name}`;
          return conf;
        },
      },
      {
        method: 'PUT',
        path: vmPath('snapshot', '{snapname}', 'config'),
        perm: { privs: ['VM.Snapshot'] },
        schema: { ...VM_PATH, snapname: SNAPNAME, description: { type: 'string', optional: true } },
        handler: (ctx) => {
          const description = str(ctx.params.description);
          // Like the real handler: nothing to change means nothing is even looked up.
          if (description === undefined) return null;
          const rec = this.loadConfig(ctx.node, vmidOf(ctx));
          if (rec.state.lock) throw die(`VM is locked (${rec.state.lock})`);
          const name = String(ctx.params.snapname);
          const snap = rec.state.snapshots.find((s) => s.name === name);
          if (!snap) throw die(`snapshot '${name}' does not exist`);
          snap.description = description;
          return null;
        },
      },
      {
        method: 'POST',
        path: vmPath('snapshot', '{snapname}', 'rollback'),
        perm: { privs: ['VM.Snapshot', 'VM.Snapshot.Rollback'], any: true },
        schema: { ...VM_PATH, snapname: SNAPNAME, start: OPT_BOOL },
        taskType: 'qmrollback',
        handler: (ctx) => {
          const vmid = vmidOf(ctx);
          return this.startTask(
            ctx,
            'qmrollback',
            vmid,
            this.rollbackWork(
              ctx.node,
              vmid,
              String(ctx.params.snapname),
              isTrue(ctx.params.start),
            ),
          );
        },
      },
      {
        method: 'POST',
        path: vmPath('status', 'start'),
        perm: { privs: ['VM.PowerMgmt'] },
        schema: {
          ...VM_PATH,
          skiplock: OPT_BOOL,
          timeout: OPT_TIMEOUT,
          machine: { type: 'string', optional: true },
          migratedfrom: { ...NODE, optional: true },
          stateuri: { type: 'string', optional: true, maxLength: 128 },
          targetstorage: { type: 'string', optional: true },
          'force-cpu': { type: 'string', optional: true },
        },
        taskType: 'qmstart',
        handler: (ctx) => {
          this.rootOnly(ctx, [
            'stateuri',
            'skiplock',
            'migratedfrom',
            'targetstorage',
            'force-cpu',
          ]);
          const vmid = vmidOf(ctx);
          return this.startTask(ctx, 'qmstart', vmid, this.startWork(ctx.node, vmid));
        },
      },
      {
        method: 'POST',
        path: vmPath('status', 'stop'),
        perm: { privs: ['VM.PowerMgmt'] },
        schema: {
          ...VM_PATH,
          skiplock: OPT_BOOL,
          timeout: OPT_TIMEOUT,
          keepActive: OPT_BOOL,
          'overrule-shutdown': OPT_BOOL,
          migratedfrom: { ...NODE, optional: true },
        },
        taskType: 'qmstop',
        handler: (ctx) => {
          this.rootOnly(ctx, ['skiplock', 'keepActive', 'migratedfrom']);
          const vmid = vmidOf(ctx);
          return this.startTask(ctx, 'qmstop', vmid, this.stopWork(ctx.node, vmid));
        },
      },
      {
        method: 'POST',
        path: vmPath('status', 'shutdown'),
        perm: { privs: ['VM.PowerMgmt'] },
        schema: {
          ...VM_PATH,
          skiplock: OPT_BOOL,
          timeout: OPT_TIMEOUT,
          forceStop: OPT_BOOL,
          keepActive: OPT_BOOL,
        },
        taskType: 'qmshutdown',
        handler: (ctx) => {
          this.rootOnly(ctx, ['skiplock', 'keepActive']);
          const vmid = vmidOf(ctx);
          return this.startTask(ctx, 'qmshutdown', vmid, this.stopWork(ctx.node, vmid));
        },
      },
      {
        method: 'GET',
        path: ['nodes', '{node}', 'tasks', '{upid}'],
        schema: { node: NODE, upid: { type: 'string' } },
        handler: () => [{ name: 'log' }, { name: 'status' }],
      },
      {
        method: 'GET',
        path: ['nodes', '{node}', 'tasks', '{upid}', 'status'],
        schema: { node: NODE, upid: { type: 'string' } },
        handler: (ctx) => {
          const t = this.findTask(ctx.node, String(ctx.params.upid));
          const out: Record<string, string | number> = {
            upid: t.upid,
            node: t.node,
            pid: t.pid,
            pstart: t.pstart,
            starttime: t.starttime,
            type: t.type,
            id: t.id,
            user: t.user,
            tokenid: t.tokenid,
            status: t.exitstatus === undefined ? 'running' : 'stopped',
          };
          if (t.exitstatus !== undefined) out.exitstatus = t.exitstatus;
          return out;
        },
      },
      {
        method: 'GET',
        path: ['nodes', '{node}', 'tasks', '{upid}', 'log'],
        schema: {
          node: NODE,
          upid: { type: 'string' },
          start: { type: 'integer', minimum: 0, optional: true },
          limit: { type: 'integer', minimum: 0, optional: true },
          download: OPT_BOOL,
        },
        handler: (ctx) => {
          const t = this.findTask(ctx.node, String(ctx.params.upid));
          const start = ctx.params.start === undefined ? 0 : Number(ctx.params.start);
          const limit = ctx.params.limit === undefined ? 50 : Number(ctx.params.limit);
          ctx.total = t.log.length;
          return t.log.map((line, i) => ({ n: i + 1, t: line })).slice(start, start + limit);
        },
      },
    ];
  }

  private rootOnly(ctx: Ctx, names: string[]): void {
    // Tokens are never root@pam, so any truthy root-only option is refused.
    for (const name of names) {
      const v = ctx.params[name];
      if (v !== undefined && v !== '0' && v !== false && v !== '') {
        throw paramExc({ [name]: 'Only root may use this option.' });
      }
    }
  }

  private statusCurrent(rec: VmRecord): Record<string, unknown> {
    const vm = rec.state;
    const running = vm.status === 'running';
    const out: Record<string, unknown> = {
      vmid: vm.vmid,
      name: rec.name,
      status: vm.status,
      qmpstatus: vm.status,
      uptime: running && rec.startedAt ? Math.floor((Date.now() - rec.startedAt) / 1000) : 0,
      cpus: 2,
      cpu: running ? 0.0123 : 0,
      maxmem: 2_147_483_648,
      mem: running ? 1_073_741_824 : 0,
      maxdisk: 34_359_738_368,
      disk: 0,
      netin: running ? 123_456 : 0,
      netout: running ? 654_321 : 0,
      diskread: running ? 10_485_760 : 0,
      diskwrite: running ? 5_242_880 : 0,
      ha: { managed: 0 },
    };
    // `agent` is 1 only when the option enables it (QemuServer vmstatus).
    if (agentEnabled(vm.agent)) out.agent = 1;
    if (running) {
      out.pid = rec.pid;
      out['running-machine'] = 'pc-i440fx-9.0+pve0';
      out['running-qemu'] = '9.0.2';
    }
    if (vm.lock) out.lock = vm.lock;
    return out;
  }

  private snapshotList(rec: VmRecord): unknown[] {
    // Real servers emit Perl hash order; reverse insertion keeps clients from relying on any order.
    const items: unknown[] = [...rec.state.snapshots].reverse().map((s) => {
      const item: Record<string, string | number> = {
        name: s.name,
        snaptime: s.snaptime,
        vmstate: s.vmstate,
        description: s.description,
      };
      if (s.parent) item.parent = s.parent;
      if (s.snapstate) item.snapstate = s.snapstate;
      return item;
    });
    const current: Record<string, string | number> = {
      name: 'current',
      digest: this.digest(rec),
      running: rec.state.status === 'running' ? 1 : 0,
      description: 'You are here!',
    };
    if (rec.state.currentParent) current.parent = rec.state.currentParent;
    items.push(current);
    return items;
  }

  private snapshotCreateWork(
    node: string,
    vmid: number,
    snapname: string,
    opts: { description?: string; vmstate: boolean },
  ): TaskWork {
    const lines = [
      `snapshotting 'drive-scsi0' (local-lvm:vm-${vmid}-disk-0)`,
      `  Logical volume "snap_vm-${vmid}-disk-0_${snapname}" created.`,
    ];
    let snap: SnapshotState | undefined;
    return {
      lines,
      begin: () => {
        const vm = this.workerConfig(node, vmid).state;
        this.checkLock(vm);
        if (vm.snapshots.some((s) => s.name === snapname)) {
          throw new TaskFailure(`snapshot name '${snapname}' already used`);
        }
        vm.lock = 'snapshot';
        snap = {
          name: snapname,
          description: opts.description ?? '',
          snaptime: nowSec(),
          // RAM is saved only when the VM runs; otherwise the flag is ignored.
          vmstate: opts.vmstate && vm.status === 'running' ? 1 : 0,
          snapstate: 'prepare',
        };
        if (vm.currentParent) snap.parent = vm.currentParent;
        vm.snapshots.push(snap);
        // The disk is snapshotted now (after fs-freeze): later writes are not in it.
        this.record(node, vmid)!.disks.set(snapname, captureDisk(vm));
      },
      finish: () => {
        const vm = this.record(node, vmid)?.state;
        if (!vm || !snap) return;
        delete snap.snapstate;
        this.releaseLock(vm, 'snapshot');
        vm.currentParent = snapname;
      },
    };
  }

  private snapshotDeleteWork(node: string, vmid: number, snapname: string): TaskWork {
    let snap: SnapshotState | undefined;
    return {
      lines: [`  Logical volume "snap_vm-${vmid}-disk-0_${snapname}" successfully removed.`],
      begin: () => {
        const vm = this.workerConfig(node, vmid).state;
        snap = vm.snapshots.find((s) => s.name === snapname);
        if (!snap) throw new TaskFailure(`snapshot '${snapname}' does not exist`);
        this.checkLock(vm);
        vm.lock = 'snapshot-delete';
        snap.snapstate = 'delete';
      },
      finish: () => {
        const vm = this.record(node, vmid)?.state;
        if (!vm || !snap) return;
        const removed = snap;
        vm.snapshots = vm.snapshots.filter((s) => s !== removed);
        this.record(node, vmid)?.disks.delete(snapname);
        // Children and the current state are re-parented onto the removed snapshot's parent.
        for (const s of vm.snapshots) {
          if (s.parent === snapname) {
            if (removed.parent) s.parent = removed.parent;
            else delete s.parent;
          }
        }
        if (vm.currentParent === snapname) {
          if (removed.parent) vm.currentParent = removed.parent;
          else delete vm.currentParent;
        }
        this.releaseLock(vm, 'snapshot-delete');
      },
    };
  }

  private rollbackWork(node: string, vmid: number, snapname: string, start: boolean): TaskWork {
    let snap: SnapshotState | undefined;
    const lines: string[] = [];
    return {
      lines,
      begin: () => {
        const rec = this.workerConfig(node, vmid);
        const vm = rec.state;
        snap = vm.snapshots.find((s) => s.name === snapname);
        if (!snap) throw new TaskFailure(`snapshot '${snapname}' does not exist`);
        if (snap.snapstate) {
          throw new TaskFailure(
            `unable to rollback to incomplete snapshot (snapstate = ${snap.snapstate})`,
          );
        }
        this.checkLock(vm);
        // The running VM is hard-stopped before anything else (no error, no shutdown).
        if (vm.status === 'running') this.powerOff(rec);
        vm.lock = 'rollback';
        lines.push(`  Logical volume "vm-${vmid}-disk-0" successfully removed.`);
        lines.push(`  Logical volume "vm-${vmid}-disk-0" created.`);
      },
      finish: (fault) => {
        const rec = this.record(node, vmid);
        if (!rec || !snap) return;
        this.releaseLock(rec.state, 'rollback');
        const storageBug = fault?.kind === 'disk-not-restored';
        if (!storageBug || !fault.keepParent) rec.state.currentParent = snapname;
        const image = rec.disks.get(snapname);
        if (!storageBug && image) restoreDisk(rec.state, image);
        rec.state.rollbacks += 1;
        if (start || snap.vmstate === 1) this.powerOn(rec);
      },
    };
  }

  private startWork(node: string, vmid: number): TaskWork {
    return {
      lines: [],
      begin: () => {
        const vm = this.workerConfig(node, vmid).state;
        this.checkLock(vm);
        if (vm.status === 'running') throw new TaskFailure(`VM ${vmid} already running`);
      },
      finish: () => {
        const rec = this.record(node, vmid);
        if (rec) this.powerOn(rec);
      },
    };
  }

  /** Stop and shutdown: a stopped VM is a successful no-op, and the lock matters only if running. */
  private stopWork(node: string, vmid: number): TaskWork {
    return {
      lines: [],
      begin: () => {
        const rec = this.record(node, vmid);
        if (!rec) {
          throw new TaskFailure(
            `unable to find configuration file for VM ${vmid} on node '${node}'`,
          );
        }
        if (rec.state.status === 'running') this.checkLock(rec.state);
      },
      finish: () => {
        const rec = this.record(node, vmid);
        if (rec) this.powerOff(rec);
      },
    };
  }
}

/** Starts a Proxmox VE API stand-in on 127.0.0.1 (random port). */
export async function startProxmoxStandIn(
  opts: {
    tokenId?: string;
    tokenSecret?: string;
    taskDurationMs?: number;
    /** Per task type, overriding `taskDurationMs` (e.g. a rollback slower than a stop). */
    taskDurationsMs?: Partial<Record<TaskType, number>>;
    authFailureDelayMs?: number;
    /** The Proxmox VE major version to play (default 8): privileges, `GET /version`. */
    pveVersion?: 8 | 9;
  } = {},
): Promise<ProxmoxStandIn> {
  const s = new PveStandIn(
    opts.tokenId ?? DEFAULT_TOKEN_ID,
    opts.tokenSecret ?? DEFAULT_TOKEN_SECRET,
    opts.taskDurationMs ?? 30,
    opts.authFailureDelayMs ?? 0,
    opts.pveVersion ?? 8,
    opts.taskDurationsMs,
  );
  await s.listen();
  return s;
}
