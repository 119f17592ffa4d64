/**
 * `e2epool doctor`: checks, in order, that this controller is wired up right
 * and prints one line per check. It writes nothing: no database writes (not
 * even the migrations table TypeORM would create), no GitLab, GitHub or
 * Proxmox mutation, no workflow start. Every check has a deadline, so a hung
 * dependency is a failing line, not a hang. Secrets are never printed.
 *
 * Each group of checks lives in a module of its own; check.ts holds what they share.
 */
import { eachLimited } from '../../common/each-limited';
import { GitHubClient } from '../../activities/github/client';
import { GitLabClient } from '../../activities/gitlab/client';
import { proxmoxClientFactory } from '../../activities/proxmox/steps';
import type { Inventory } from '../../config/inventory';
import type { ProxmoxRunner } from '../../config/runner-schema';
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
import { printJson } from '../output';
import { temporalChecks } from './temporal';

export { DOCTOR_EXIT, formatCheck, type DoctorCheck, type DoctorOptions } from './check';

/**
 * Runs `fn` over `items`, at most `limit` at once; `done` gets each result in
 * the items' order, as soon as it and every one before it are there.
 */
async function eachLimitedInOrder<T, R>(
  items: T[],
  limit: number,
  fn: (t: T) => Promise<R>,
  done: (r: R) => void,
): Promise<void> {
  const out = new Map<number, R>();
  let flushed = 0;
  await eachLimited(
    items.map((item, i) => ({ item, i })),
    limit,
    async ({ item, i }) => {
      out.set(i, await fn(item));
      for (; out.has(flushed); flushed++) done(out.get(flushed)!);
    },
  );
}

/**
 * Runs every check; never throws for what it checks (a bad setting is a
 * failing `settings` line). `onCheck` gets each check in report order as soon
 * as it is known (the text report streams its lines so).
 */
export async function runChecks(
  opts: DoctorOptions,
  env: NodeJS.ProcessEnv = process.env,
  onCheck: (k: DoctorCheck) => void = () => undefined,
): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const report = (...ks: DoctorCheck[]) => {
    for (const k of ks) {
      checks.push(k);
      onCheck(k);
    }
  };
  let settings: Settings;
  let temporal: TemporalConnectSettings;
  try {
    settings = loadSettings(env);
    temporal = loadTemporalSettings(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    report(
      bad('settings', null, err.message, 'fix the setting (see docs/reference.md, "Settings")'),
    );
    return checks;
  }
  const c: Context = { settings, temporal, ms: Math.round(opts.timeout * 1000) };

  const [temporalResults, db] = await Promise.all([temporalChecks(c), databaseCheck(c)]);
  try {
    report(temporalResults[0]!, temporalResults[1]!, db.check, temporalResults[2]!);
    const inv = await inventoryCheck(c, db);
    report(inv.check);
    if (!inv.inventory) return checks;
    report(agentCredentialCheck(inv.inventory));
    await runnerChecks(c, db, inv.inventory, report);
    return checks;
  } finally {
    await db.ds?.destroy().catch(() => undefined);
  }
}

/** Reports `gitlab-token` (when a runner uses GitLab), then each runner's checks, in inventory order. */
async function runnerChecks(
  c: Context,
  db: Database,
  inventory: Inventory,
  report: (...ks: DoctorCheck[]) => void,
): Promise<void> {
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
  const usesGitlab = runners.some((r) => r.ci_adapter === 'gitlab' && r.gitlab_runner_id);
  if (gitlab && usesGitlab) report(await gitlabTokenCheck(c, gitlab));

  const clientFor = proxmoxClientFactory({
    settings: { ...settings, httpTimeoutSeconds: httpTimeout / 1000 },
  });
  const agents = await agentChecks(c, db, runners);
  await eachLimitedInOrder(
    runners,
    8,
    async (r) => {
      const out: DoctorCheck[] = [];
      if (r.ci_adapter === 'gitlab' && r.gitlab_runner_id)
        out.push(await gitlabRunnerCheck(c, gitlab, r));
      if (r.ci_adapter === 'github' && r.github_runner_id)
        out.push(await githubRunnerCheck(c, github, r));
      // proxmox-baseline checks what resets roll back to now: a refresh's baseline, else the configured one.
      if (r.backend === 'proxmox')
        out.push(...(await proxmoxChecks(c, clientFor, withCurrentBaseline(inventory, r))));
      out.push(agents.get(r.runner_id)!);
      return out;
    },
    (list) => report(...list),
  );
}

/** The runner with `baseline_snapshot` set to its current baseline (config/runner-state.ts). */
function withCurrentBaseline(inventory: Inventory, r: ProxmoxRunner): ProxmoxRunner {
  const current = inventory.currentBaseline(r.runner_id);
  return current ? { ...r, baseline_snapshot: current } : r;
}

/**
 * `e2epool doctor [--json] [--timeout s]`: prints the report, returns the
 * exit code. Text: each line as soon as its check (and those before it) is
 * done. `--json`: one document at the end, `{ok, checks: [...]}`.
 */
export async function runDoctor(opts: DoctorOptions): Promise<number> {
  const checks = await runChecks(opts, process.env, (k) => {
    if (!opts.json) process.stdout.write(`${formatCheck(k)}\n`);
  });
  const allOk = checks.every((k) => k.ok);
  if (opts.json) printJson({ ok: allOk, checks }, { pretty: true });
  return allOk ? DOCTOR_EXIT.ok : DOCTOR_EXIT.failed;
}
