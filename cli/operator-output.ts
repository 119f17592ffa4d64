/**
 * What the operator commands print without --json (cli/runner-commands.ts),
 * and their exit codes. Text only: values come from the controller and may
 * hold anything a runner's registration or a command's output held, so
 * control characters are shown escaped and can never steer the terminal.
 */
import { CLI_EXIT, exitCodeForRefusal } from './output';

/** The operator commands' exit codes: the CLI's (docs/reference.md, "Command line: output and exit codes"). */
export const EXIT = {
  ok: CLI_EXIT.ok,
  /** Refused by the controller (its detail on stderr), or it failed. */
  failed: CLI_EXIT.error,
  /** The command was called wrong; nothing was sent. */
  usage: CLI_EXIT.usage,
  /** The controller is unreachable or answered 423/429/502/503/504: try again later. */
  temporary: CLI_EXIT.temporary,
  /** No admin token, an unreadable token file, a bad E2EPOOL_URL, or a token the controller refuses. */
  config: CLI_EXIT.config,
} as const;

/**
 * The exit code of a controller's refusal: the CLI's (exitCodeForRefusal),
 * and for an admin request also 78 for a refused admin token (401/403: fix
 * the configuration) and 75 for a proxy's 502/504 (the controller is away).
 */
export function exitCodeOfStatus(status: number): number {
  if (status === 401 || status === 403) return EXIT.config;
  if (status === 502 || status === 504) return EXIT.temporary;
  return exitCodeForRefusal(status);
}

/** A value as one line of terminal text: control characters escaped, null as `-`. */
export function cell(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  const s = typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
  return s.replace(
    // eslint-disable-next-line no-control-regex -- these are what is escaped
    /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

/** Rows under a header, columns padded with two spaces between them; the last column is not padded. */
export function table(header: string[], rows: unknown[][]): string {
  const text = [header, ...rows.map((r) => r.map(cell))];
  const widths = header.map((_, i) => Math.max(...text.map((r) => (r[i] ?? '').length)));
  return text
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '))
    .join('\n');
}

/** The first line of a text, cut to `max` characters. */
function short(s: unknown, max = 80): string | null {
  if (typeof s !== 'string' || s === '') return null;
  const line = s.split('\n', 1)[0]!;
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

type Json = Record<string, unknown>;

function quarantineText(r: Json): string {
  return r.quarantined
    ? `quarantined (${cell(r.quarantine_source)}): ${cell(r.quarantine_reason)}`
    : 'no';
}

/** `e2epool runners list`. */
export function runnersTable(runners: Json[]): string {
  if (!runners.length) return 'No runners.';
  return table(
    ['RUNNER', 'BACKEND', 'SOURCE', 'ACTIVE', 'DRAINING', 'QUARANTINE'],
    runners.map((r) => [
      r.runner_id,
      r.backend,
      r.source,
      r.is_active ? 'yes' : 'no',
      r.draining ? 'yes' : 'no',
      quarantineText(r),
    ]),
  );
}

/** `e2epool runners show`: one field a line. */
export function runnerText(r: Json): string {
  const width = Math.max(...Object.keys(r).map((k) => k.length));
  return Object.entries(r)
    .map(([k, v]) => `${k.padEnd(width)}  ${cell(v)}`)
    .join('\n');
}

/** A runner after drain, undrain, quarantine or unquarantine: what it is now. */
export function runnerChangeText(r: Json): string {
  return `runner ${cell(r.runner_id)}: ${r.draining ? 'draining' : 'not draining'}, quarantine: ${quarantineText(r)}`;
}

/** `e2epool checkpoints list`. */
export function checkpointsTable(checkpoints: Json[]): string {
  if (!checkpoints.length) return 'No checkpoints.';
  return table(
    ['NAME', 'RUNNER', 'JOB', 'STATE', 'FINALIZE', 'CREATED', 'ENDED', 'ERROR'],
    checkpoints.map((c) => [
      c.name,
      c.runner_id,
      c.job_id,
      c.state,
      c.finalize_status,
      c.created_at,
      c.ended_at,
      short(c.error_detail),
    ]),
  );
}

/** `e2epool retry|release`: what was sent to which checkpoint. */
export function decisionText(d: Json): string {
  return `${cell(d.detail)} (checkpoint ${cell(d.checkpoint_name)} of runner ${cell(d.runner_id)})`;
}
