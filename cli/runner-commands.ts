import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { CHECKPOINT_STATES } from '../common/states';
import {
  checkpointsTable,
  decisionText,
  EXIT,
  exitCodeOfStatus,
  runnerChangeText,
  runnersTable,
  runnerText,
} from './operator-output';
import { usageExit } from './output';

/** Where the controller's REST API is when neither --url nor E2EPOOL_URL says. */
export const DEFAULT_CONTROLLER_URL = 'http://127.0.0.1:8080';

/** How long one admin request may take before the command gives up (exit 75). */
const REQUEST_TIMEOUT_MS = 30_000;

/** The longest quarantine reason the API accepts (api/runner-routes.ts MAX_QUARANTINE_REASON). */
const MAX_REASON = 500;

/** Why nothing was sent: a usage error (exit 2) or a configuration error (exit 78). */
class NotSent extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export interface AdminOptions {
  url?: string;
  adminTokenFile?: string;
}

/** The controller URL and admin token: --url, E2EPOOL_URL; E2EPOOL_ADMIN_TOKEN or --admin-token-file. */
function adminTarget(o: AdminOptions, env: NodeJS.ProcessEnv): { url: string; token: string } {
  const url = (o.url ?? env.E2EPOOL_URL ?? DEFAULT_CONTROLLER_URL).replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]/.test(url))
    throw o.url !== undefined
      ? new NotSent('--url: expected an http(s) URL', EXIT.usage)
      : new NotSent('E2EPOOL_URL: expected an http(s) URL', EXIT.config);
  let token: string | undefined;
  if (o.adminTokenFile !== undefined) {
    try {
      token = readFileSync(o.adminTokenFile, 'utf8').trim();
    } catch (err) {
      throw new NotSent(
        `--admin-token-file: cannot read ${o.adminTokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        EXIT.config,
      );
    }
  } else {
    token = env.E2EPOOL_ADMIN_TOKEN?.trim();
  }
  if (!token)
    throw new NotSent(
      'no admin token: set E2EPOOL_ADMIN_TOKEN or pass --admin-token-file',
      EXIT.config,
    );
  return { url, token };
}

/** Why fetch failed, in a word (ECONNREFUSED, ENOTFOUND, a timeout). */
function networkCause(err: unknown): string {
  const c = (
    err as { cause?: { code?: string; message?: string; errors?: Array<{ code?: string }> } }
  ).cause;
  return c?.code ?? c?.errors?.[0]?.code ?? c?.message ?? (err as Error).message;
}

/**
 * One admin API request. Returns the exit code and, when it is 0, the
 * answer; on anything else `what` and the reason are on stderr: 1 refused
 * (the API's detail), 2 usage, 75 unreachable or 423/429/502/503/504, 78 no or a
 * refused admin token. The admin token never appears in output.
 */
export async function adminRequest(
  method: 'GET' | 'POST',
  path: string,
  body: unknown,
  what: string,
  o: AdminOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number; answer?: unknown }> {
  let target: { url: string; token: string };
  try {
    target = adminTarget(o, env);
  } catch (err) {
    process.stderr.write(`e2epool: ${(err as Error).message}\n`);
    return { code: (err as NotSent).exitCode };
  }
  let res: Response;
  try {
    res = await fetch(`${target.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${target.token}`,
        ...(method === 'POST' ? { 'content-type': 'application/json' } : {}),
      },
      ...(method === 'POST' ? { body: JSON.stringify(body ?? {}) } : {}),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    process.stderr.write(
      `e2epool: ${what}: cannot reach the controller at ${target.url}: ${networkCause(err)}\n`,
    );
    return { code: EXIT.temporary };
  }
  const text = await res.text();
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    answer = undefined;
  }
  if (!res.ok) {
    const detail = (answer as { detail?: unknown } | undefined)?.detail;
    const shown = typeof detail === 'string' ? detail : detail ? JSON.stringify(detail) : text;
    process.stderr.write(`e2epool: ${what} refused (HTTP ${res.status}): ${shown}\n`);
    return { code: exitCodeOfStatus(res.status) };
  }
  return { code: EXIT.ok, answer };
}

/**
 * POSTs `body` to an admin route and prints the answer as JSON; returns the
 * exit code (adminRequest's).
 */
export async function postAdmin(
  path: string,
  body: unknown,
  what: string,
  o: AdminOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return runAdmin('POST', path, body, what, { ...o, json: true }, () => '', env);
}

/** Options of a command that prints the answer as text, or as JSON with --json. */
export type OutputOptions = AdminOptions & { json?: boolean };

/** One admin request; prints the answer (JSON with --json, else `text(answer)`); returns the exit code. */
export async function runAdmin(
  method: 'GET' | 'POST',
  path: string,
  body: unknown,
  what: string,
  o: OutputOptions,
  text: (answer: never) => string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const r = await adminRequest(method, path, body, what, o, env);
  if (r.code !== EXIT.ok) return r.code;
  process.stdout.write(`${o.json ? JSON.stringify(r.answer, null, 2) : text(r.answer as never)}\n`);
  return EXIT.ok;
}

const runnerPath = (id: string, action?: string) =>
  `/api/runners/${encodeURIComponent(id)}${action ? `/${action}` : ''}`;

/** An action on one runner: quarantine (with its reason), unquarantine, drain, undrain; prints the runner. */
export async function runRunnerAction(
  runnerId: string,
  action: 'quarantine' | 'unquarantine' | 'drain' | 'undrain',
  o: OutputOptions & { reason?: string },
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const body = action === 'quarantine' ? { reason: o.reason } : {};
  return runAdmin('POST', runnerPath(runnerId, action), body, action, o, runnerChangeText, env);
}

/** `retry` or `release` of the runner's checkpoint in needs_attention. */
export async function runDecision(
  runnerId: string,
  decision: 'retry' | 'release',
  o: OutputOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return runAdmin('POST', runnerPath(runnerId, decision), {}, decision, o, decisionText, env);
}

/** `--reason`: what the API accepts (a usage error, exit 2, otherwise). */
function reasonArg(v: string): string {
  const t = v.trim();
  if (!t) throw new InvalidArgumentError('must not be empty');
  if (t.length > MAX_REASON) throw new InvalidArgumentError(`at most ${MAX_REASON} characters`);
  return t;
}

/** `--state`: checkpoint states separated by commas. */
function statesArg(v: string): string {
  const states = v.split(',').map((s) => s.trim());
  const bad = states.find((s) => !(CHECKPOINT_STATES as readonly string[]).includes(s));
  if (bad !== undefined)
    throw new InvalidArgumentError(`unknown state '${bad}' (${CHECKPOINT_STATES.join(', ')})`);
  return states.join(',');
}

/** `--limit`: 1 to 1000. */
function limitArg(v: string): string {
  if (!/^[1-9]\d{0,3}$/.test(v) || Number(v) > 1000)
    throw new InvalidArgumentError('expected an integer from 1 to 1000');
  return v;
}

const ADMIN_HELP = `
Talks to the controller's admin API: --url, else $E2EPOOL_URL, else
${DEFAULT_CONTROLLER_URL}; the admin token from $E2EPOOL_ADMIN_TOKEN or
--admin-token-file. Prints text, or the API's JSON with --json. Exit codes:
0 done, 1 refused (the API's detail on stderr), 2 a usage error, 75 the
controller unreachable or unavailable (try again), 78 no admin token or a
refused one. docs/operators.md, "Operator commands".`;

/** --url, --admin-token-file, --json; a usage error exits 2. */
function adminCommand(c: Command): Command {
  return c
    .option('--url <url>', `controller URL (default $E2EPOOL_URL or ${DEFAULT_CONTROLLER_URL})`)
    .option('--admin-token-file <path>', 'read the admin token from this file')
    .option('--json', "print the API's JSON answer")
    .exitOverride(usageExit);
}

/**
 * The operator commands (docs/operators.md, "Operator commands"): `e2epool runners
 * list|show|drain|undrain|quarantine|unquarantine`, `e2epool checkpoints
 * list`, `e2epool retry|release RUNNER`; thin clients of the admin API.
 */
export function addRunnerCommands(program: Command): void {
  addRunnersCommand(program);
  const checkpoints = program
    .command('checkpoints')
    .description("list checkpoints through the controller's admin API")
    .addHelpText('after', ADMIN_HELP)
    .exitOverride(usageExit);
  adminCommand(
    checkpoints
      .command('list')
      .description('checkpoints, newest first')
      .option('--state <states>', 'only these states, separated by commas', statesArg)
      .option('--runner <runner>', "only this runner's checkpoints")
      .option('--limit <n>', 'at most this many (default 100, at most 1000)', limitArg),
  ).action(async (opts: OutputOptions & { state?: string; runner?: string; limit?: string }) => {
    const q = new URLSearchParams();
    if (opts.state !== undefined) q.set('state', opts.state);
    if (opts.runner !== undefined) q.set('runner', opts.runner);
    if (opts.limit !== undefined) q.set('limit', opts.limit);
    const query = q.toString();
    const path = `/api/checkpoints${query ? `?${query}` : ''}`;
    process.exitCode = await runAdmin(
      'GET',
      path,
      undefined,
      'checkpoints list',
      opts,
      checkpointsTable,
    );
  });
  for (const [decision, description] of [
    ['retry', "reset the runner's checkpoint waiting in needs_attention again"],
    ['release', "give up on the runner's checkpoint in needs_attention: unpause, end reset_failed"],
  ] as const) {
    adminCommand(
      program
        .command(decision)
        .description(description)
        .argument('<runner>', 'runner id')
        .addHelpText('after', ADMIN_HELP),
    ).action(async (runner: string, opts: OutputOptions) => {
      process.exitCode = await runDecision(runner, decision, opts);
    });
  }
}

/** `e2epool runners list|show|drain|undrain|quarantine|unquarantine`. */
function addRunnersCommand(program: Command): void {
  const runners = program
    .command('runners')
    .description("see and change runners through the controller's admin API")
    .addHelpText('after', ADMIN_HELP)
    .exitOverride(usageExit);

  adminCommand(
    runners
      .command('list')
      .description('every runner (registry and inventory.yml)')
      .option('--include-inactive', 'deactivated registry runners too'),
  ).action(async (opts: OutputOptions & { includeInactive?: boolean }) => {
    const path = `/api/runners${opts.includeInactive ? '?include_inactive=true' : ''}`;
    process.exitCode = await runAdmin('GET', path, undefined, 'runners list', opts, runnersTable);
  });

  adminCommand(
    runners
      .command('show')
      .description('one runner, every field')
      .argument('<runner>', 'runner id'),
  ).action(async (runner: string, opts: OutputOptions) => {
    process.exitCode = await runAdmin(
      'GET',
      runnerPath(runner),
      undefined,
      'runners show',
      opts,
      runnerText,
    );
  });

  const actions = [
    ['drain', 'take no new checkpoints (creates get 423); the current one finishes'],
    ['undrain', 'take checkpoints again; the runner is unpaused'],
    ['unquarantine', 'end a quarantine: the runner takes checkpoints again and is unpaused'],
  ] as const;
  adminCommand(
    runners
      .command('quarantine')
      .description('quarantine a runner: creates get 423, it stays paused until unquarantined')
      .argument('<runner>', 'runner id')
      .requiredOption('--reason <text>', 'why (shown on the fleet page and in the API)', reasonArg),
  ).action(async (runner: string, opts: OutputOptions & { reason: string }) => {
    process.exitCode = await runRunnerAction(runner, 'quarantine', opts);
  });
  for (const [action, description] of actions) {
    adminCommand(
      runners.command(action).description(description).argument('<runner>', 'runner id'),
    ).action(async (runner: string, opts: OutputOptions) => {
      process.exitCode = await runRunnerAction(runner, action, opts);
    });
  }
}
