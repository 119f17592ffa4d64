import {
  LOGS_PAGE_BYTES,
  LOGS_PAGE_ENTRIES,
  type ErrorBody,
  type LogsData,
  type LogsEntry,
  type RequestType,
} from '../common/agent-protocol';
import { CLI_EXIT, exitCodeForRefusal } from '../common/failures';
import type { FinalizeStatus } from '../common/states';
import { cliConnectSettings } from './config';
import { ipcRequest, IpcClientError } from './ipc';
import { isRecord } from './messages';

/**
 * The runner-side CLI commands `create`, `finalize`, `status`, `logs` and `ping`. They
 * run in every CI job: this module and what it imports use Node builtins only
 * (common/failures imports nothing; never common/fail, which loads Temporal).
 *
 * Exit codes (CLI_EXIT of the failure catalog): 0 success, 1 any error,
 * 2 the agent is not running, 75 a temporary refusal (exitCodeForRefusal);
 * `logs` stopped by Ctrl-C: 130.
 *
 * `--json` (status, logs, ping) prints the result as JSON on stdout, in the
 * shapes docs/reference.md documents ("Command line: output and exit codes"); errors stay text
 * on stderr, with the same exit codes.
 */

/** Where the commands write and what environment they see (tests substitute these). */
export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  env: NodeJS.ProcessEnv;
}

/**
 * The real stdout, stderr and environment. A reader that goes away
 * (`e2epool logs … | head`) ends the command quietly, as with other tools,
 * instead of an unhandled EPIPE.
 */
const processIo = (): CliIo => {
  process.stdout.once('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    env: process.env,
  };
};

export interface ConnectContext {
  /** `--socket`; else E2EPOOL_SOCKET_PATH, agent.yml's socket_path, the default. */
  socket?: string | undefined;
}

export interface CreateContext extends ConnectContext {
  jobId: string;
  /**
   * `--wait`: how long (seconds) to wait out a cooldown 429 or a closing-run
   * 503 before giving up (default 60; 0 = fail at the first).
   */
  wait?: number;
}

/** `e2epool create --wait` by default, in seconds. */
export const DEFAULT_CREATE_WAIT_SECONDS = 60;

/** The wait before asking again when a 429 or 503 does not say how long (ms). */
const CREATE_RETRY_MS = 1000;

/** Parses `--wait SECONDS`: a non-negative number; throws with a usage message. */
export function parseWaitSeconds(value: string): number {
  const n = value.trim() === '' ? NaN : Number(value);
  if (!Number.isFinite(n) || n < 0) {
    throw new Error(`expected a number of seconds, 0 or more, got ${JSON.stringify(value)}`);
  }
  return n;
}

export interface FinalizeContext extends ConnectContext {
  checkpoint: string;
  status: FinalizeStatus;
}

export interface StatusContext extends ConnectContext {
  checkpoint: string;
  /** Print one JSON object instead of `name:`/`state:` lines. */
  json?: boolean;
}

export interface PingContext extends ConnectContext {
  /** Print one JSON object instead of the `pong from` line. */
  json?: boolean;
}

export interface LogsContext extends ConnectContext {
  checkpoint: string;
  /** Keep polling until the checkpoint has ended. */
  follow: boolean;
  /** Print one JSON object per entry (JSON Lines) instead of text lines. */
  json?: boolean;
}

/** What `logs` takes besides its flags (tests shorten the poll). */
export interface LogsOptions {
  /** Aborting it (Ctrl-C) stops at once: exit 130, nothing printed. */
  signal?: AbortSignal;
  /** With `--follow`, how long to wait after a page that was not full (1 s). */
  pollMs?: number;
}

/**
 * `--status` values and the finalize status each is sent as: ours, GitLab's
 * $CI_JOB_STATUS `failed` (fix: the old CLI refused it) and GitHub's
 * `cancelled` (its job.status). REST and the agent WebSocket take the
 * canonical values only, as the external contract says, so the CLI maps them
 * (here, not in common/states: this module loads nothing it does not need).
 */
