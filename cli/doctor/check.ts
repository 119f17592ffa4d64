/**
 * What every doctor check shares: the report line, how a check is run (with a
 * deadline, a throw becoming a failing line) and how a line is printed.
 */
import type { Settings } from '../../config/settings';
import type { TemporalConnectSettings } from '../../config/temporal';
import { withTimeout } from '../../worker/search-attributes';

/** One line of the report. */
export interface DoctorCheck {
  /** e.g. `temporal`, `proxmox-privileges`. */
  name: string;
  /** The runner it is about; null for the controller's own checks. */
  runner: string | null;
  ok: boolean;
  /** What was found. */
  detail: string;
  /**
   * What to do about a failure, or about a warning (an ok check with a fix:
   * it works, but is weaker than it should be); null when ok.
   */
  fix: string | null;
}

export interface DoctorOptions {
  json?: boolean;
  /** Deadline of each check, in seconds. */
  timeout: number;
}

/** Exit codes: 0 every check ok, 1 one failed (2, a usage error, is commander's, see main.ts). */
export const DOCTOR_EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** What every check group gets: the settings and each check's deadline. */
export interface Context {
  settings: Settings;
  temporal: TemporalConnectSettings;
  ms: number;
}

/** The first line of an error's message. */
export function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

export const ok = (name: string, runner: string | null, detail: string): DoctorCheck => ({
  name,
  runner,
  ok: true,
  detail,
  fix: null,
});

export const bad = (
  name: string,
  runner: string | null,
  detail: string,
  fix: string,
): DoctorCheck => ({
  name,
  runner,
  ok: false,
  detail,
  fix,
});

/** `n thing` or `n things`. */
export const plural = (n: number, thing: string): string => `${n} ${thing}${n === 1 ? '' : 's'}`;

/** Runs `fn` with a deadline; a throw or a timeout becomes a failing check. */
export async function guarded(
  name: string,
  runner: string | null,
  ms: number,
  fix: string,
  fn: () => Promise<DoctorCheck>,
): Promise<DoctorCheck> {
  try {
    return await withTimeout(`${name} check`, ms, fn());
  } catch (err) {
    return bad(name, runner, message(err), fix);
  }
}

/** One line: `ok|warn|fail <check>: <detail>[ — <fix>]`, the runner's checks prefixed with it. */
export function formatCheck(k: DoctorCheck): string {
  const name = k.runner ? `${k.runner} ${k.name}` : k.name;
  const level = !k.ok ? 'fail' : k.fix ? 'warn' : 'ok';
  return `${level} ${name}: ${k.detail}${k.fix ? ` — ${k.fix}` : ''}`;
}
