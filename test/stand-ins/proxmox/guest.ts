/**
 * The QEMU guest agent of the Proxmox VE stand-in (test/stand-ins/proxmox.ts): each VM's guest
 * filesystem and the `/nodes/{node}/qemu/{vmid}/agent/...` endpoints e2epool uses to prove a
 * reset, as PVE's `PVE::API2::Qemu::Agent` answers them:
 * - every call first passes the route's privilege check (PVE 8: `VM.Monitor`; PVE 9:
 *   `VM.GuestAgent.Audit` for ping, `.FileRead`, `.FileWrite`, `.Unrestricted` for exec), then
 *   `assert_agent_available`: the `agent` option must be set (`No QEMU guest agent configured`),
 *   the VM running (`VM <vmid> is not running`), the option enabled (`QEMU guest agent is not
 *   enabled`), and qemu-ga must answer (`QEMU guest agent is not running`); all HTTP 500;
 * - errors of the guest command itself are `mon_cmd`'s: `VM <vmid> qmp command 'guest-<cmd>'
 *   failed - <QEMU's error>`, e.g. a missing file's `Failed to open file '<path>' (mode: 'r'):
 *   No such file or directory`;
 * - `guest-exec-status` forgets a process once it has reported it exited, as QEMU does.
 * The filesystem is flat (path → content) plus a set of directories: a file can only be
 * written into a directory that exists, as on a real guest.
 */
import {
  die,
  isTrue,
  OPT_BOOL,
  VM_PATH,
  type Ctx,
  type ParamValue,
  type PermSpec,
  type Route,
} from './http';

/** What a command run through `agent/exec` ends with. */
export interface GuestExecResult {
  exitCode: number;
  stdout?: string;
  stderr?: string;
}

/**
 * Runs one `agent/exec` command in the guest. It may be async (the process runs until the
 * promise settles: exec-status says `exited: 0` meanwhile). Throwing means the process could
 * not be started at all (guest-exec fails: HTTP 500 with the error's message).
 */
export type GuestExecHandler = (
  argv: string[],
  ctx: { input?: string; files: Map<string, string>; dirs: Set<string> },
) => GuestExecResult | Promise<GuestExecResult>;

/** The part of a VM's live state the guest agent works on. */
export interface GuestState {
  vmid: number;
  status: 'running' | 'stopped';
  /** The VM option `agent` as `GET .../config` shows it (`'1'`, `'enabled=1,...'`); unset: none. */
  agent?: string;
  /** Whether qemu-guest-agent runs in the guest while the VM runs (set false: it crashed). */
  guestAgent: boolean;
  /** How long after the VM starts qemu-ga begins to answer (the guest boots first). */
  guestAgentBootMs: number;
  /** When the VM last started (ms since the epoch); unset while it is stopped. */
  runningSince?: number;
  /**
   * qemu-ga commands disabled in the guest (`--block-rpcs`, as some distributions ship it),
   * e.g. `['guest-exec', 'guest-file-open']`: calling one fails, `agent/info` shows it disabled.
   */
  blockedRpcs: string[];
  /** The guest filesystem: absolute path → content. Part of the disk: snapshots keep it. */
  files: Map<string, string>;
  /** Directories that exist in the guest (`/` always does). Part of the disk too. */
  dirs: Set<string>;
}

/** A copy of the disk's contents, as a snapshot holds it. */
export interface DiskImage {
  files: Map<string, string>;
  dirs: Set<string>;
}

export const DEFAULT_GUEST_DIRS = [
  '/etc',
  '/root',
  '/tmp',
  '/var',
  '/var/lib',
  // A guest image prepared for e2epool has the canary's default directory.
  '/var/lib/e2epool',
];

export function captureDisk(vm: DiskImage): DiskImage {
  return { files: new Map(vm.files), dirs: new Set(vm.dirs) };
}

export function restoreDisk(vm: GuestState, image: DiskImage): void {
  vm.files = new Map(image.files);
  vm.dirs = new Set(image.dirs);
}