const STATUS_ALIASES: Record<string, FinalizeStatus> = {
  success: 'success',
  failure: 'failure',
  failed: 'failure',
  canceled: 'canceled',
  cancelled: 'canceled',
};

/** Maps a `--status` value to a finalize status; throws with a usage message. */
export function parseFinalizeStatus(value: string): FinalizeStatus {
  const status = Object.prototype.hasOwnProperty.call(STATUS_ALIASES, value)
    ? STATUS_ALIASES[value]
    : undefined;
  if (!status) {
    throw new Error(
      `expected success, failure or canceled (or failed, cancelled), got ${JSON.stringify(value)}`,
    );
  }
  return status;
}

/**
 * Extra seconds the CLI waits beyond the agent's request_timeout, covering the
 * agent's wait for a connection (10 s). E2EPOOL_CLI_TIMEOUT (seconds) overrides the total.
 */
const CLIENT_MARGIN_SECONDS = 15;

/** An id for the IPC request, echoed in the reply (the agent uses its own on the WebSocket). */
function requestId(): string {
  return Math.floor(Math.random() * 2 ** 32)
    .toString(16)
    .padStart(8, '0');
}

type Outcome =
  { ok: true; data: Record<string, unknown> } | { ok: false; code: number; error?: ErrorBody };

interface SendOptions {
  /** Abandons the request: the outcome is CLI_EXIT.interrupted, nothing is printed. */
  signal?: AbortSignal | undefined;
  /** A clearer message for an error reply than its detail, when it has one. */
  explain?: (error: ErrorBody) => string | undefined;
  /** An error reply the caller handles itself: returned in the outcome, not printed. */
  keep?: (error: ErrorBody) => boolean;
}

/** Sends one request to the agent; on failure prints why and returns the exit code. */
async function send(
  ctx: ConnectContext,
  type: RequestType,
  payload: Record<string, unknown>,
  io: CliIo,
  o: SendOptions = {},
): Promise<Outcome> {
  const s = cliConnectSettings({ socket: ctx.socket, env: io.env });
  const path = s.socketPath;
  const override = Number(io.env.E2EPOOL_CLI_TIMEOUT);
  const timeoutSeconds =
    Number.isFinite(override) && override > 0 ? override : s.requestTimeout + CLIENT_MARGIN_SECONDS;
  let reply: unknown;
  try {
    reply = await ipcRequest(
      path,
      { id: requestId(), type, payload },
      timeoutSeconds * 1000,
      o.signal,
    );
  } catch (err) {
    if (!(err instanceof IpcClientError)) throw err;
    if (err.kind === 'aborted') return { ok: false, code: CLI_EXIT.interrupted };
    const hint = () => {
      if (s.configNote) io.err(`Note: ${s.configNote}; pass --socket or set E2EPOOL_SOCKET_PATH`);
    };
    switch (err.kind) {
      case 'not-found':
        io.err(`Error: agent is not running (socket not found: ${path})`);
        hint();
        return { ok: false, code: CLI_EXIT.agentNotRunning };
      case 'refused':
        io.err(`Error: agent is not running (connection refused: ${path})`);
        return { ok: false, code: CLI_EXIT.agentNotRunning };
      case 'permission':
        io.err(
          `Error: permission denied connecting to the agent socket ${path}: ` +
            'add this user to the group set as socket_group in the agent config',
        );
        return { ok: false, code: CLI_EXIT.error };
      case 'timeout':
        io.err(`Error: the agent did not reply in time (${err.message}, socket ${path})`);
        return { ok: false, code: CLI_EXIT.error };
      default:
        io.err(`Error: ${err.message} (socket ${path})`);
        return { ok: false, code: CLI_EXIT.error };
    }
  }
  if (!isRecord(reply)) {
    io.err('Error: unexpected reply from the agent');
    return { ok: false, code: CLI_EXIT.error };
  }
  if (reply.status !== 'ok') {
    const e = reply.error;
    const detail =
      typeof e === 'string'
        ? e
        : isRecord(e) && e.detail !== undefined && e.detail !== null
          ? typeof e.detail === 'string'
            ? e.detail
            : JSON.stringify(e.detail)
          : 'Unknown error';
    const code = isRecord(e) && typeof e.code === 'number' ? e.code : 500;
    const error: ErrorBody = { code, detail };
    if (isRecord(e) && typeof e.retry_after === 'number') error.retry_after = e.retry_after;
    const exit = exitCodeForRefusal(code, type);
    if (o.keep?.(error)) return { ok: false, code: exit, error };
    io.err(`Error: ${o.explain?.(error) ?? detail}`);
    return { ok: false, code: exit };
  }
  return { ok: true, data: isRecord(reply.data) ? reply.data : {} };
}

