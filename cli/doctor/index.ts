/**
 * `e2epool doctor`: checks, in order, that this controller is wired up right
 * and prints one line per check. It writes nothing: no database writes (not
 * even the migrations table TypeORM would create), no GitLab, GitHub or
 * Proxmox mutation, no workflow start. Every check has a deadline, so a hung
 * dependency is a failing line, not a hang. Secrets are never printed.
 *
 * Each group of checks lives in a module of its own; check.ts holds what they share.
 */
import { GitHubClient } from '../../activities/github/client';
import { GitLabClient } from '../../activities/gitlab/client';
import { proxmoxClientFactory } from '../../activities/proxmox/steps';
import type { Inventory } from '../../config/inventory';
import { ConfigError, loadSettings, type Settings } from '../../config/settings';
import { loadTemporalSettings, type TemporalConnectSettings } from '../../config/temporal';
import { agentChecks } from './agents';
import {
  bad,
  DOCTOR_EXIT,
  formatCheck,
  type Context,
  type DoctorCheck,
  type DoctorOptions,
} from './check';
import { githubRunnerCheck, gitlabRunnerCheck, gitlabTokenCheck } from './ci';
import { agentCredentialCheck, inventoryCheck } from './inventory';
import { databaseCheck, type Database } from './postgres';
import { proxmoxChecks } from './proxmox';
import { temporalChecks } from './temporal';

export { DOCTOR_EXIT, formatCheck, type DoctorCheck, type DoctorOptions } from './check';

/** Runs `fn` over `items`, at most `limit` at once, keeping their order. */
async function mapLimited<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  });
  await Promise.all(lanes);
  return out;
}

/** Runs every check; never throws for what it checks (a bad setting is a failing `settings` line). */
export async function runChecks(
  opts: DoctorOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<DoctorCheck[]> {
  let settings: Settings;
  let temporal: TemporalConnectSettings;
  try {
    settings = loadSettings(env);
    temporal = loadTemporalSettings(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return [
      bad('settings', null, err.message, 'fix the setting (see docs/reference.md, "Settings")'),
    ];
  }
  const c: Context = { settings, temporal, ms: Math.round(opts.timeout * 1000) };

  const [temporalResults, db] = await Promise.all([temporalChecks(c), databaseCheck(c)]);
  try {
    const checks: DoctorCheck[] = [
      temporalResults[0]!,
      temporalResults[1]!,
      db.check,
      temporalResults[2]!,
    ];
    const inv = await inventoryCheck(c, db);
    checks.push(inv.check);
    if (!inv.inventory) return checks;
    checks.push(agentCredentialCheck(inv.inventory));
    checks.push(...(await runnerChecks(c, db, inv.inventory)));
    return checks;
  } finally {
    await db.ds?.destroy().catch(() => undefined);
  }
}

/** `gitlab-token` (when a runner uses GitLab), then each runner's checks, in inventory order. */
async function runnerChecks(
  c: Context,
  db: Database,
  inventory: Inventory,
): Promise<DoctorCheck[]> {
  const { settings } = c;
  const runners = [...inventory.runners];
  const httpTimeout = Math.min(settings.httpTimeoutSeconds * 1000, c.ms);
  const gitlab =
    settings.gitlabUrl && settings.gitlabToken
      ? new GitLabClient(settings.gitlabUrl, settings.gitlabToken, httpTimeout)
      : null;
  const github = settings.githubToken
    ? new GitHubClient(settings.githubUrl, settings.githubToken, httpTimeout)
    : null;
  const checks: DoctorCheck[] = [];
  const usesGitlab = runners.some((r) => r.ci_adapter === 'gitlab' && r.gitlab_runner_id);
  if (gitlab && usesGitlab) checks.push(await gitlabTokenCheck(c, gitlab));

  const clientFor = proxmoxClientFactory({
    settings: { ...settings, httpTimeoutSeconds: httpTimeout / 1000 },
  });
  const agents = await agentChecks(c, db, runners);
  const perRunner = await mapLimited(runners, 8, async (r) => {
    const out: DoctorCheck[] = [];
    if (r.ci_adapter === 'gitlab' && r.gitlab_runner_id)
      out.push(await gitlabRunnerCheck(c, gitlab, r));
    if (r.ci_adapter === 'github' && r.github_runner_id)
      out.push(await githubRunnerCheck(c, github, r));
    if (r.backend === 'proxmox') out.push(...(await proxmoxChecks(c, clientFor, r)));
    out.push(agents.get(r.runner_id)!);
    return out;
  });
  for (const list of perRunner) checks.push(...list);
  return checks;
}

/** `e2epool doctor [--json] [--timeout s]`: prints the report, returns the exit code. */
export async function runDoctor(opts: DoctorOptions): Promise<number> {
  const checks = await runChecks(opts);
  const allOk = checks.every((k) => k.ok);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ ok: allOk, checks }, null, 2)}\n`);
  } else {
    for (const k of checks) process.stdout.write(`${formatCheck(k)}\n`);
  }
  return allOk ? DOCTOR_EXIT.ok : DOCTOR_EXIT.failed;
}
