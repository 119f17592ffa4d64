/**
 * What every `e2epool` command shares about its output and exit code, so the
 * conventions hold for every command (docs/reference.md, "Command line: output and exit codes"):
 * - results on stdout, everything else (logs, notes, errors) on stderr, so
 *   `e2epool export-inventory > registry.yml` writes a clean file;
 * - `--json`: one JSON document on stdout (`logs --json`: one per line), its
 *   shape documented and only ever extended;
 * - the exit codes of CLI_EXIT, a usage error 2 everywhere.
 *
 * Node builtins and type imports only: cheap to load from any command.
 */
import type { CommanderError } from 'commander';
import { CLI_EXIT, exitCodeForRefusal } from '../common/failures';

export { CLI_EXIT, exitCodeForRefusal };

/**
 * Commander's exit hook for every command: help and --version exit 0, any
 * usage error (unknown option, missing argument, bad value, no subcommand) 2.
 */
export function usageExit(err: CommanderError): never {
  process.exit(err.exitCode === 0 ? CLI_EXIT.ok : CLI_EXIT.usage);
}

/** Writes `value` to stdout as one JSON document (pretty: indented, for a person reading it). */
export function printJson(value: unknown, o: { pretty?: boolean } = {}): void {
  process.stdout.write(`${JSON.stringify(value, null, o.pretty ? 2 : undefined)}\n`);
}

/** The exit code table, as `e2epool --help` shows it (docs/reference.md has the same table). */
export const EXIT_CODES_HELP = `
Exit codes (every command):
  0   success
  1   failed (an error reply, a failing check, a local error)
  2   usage error; for create, finalize, status, logs, ping also: the agent is not running
  75  temporary refusal, try again later: cooldown past --wait, runner busy (409 on
      create), draining or quarantined (423), controller unavailable (503)
  78  configuration error: a bad setting or inventory, the database schema behind
  130 interrupted (Ctrl-C)`;