/** Whether the CLI runs in a GitHub Actions job (the runner sets GITHUB_ACTIONS=true). */
function inGitHubActions(env: NodeJS.ProcessEnv): boolean {
  return env.GITHUB_ACTIONS === 'true';
}

/**
 * The job's project, which the controller's job poll needs: in GitHub
 * Actions the repository, owner/name (`$GITHUB_REPOSITORY`); in GitLab CI
 * `$CI_PROJECT_ID`. Undefined when neither says.
 */
export function projectIdFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  const id = inGitHubActions(env) ? env.GITHUB_REPOSITORY : env.CI_PROJECT_ID;
  return id || undefined;
}

/**
 * What is wrong with a job id for its CI system, if anything. GitHub names
 * a job by a number (`${{ job.check_run_id }}`): the id its jobs API and
 * `workflow_job` webhooks use. No environment variable carries it (the
 * runner exports the `github` context as GITHUB_*, not `job`), and
 * `$GITHUB_JOB` is the job's key in the YAML, so it must be passed.
 */
export function jobIdWarning(jobId: string, env: NodeJS.ProcessEnv): string | undefined {
  if (!inGitHubActions(env) || /^\d+$/.test(jobId)) return undefined;
  return (
    `Warning: --job-id ${JSON.stringify(jobId)} is not GitHub's numeric job id ` +
    '(pass "${{ job.check_run_id }}"): job polls and workflow_job webhooks will not find this job'
  );
}

/** `e2epool create`: takes a checkpoint for this job and prints its name. */
export async function createAction(ctx: CreateContext, io: CliIo = processIo()): Promise<number> {
  const payload: Record<string, unknown> = { job_id: ctx.jobId };
  const projectId = projectIdFromEnv(io.env);
  if (projectId) payload.project_id = projectId;
  const warning = jobIdWarning(ctx.jobId, io.env);
  if (warning) io.err(warning);
  // A 429 (the runner's cooldown) or 503 (its previous run closing, the
  // controller briefly away) created nothing: ask again until --wait is up.
  const waitSeconds = ctx.wait ?? DEFAULT_CREATE_WAIT_SECONDS;
  const until = Date.now() + waitSeconds * 1000;
  let r: Outcome;
  // The try at the deadline is the last, whatever a timer's rounding says the time is.
  let last = false;
  for (;;) {
    r = await send(ctx, 'create', payload, io, {
      keep: (e) => (e.code === 429 || e.code === 503) && !last && Date.now() < until,
    });
    if (r.ok || !r.error) break;
    const e = r.error;
    const askedMs = e.retry_after !== undefined ? e.retry_after * 1000 : CREATE_RETRY_MS;
    const leftMs = until - Date.now();
    last = askedMs >= leftMs;
    const delayMs = Math.max(100, Math.min(askedMs, leftMs));
    io.err(
      `Note: ${e.detail} (${e.code}); trying again in ${Math.ceil(delayMs / 1000)}s ` +
        `(waiting up to ${waitSeconds}s in all, --wait)`,
    );
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }
  if (!r.ok) return r.code;
  if (typeof r.data.name !== 'string') {
    io.err('Error: the controller replied without a checkpoint name');
    return CLI_EXIT.error;
  }
  io.out(r.data.name);
  return CLI_EXIT.ok;
}

/** `e2epool finalize`: reports how the job ended and prints the controller's answer. */
export async function finalizeAction(
  ctx: FinalizeContext,
  io: CliIo = processIo(),
): Promise<number> {
  const r = await send(
    ctx,
    'finalize',
    { checkpoint_name: ctx.checkpoint, status: ctx.status, source: 'agent' },
    io,
  );
  if (!r.ok) return r.code;
  io.out(typeof r.data.detail === 'string' ? r.data.detail : 'OK');
  return CLI_EXIT.ok;
}