/** QemuServer's `parse_guest_agent`: `[enabled=]<1|0>[,fstrim_cloned_disks=..][,type=..]`. */
export function agentEnabled(option: string | undefined): boolean {
  if (option === undefined) return false;
  for (const part of option.split(',')) {
    const [k, v] = part.includes('=') ? part.split('=', 2) : ['enabled', part];
    if (k === 'enabled') return v === '1';
  }
  return false;
}

/** Whether qemu-ga is up: installed, not crashed, and the guest has booted far enough. */
function qgaUp(vm: GuestState): boolean {
  return vm.guestAgent && Date.now() >= (vm.runningSince ?? 0) + vm.guestAgentBootMs;
}

export function guestAgentRunning(vm: GuestState): boolean {
  return vm.status === 'running' && agentEnabled(vm.agent) && qgaUp(vm);
}

function parentDir(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

function dirExists(vm: Pick<GuestState, 'dirs'>, dir: string): boolean {
  return dir === '/' || vm.dirs.has(dir);
}

const OPEN_FAILED = (path: string, mode: string, why: string): string =>
  `Failed to open file '${path}' (mode: '${mode}'): ${why}`;

/** A shell word without its quotes (`'a b'`, `"a b"`, or a bare word). */
function unquote(word: string): string {
  const w = word.trim();
  if (w.length >= 2 && (w[0] === "'" || w[0] === '"') && w[w.length - 1] === w[0]) {
    return w.slice(1, -1);
  }
  return w;
}

/** One command of the tiny shell below; undefined exit code: not a command it knows. */
function runShellCommand(
  cmd: string,
  fs: { files: Map<string, string>; dirs: Set<string> },
  out: { stdout: string; stderr: string },
): number {
  const c = cmd.trim();
  if (c === '' || c === 'true' || c === ':') return 0;
  if (c === 'false') return 1;
  let m = /^exit\s+(\d+)$/.exec(c);
  if (m) return Number(m[1]);
  m = /^echo\s+(.*?)\s*(>>?)\s*(\S+)$/.exec(c);
  if (m) {
    const path = unquote(m[3]!);
    if (!dirExists(fs, parentDir(path))) {
      out.stderr += `sh: 1: cannot create ${path}: Directory nonexistent\n`;
      return 2;
    }
    const line = `${unquote(m[1]!)}\n`;
    fs.files.set(path, m[2] === '>>' ? (fs.files.get(path) ?? '') + line : line);
    return 0;
  }
  m = /^echo(?:\s+(.*))?$/.exec(c);
  if (m) {
    out.stdout += `${unquote(m[1] ?? '')}\n`;
    return 0;
  }
  m = /^rm\s+-f\s+(\S+)$/.exec(c);
  if (m) {
    fs.files.delete(unquote(m[1]!));
    return 0;
  }
  m = /^cat\s+(\S+)$/.exec(c);
  if (m) {
    const path = unquote(m[1]!);
    const content = fs.files.get(path);
    if (content === undefined) {
      out.stderr += `cat: ${path}: No such file or directory\n`;
      return 1;
    }
    out.stdout += content;
    return 0;
  }
  m = /^mkdir\s+-p\s+(\S+)$/.exec(c);
  if (m) {
    let dir = unquote(m[1]!).replace(/\/+$/, '');
    while (dir && dir !== '/') {
      fs.dirs.add(dir);
      dir = parentDir(dir);
    }
    return 0;
  }
  m = /^test\s+-e\s+(\S+)$/.exec(c);
  if (m) {
    const path = unquote(m[1]!);
    return fs.files.has(path) || dirExists(fs, path) ? 0 : 1;
  }
  out.stderr += `sh: 1: ${c.split(/\s+/)[0]}: not found\n`;
  return 127;
}

/** A script of commands joined by `&&` (stops at the first failure) or `;` / newlines. */
function runScript(
  script: string,
  fs: { files: Map<string, string>; dirs: Set<string> },
): GuestExecResult {
  const out = { stdout: '', stderr: '' };
  let code = 0;
  for (const seq of script.split(/;|\n/)) {
    for (const cmd of seq.split('&&')) {
      code = runShellCommand(cmd, fs, out);
      if (code !== 0) break;
    }
    if (/^\s*exit\s+\d+\s*$/.test(seq)) break;
  }
  return { exitCode: code, stdout: out.stdout, stderr: out.stderr };
}

/**
 * The default `agent/exec` handler: a tiny interpreter of a few argv forms acting on the
 * guest filesystem. `true`, `false`; `cat PATH` (or `cat` echoing `input-data`);
 * `rm -f PATH`; `mkdir -p DIR`; `test -e PATH`; `sh -c SCRIPT` (or `sh` reading the script
 * from `input-data`), where SCRIPT is commands joined by `&&`, `;` or newlines, each one of
 * `true`, `false`, `:`, `exit N`, `echo TEXT`, `echo TEXT > PATH`, `echo TEXT >> PATH`,
 * `rm -f PATH`, `cat PATH`, `mkdir -p DIR`, `test -e PATH` (others: exit 127, `not found`).
 * `/bin/` and `/usr/bin/` prefixes are ignored. Any other program cannot be started (the
 * call fails as guest-exec does for a missing binary).
 */
export const defaultGuestExec: GuestExecHandler = (argv, ctx) => {
  const prog = (argv[0] ?? '').replace(/^\/(usr\/)?bin\//, '');
  const args = argv.slice(1);
  if (prog === 'sh' || prog === 'bash') {
    if (args[0] === '-c' && args[1] !== undefined) return runScript(args[1], ctx);
    if (args.length === 0) return runScript(ctx.input ?? '', ctx);
  }
  if (prog === 'cat' && args.length === 0) return { exitCode: 0, stdout: ctx.input ?? '' };
  if (['true', 'false', 'cat', 'rm', 'mkdir', 'test'].includes(prog)) {
    return runScript([prog, ...args.map((a) => (/\s/.test(a) ? `'${a}'` : a))].join(' '), ctx);
  }
  throw new Error(`Failed to execute child process “${argv[0] ?? ''}” (No such file or directory)`);
};

/** A process started by `agent/exec`, until exec-status has reported it exited. */
interface GuestProcess {
  result?: GuestExecResult;
  /** Set when the handler threw after starting (an async handler's rejection). */
  error?: string;
}

/** What the agent endpoints need of the stand-in. */
export interface GuestHost {
  /** The VM of the request, as `load_config` finds it (HTTP 500 if it does not exist). */
  guestVm(ctx: Ctx): GuestState;
  /** The Proxmox VE major version the stand-in plays (privileges differ). */
  generation(): 8 | 9;
  /** The exec handler of the VM (the test's, or defaultGuestExec). */
  execHandler(vm: GuestState): GuestExecHandler;
}

/** The commands a qemu-ga 8 announces that e2epool's calls use (plus a few others). */
const QGA_COMMANDS = [
  'guest-ping',
  'guest-info',
  'guest-sync',
  'guest-sync-delimited',
  'guest-file-open',
  'guest-file-read',
  'guest-file-write',
  'guest-file-close',
  'guest-exec',
  'guest-exec-status',
  'guest-fsfreeze-freeze',
  'guest-fsfreeze-thaw',
  'guest-shutdown',
];

/** The qemu-ga commands an agent endpoint runs, in order. */
const QGA_OF: Record<string, string[]> = {
  'file-read': ['guest-file-open', 'guest-file-read', 'guest-file-close'],
  'file-write': ['guest-file-open', 'guest-file-write', 'guest-file-close'],
  exec: ['guest-exec'],
  'exec-status': ['guest-exec-status'],
};

/** 16 MiB: the most `agent/file-read` returns (PVE `$MAX_READ_SIZE`). */
const MAX_READ = 16 * 1024 * 1024;
const MAX_WRITE_CHARS = 61440;

/** Exec processes per VM, keyed by the VM's state object (a powered-off VM has none). */
const processes = new WeakMap<GuestState, Map<number, GuestProcess>>();
let nextGuestPid = 4100;

/** The guest's processes end when the VM stops (a rollback stops it first). */
export function guestPoweredOff(vm: GuestState): void {
  processes.delete(vm);
}

/** PVE's `assert_agent_available`, then qemu-ga's answer (or silence). */
function assertAgent(vm: GuestState): void {
  if (vm.agent === undefined) throw die('No QEMU guest agent configured');
  if (vm.status !== 'running') throw die(`VM ${vm.vmid} is not running`);
  if (!agentEnabled(vm.agent)) throw die('QEMU guest agent is not enabled');
  if (!qgaUp(vm)) throw die('QEMU guest agent is not running');
}

/** QEMU refuses a command the guest's qemu-ga was started without. */
function assertAllowed(vm: GuestState, endpoint: string): void {
  const blocked = (QGA_OF[endpoint] ?? []).find((c) => vm.blockedRpcs.includes(c));
  if (blocked) {
    throw qmpFailed(
      vm,
      blocked.slice('guest-'.length),
      `The command ${blocked} has been disabled for this instance`,
    );
  }
}

function info(vm: GuestState): Record<string, unknown> {
  return {
    result: {
      version: '8.2.2',
      supported_commands: QGA_COMMANDS.map((name) => ({
        name,
        enabled: !vm.blockedRpcs.includes(name),
        'success-response': name !== 'guest-shutdown',
      })),
    },
  };
}

const qmpFailed = (vm: GuestState, cmd: string, why: string) =>
  die(`VM ${vm.vmid} qmp command 'guest-${cmd}' failed - ${why}`);

const str = (v: ParamValue | undefined): string => (typeof v === 'string' ? v : '');

function fileWrite(vm: GuestState, params: Ctx['params']): null {
  const path = str(params.file);
  let content = str(params.content);
  if (params.encode !== undefined && !isTrue(params.encode)) {
    // encode=0: the caller sent base64 and QEMU decodes it.
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(content) || content.length % 4 !== 0) {
      throw qmpFailed(vm, 'file-write', 'Invalid Base64 data');
    }
    content = Buffer.from(content, 'base64').toString('utf8');
  }
  if (!dirExists(vm, parentDir(path))) {
    throw qmpFailed(vm, 'file-open', OPEN_FAILED(path, 'wb', 'No such file or directory'));
  }
  if (vm.dirs.has(path))
    throw qmpFailed(vm, 'file-open', OPEN_FAILED(path, 'wb', 'Is a directory'));
  vm.files.set(path, content);
  return null;
}

function fileRead(vm: GuestState, path: string): Record<string, unknown> {
  const content = vm.files.get(path);
  if (content === undefined) {
    const why = vm.dirs.has(path) ? 'Is a directory' : 'No such file or directory';
    throw qmpFailed(vm, 'file-open', OPEN_FAILED(path, 'r', why));
  }
  const bytes = Buffer.from(content, 'utf8');
  if (bytes.length > MAX_READ) {
    return {
      content: bytes.subarray(0, MAX_READ).toString('utf8'),
      'bytes-read': MAX_READ,
      truncated: true,
    };
  }
  return { content, 'bytes-read': bytes.length };
}

function startExec(host: GuestHost, vm: GuestState, params: Ctx['params']): { pid: number } {
  // Repeated form fields arrive joined by NUL (pveproxy); PVE splits them back into the argv.
  const argv = str(params.command).split('\0');
  const input = typeof params['input-data'] === 'string' ? params['input-data'] : undefined;
  const proc: GuestProcess = {};
  let pending: GuestExecResult | Promise<GuestExecResult>;
  try {
    pending = host.execHandler(vm)(argv, { input, files: vm.files, dirs: vm.dirs });
  } catch (err) {
    throw qmpFailed(vm, 'exec', err instanceof Error ? err.message : String(err));
  }
  const pid = nextGuestPid++;
  let procs = processes.get(vm);
  if (!procs) processes.set(vm, (procs = new Map()));
  procs.set(pid, proc);
  Promise.resolve(pending).then(
    (result) => (proc.result = result),
    (err: unknown) => (proc.error = err instanceof Error ? err.message : String(err)),
  );
  return { pid };
}

function execStatus(vm: GuestState, pidParam: ParamValue | undefined): Record<string, unknown> {
  const pid = Number(pidParam);
  const procs = processes.get(vm);
  const proc = procs?.get(pid);
  if (!proc) throw qmpFailed(vm, 'exec-status', "Invalid parameter 'pid'");
  const result = proc.error !== undefined ? { exitCode: 1, stderr: proc.error } : proc.result;
  if (!result) return { exited: 0 };
  procs!.delete(pid);
  const out: Record<string, unknown> = { exited: 1, exitcode: result.exitCode };
  if (result.stdout) out['out-data'] = result.stdout;
  if (result.stderr) out['err-data'] = result.stderr;
  return out;
}

/** The privileges of an agent command, by generation (PVE 9 split VM.Monitor). */
function agentPerm(host: GuestHost, pve9: string): () => PermSpec {
  return () => ({ privs: [host.generation() === 9 ? pve9 : 'VM.Monitor'] });
}

export function agentRoutes(host: GuestHost): Route[] {
  const path = (cmd: string): string[] => ['nodes', '{node}', 'qemu', '{vmid}', 'agent', cmd];
  const withAgent =
    <T>(fn: (vm: GuestState, ctx: Ctx) => T) =>
    (ctx: Ctx): T => {
      const vm = host.guestVm(ctx);
      assertAgent(vm);
      assertAllowed(vm, ctx.req.path.split('/').pop() ?? '');
      return fn(vm, ctx);
    };
  return [
    {
      method: 'POST',
      path: path('ping'),
      perm: agentPerm(host, 'VM.GuestAgent.Audit'),
      schema: VM_PATH,
      handler: withAgent(() => ({})),
    },
    {
      // One of the read-only agent commands (GET): its answer is `{result: <qemu-ga's>}`.
      method: 'GET',
      path: path('info'),
      perm: agentPerm(host, 'VM.GuestAgent.Audit'),
      schema: VM_PATH,
      handler: withAgent((vm) => info(vm)),
    },
    {
      method: 'POST',
      path: path('file-write'),
      perm: agentPerm(host, 'VM.GuestAgent.FileWrite'),
      schema: {
        ...VM_PATH,
        file: { type: 'string' },
        content: { type: 'string', maxLength: MAX_WRITE_CHARS },
        encode: OPT_BOOL,
      },
      handler: withAgent((vm, ctx) => fileWrite(vm, ctx.params)),
    },
    {
      method: 'GET',
      path: path('file-read'),
      perm: agentPerm(host, 'VM.GuestAgent.FileRead'),
      schema: { ...VM_PATH, file: { type: 'string' } },
      handler: withAgent((vm, ctx) => fileRead(vm, str(ctx.params.file))),
    },
    {
      method: 'POST',
      path: path('exec'),
      perm: agentPerm(host, 'VM.GuestAgent.Unrestricted'),
      schema: {
        ...VM_PATH,
        command: { type: 'string' },
        'input-data': { type: 'string', optional: true, maxLength: 65536 },
      },
      handler: withAgent((vm, ctx) => startExec(host, vm, ctx.params)),
    },
    {
      method: 'GET',
      path: path('exec-status'),
      perm: agentPerm(host, 'VM.GuestAgent.Unrestricted'),
      schema: { ...VM_PATH, pid: { type: 'integer' } },
      handler: withAgent((vm, ctx) => execStatus(vm, ctx.params.pid)),
    },
  ];
}
