import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { exitCodeForRefusal } from './output';

/** Where the controller's REST API is when neither --url nor E2EPOOL_URL says. */
export const DEFAULT_CONTROLLER_URL = 'http://127.0.0.1:8080';

/** How long one admin request may take before the command gives up (exit 1). */
const REQUEST_TIMEOUT_MS = 30_000;

/** A usage error: the command was called wrong (exit 2), nothing was sent. */
class UsageError extends Error {}

export interface AdminOptions {
  url?: string;
  adminTokenFile?: string;
}

/** The controller URL and admin token: --url, E2EPOOL_URL; E2EPOOL_ADMIN_TOKEN or --admin-token-file. */
function adminTarget(o: AdminOptions, env: NodeJS.ProcessEnv): { url: string; token: string } {
  const url = (o.url ?? env.E2EPOOL_URL ?? DEFAULT_CONTROLLER_URL).replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]/.test(url)) throw new UsageError(`--url: expected an http(s) URL`);
  let token: string | undefined;
  if (o.adminTokenFile !== undefined) {
    try {
      token = readFileSync(o.adminTokenFile, 'utf8').trim();
    } catch (err) {
      throw new UsageError(
        `--admin-token-file: cannot read ${o.adminTokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
  } else {
    token = env.E2EPOOL_ADMIN_TOKEN?.trim();
  }
  if (!token)
    throw new UsageError('no admin token: set E2EPOOL_ADMIN_TOKEN or pass --admin-token-file');
  return { url, token };
}

/**
 * POSTs an admin action on one runner and prints the runner's JSON view;
 * returns the exit code: 0 done, 1 refused (the API's detail on stderr) or
 * unreachable, 2 a usage error. The admin token never appears in output.
 */
export async function runRunnerAction(
  runnerId: string,
  action: 'quarantine' | 'unquarantine',
  o: AdminOptions & { reason?: string },
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return postAdmin(
    `/api/runners/${encodeURIComponent(runnerId)}/${action}`,
    action === 'quarantine' ? { reason: o.reason } : {},
    action,
    o,
    env,
  );
}

/**
 * POSTs `body` to an admin route and prints the answer as JSON; returns the
 * exit code: 0 done, 1 refused (`what` and the API's detail on stderr) or
 * unreachable, 75 a temporary refusal (423, 429, 503), 2 a usage error. The admin token never appears in output.
 */
export async function postAdmin(
  path: string,
  body: unknown,
  what: string,
  o: AdminOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let target: { url: string; token: string };
  try {
    target = adminTarget(o, env);
  } catch (err) {
    process.stderr.write(`e2epool: ${(err as Error).message}\n`);
    return 2;
  }
  let res: Response;
  try {
    res = await fetch(`${target.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${target.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    const c = (
      err as { cause?: { code?: string; message?: string; errors?: Array<{ code?: string }> } }
    ).cause;
    const cause = c?.code ?? c?.errors?.[0]?.code ?? c?.message ?? (err as Error).message;
    process.stderr.write(`e2epool: cannot reach the controller at ${target.url}: ${cause}\n`);
    return 1;
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
    return exitCodeForRefusal(res.status);
  }
  process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
  return 0;
}

const RUNNERS_HELP = `
Talks to the controller's admin API: --url, else $E2EPOOL_URL, else
${DEFAULT_CONTROLLER_URL}; the admin token from $E2EPOOL_ADMIN_TOKEN or
--admin-token-file. Prints the runner as JSON. Exit codes: 0 done, 1 refused
(the API's detail on stderr) or the controller unreachable, 2 a usage error,
75 a temporary refusal (423, 429, 503).`;

/** `e2epool runners quarantine|unquarantine RUNNER`: the admin API from a shell. */
export function addRunnerCommands(program: Command): void {
  const runners = program
    .command('runners')
    .description("change a runner through the controller's admin API")
    .addHelpText('after', RUNNERS_HELP);
  const usageExit = (err: { exitCode: number }) => process.exit(err.exitCode === 0 ? 0 : 2);
  runners.exitOverride(usageExit);
  const common = (c: Command) =>
    c
      .option('--url <url>', `controller URL (default $E2EPOOL_URL or ${DEFAULT_CONTROLLER_URL})`)
      .option('--admin-token-file <path>', 'read the admin token from this file')
      .exitOverride(usageExit);

  common(
    runners
      .command('quarantine')
      .description('quarantine a runner: creates get 423, it stays paused until unquarantined')
      .argument('<runner>', 'runner id')
      .requiredOption('--reason <text>', 'why (shown on the fleet page and in the API)'),
  ).action(async (runner: string, opts: AdminOptions & { reason: string }) => {
    process.exitCode = await runRunnerAction(runner, 'quarantine', opts);
  });

  common(
    runners
      .command('unquarantine')
      .description('end a quarantine: the runner takes checkpoints again and is unpaused')
      .argument('<runner>', 'runner id'),
  ).action(async (runner: string, opts: AdminOptions) => {
    process.exitCode = await runRunnerAction(runner, 'unquarantine', opts);
  });
}