/** `e2epool status`: prints a checkpoint's name, state and (once set) result. */
export async function statusAction(ctx: StatusContext, io: CliIo = processIo()): Promise<number> {
  const r = await send(ctx, 'status', { checkpoint_name: ctx.checkpoint }, io);
  if (!r.ok) return r.code;
  if (ctx.json) {
    const str = (v: unknown) => (typeof v === 'string' ? v : null);
    io.out(
      JSON.stringify({
        name: str(r.data.name) ?? ctx.checkpoint,
        state: str(r.data.state) ?? 'unknown',
        result: str(r.data.finalize_status),
        verified: typeof r.data.verified === 'boolean' ? r.data.verified : null,
        verify_detail: str(r.data.verify_detail),
      }),
    );
    return CLI_EXIT.ok;
  }
  io.out(`name:   ${String(r.data.name ?? ctx.checkpoint)}`);
  io.out(`state:  ${String(r.data.state ?? 'unknown')}`);
  if (r.data.finalize_status) io.out(`result: ${String(r.data.finalize_status)}`);
  // Proof of reset, once there is an answer (docs/operators.md, "Proof of reset").
  if (typeof r.data.verified === 'boolean') {
    const detail = typeof r.data.verify_detail === 'string' ? ` (${r.data.verify_detail})` : '';
    io.out(`verified: ${r.data.verified ? 'yes' : 'NO'}${detail}`);
  }
  return CLI_EXIT.ok;
}

/**
 * `e2epool ping`: a `ping` through the agent to the controller, the path and
 * credentials of real requests (IPC → agent → WebSocket → controller), and
 * prints the round trip as this command saw it: `pong from <url> in 12 ms`.
 * Writes nothing anywhere. Exit codes as the other commands.
 */
export async function pingAction(ctx: PingContext, io: CliIo = processIo()): Promise<number> {
  const started = process.hrtime.bigint();
  const r = await send(ctx, 'ping', {}, io);
  if (!r.ok) return r.code;
  const ms = Number((process.hrtime.bigint() - started) / 1_000_000n);
  if (r.data.pong !== true) {
    io.err('Error: the controller replied to the ping without a pong');
    return CLI_EXIT.error;
  }
  const url = typeof r.data.controller_url === 'string' ? r.data.controller_url : null;
  if (ctx.json) io.out(JSON.stringify({ pong: true, controller_url: url, ms }));
  else io.out(`pong from ${url ?? 'the controller'} in ${ms} ms`);
  return CLI_EXIT.ok;
}

/** With `--follow`, the wait after a page that was not full. */
const FOLLOW_POLL_MS = 1000;

/**
 * A 400 that names the request `type` answers a `logs` request only from an
 * agent or a controller older than it: ours listed the types it knows
 * (`Malformed request: type must be one of create, finalize, status, ping`);
 * a controller names the field (ours, and the Python one behind an agent that
 * forwards requests unchanged). A new controller answers a bad payload with 422.
 */
function explainUnknownLogs(e: ErrorBody): string | undefined {
  if (e.code !== 400 || !/\btype\b/.test(e.detail)) return undefined;
  if (e.detail.startsWith('Malformed request: type must be one of')) {
    return (
      'the e2epool agent on this host does not know the logs request: ' +
      'upgrade e2epool on this host and restart the agent'
    );
  }
  return (
    `the controller does not know the logs request (${e.detail.replace(/\s*\n\s*/g, ' ')}): ` +
    'upgrade the e2epool controller'
  );
}

/** The data of a `logs` reply, or null when it is not one. */
function logsData(data: Record<string, unknown>): LogsData | null {
  const { entries, next, done } = data;
  if (!Array.isArray(entries) || !Number.isSafeInteger(next) || typeof done !== 'boolean')
    return null;
  for (const e of entries as unknown[]) {
    if (!isRecord(e) || !Number.isSafeInteger(e.seq) || typeof e.kind !== 'string') return null;
  }
  return { entries: entries as LogsEntry[], next: next as number, done };
}

/** Whether a page may have been cut short (LOGS_PAGE_BYTES): more may be there already. */
function fullPage(page: LogsData): boolean {
  return (
    page.entries.length >= LOGS_PAGE_ENTRIES ||
    Buffer.byteLength(JSON.stringify(page.entries)) > LOGS_PAGE_BYTES / 2
  );
}

/** A step's detail on one line. */
const oneLine = (text: string) => text.replace(/\r?\n/g, '\\n');

/**
 * One line of `e2epool logs` output for a log entry (the format is documented
 * in docs/ci.md, "Reading a checkpoint's log", and `e2epool logs --help`; scripts
 * may rely on it):
 * - a step: `<at> step <step> <result>[ <duration_ms>ms][ <text>]`, the text on one line;
 * - a line the command printed on stdout: the line as it was;
 * - a line it printed on stderr: `[stderr] ` and the line.
 */
export function formatLogEntry(e: LogsEntry): string {
  const text = e.text === undefined || e.text === null ? undefined : String(e.text);
  switch (e.kind) {
    case 'stdout':
      return text ?? '';
    case 'stderr':
      return `[stderr] ${text ?? ''}`;
    case 'step': {
      const parts = [e.at, 'step', e.step ?? '-', e.result ?? '-'];
      if (typeof e.duration_ms === 'number') parts.push(`${e.duration_ms}ms`);
      if (text) parts.push(oneLine(text));
      return parts.join(' ');
    }
    default: // a kind newer than this CLI
      return [e.at, String(e.kind), ...(text ? [oneLine(text)] : [])].join(' ');
  }
}

/**
 * One line of `e2epool logs --json` for a log entry: a JSON object with
 * `seq`, `at`, `kind` (`step`, `stdout`, `stderr`, or a newer kind) and, when
 * set, `step`, `result`, `duration_ms`, `text` (docs/reference.md, "Command line: output and exit codes").
 */
export function jsonLogEntry(e: LogsEntry): string {
  const out: Record<string, unknown> = { seq: e.seq, at: e.at ?? null, kind: e.kind };
  if (e.step !== undefined && e.step !== null) out.step = e.step;
  if (e.result !== undefined && e.result !== null) out.result = e.result;
  if (typeof e.duration_ms === 'number') out.duration_ms = e.duration_ms;
  if (e.text !== undefined && e.text !== null) out.text = String(e.text);
  return JSON.stringify(out);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * `e2epool logs`: prints a checkpoint's log, one line per entry, all on
 * stdout (a CI log keeps one order that way). Without `follow`: what there is
 * now, page after page, then exit 0. With it: polls (every `pollMs`, at once
 * after a full page) until the checkpoint has ended, then exits 0.
 */
export async function logsAction(
  ctx: LogsContext,
  io: CliIo = processIo(),
  o: LogsOptions = {},
): Promise<number> {
  const pollMs = o.pollMs ?? FOLLOW_POLL_MS;
  let after = 0;
  for (;;) {
    const r = await send(ctx, 'logs', { checkpoint_name: ctx.checkpoint, after }, io, {
      signal: o.signal,
      explain: explainUnknownLogs,
    });
    if (!r.ok) return r.code;
    if (o.signal?.aborted) return CLI_EXIT.interrupted;
    const page = logsData(r.data);
    if (!page) {
      io.err('Error: unexpected reply to the logs request');
      return CLI_EXIT.error;
    }
    const before = after;
    for (const e of page.entries) {
      if (e.seq <= after) continue; // already printed
      io.out(ctx.json ? jsonLogEntry(e) : formatLogEntry(e));
      after = e.seq;
    }
    after = Math.max(after, page.next);
    if (page.done) return CLI_EXIT.ok;
    const full = fullPage(page);
    if (!ctx.follow) {
      if (after === before || !full) return CLI_EXIT.ok; // up to date
      continue;
    }
    if (!full) await pause(pollMs, o.signal);
    if (o.signal?.aborted) return CLI_EXIT.interrupted;
  }
}
