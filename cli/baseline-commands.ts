import { InvalidArgumentError, type Command } from 'commander';
import { usageExit } from './output';
import { DEFAULT_CONTROLLER_URL, postAdmin, type AdminOptions } from './runner-commands';

/** A positive integer option (commander calls it; a bad value is a usage error, exit 2). */
function positiveInt(value: string): number {
  if (!/^[1-9]\d*$/.test(value))
    throw new InvalidArgumentError('expected an integer of at least 1');
  return Number(value);
}

/** A comma-separated list of runner ids. */
function idList(value: string): string[] {
  const ids = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!ids.length) throw new InvalidArgumentError('expected runner ids separated by commas');
  return ids;
}

type RefreshOptions = AdminOptions & { updateCmd?: string; keep?: number };
type RolloutOptions = AdminOptions & {
  runners?: string[];
  all?: boolean;
  maxUnavailable?: number;
  canary?: string;
  updateCmd?: string;
  keep?: number;
};

/** `e2epool baseline refresh RUNNER`: starts the runner's refresh; prints `{workflow_id}`. */
export function runBaselineRefresh(
  runnerId: string,
  o: RefreshOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return postAdmin(
    `/api/runners/${encodeURIComponent(runnerId)}/baseline`,
    {
      ...(o.updateCmd !== undefined ? { update_cmd: o.updateCmd } : {}),
      ...(o.keep !== undefined ? { keep: o.keep } : {}),
    },
    'baseline refresh',
    o,
    env,
  );
}

/** `e2epool baseline rollout`: starts a fleet rollout; prints `{workflow_id}`. Exit 2 unless exactly one of --runners/--all. */
export async function runBaselineRollout(
  o: RolloutOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  if ((o.runners === undefined) === !o.all) {
    process.stderr.write('e2epool: baseline rollout: pass either --runners a,b or --all\n');
    return 2;
  }
  return postAdmin(
    '/api/baseline-rollouts',
    {
      runners: o.all ? 'all' : o.runners,
      ...(o.maxUnavailable !== undefined ? { max_unavailable: o.maxUnavailable } : {}),
      ...(o.canary !== undefined ? { canary: o.canary } : {}),
      ...(o.updateCmd !== undefined ? { update_cmd: o.updateCmd } : {}),
      ...(o.keep !== undefined ? { keep: o.keep } : {}),
    },
    'baseline rollout',
    o,
    env,
  );
}

const BASELINE_HELP = `
Talks to the controller's admin API: --url, else $E2EPOOL_URL, else
${DEFAULT_CONTROLLER_URL}; the admin token from $E2EPOOL_ADMIN_TOKEN or
--admin-token-file. Prints {"workflow_id": ...} (follow it in the Temporal Web
UI). Exit codes: 0 started, 1 refused (the API's detail on stderr), 2 a usage
error, 75 the controller unreachable or unavailable (try again), 78 no admin
token or a refused one. docs/operators.md, "Baseline refresh".`;

/** `e2epool baseline refresh|rollout`: new golden baselines through the admin API. */
export function addBaselineCommands(program: Command): void {
  const baseline = program
    .command('baseline')
    .description("refresh Proxmox runners' golden baselines through the admin API")
    .addHelpText('after', BASELINE_HELP);
  baseline.exitOverride(usageExit);
  const common = (c: Command) =>
    c
      .option('--update-cmd <cmd>', 'run in the guest (sh -c) before the new baseline is taken')
      .option(
        '--keep <n>',
        'e2epool baselines to keep, the new one included (default 2)',
        positiveInt,
      )
      .option('--url <url>', `controller URL (default $E2EPOOL_URL or ${DEFAULT_CONTROLLER_URL})`)
      .option('--admin-token-file <path>', 'read the admin token from this file')
      .exitOverride(usageExit);

  common(
    baseline
      .command('refresh')
      .description("refresh one runner's baseline (drains it meanwhile)")
      .argument('<runner>', 'runner id'),
  ).action(async (runner: string, opts: RefreshOptions) => {
    process.exitCode = await runBaselineRefresh(runner, opts);
  });

  common(
    baseline
      .command('rollout')
      .description('refresh several runners: the canary first, then the rest; stop at a failure')
      .option('--runners <ids>', 'runner ids, separated by commas', idList)
      .option('--all', 'every active Proxmox runner of the registry')
      .option('--max-unavailable <n>', 'refreshes at once (default 1)', positiveInt)
      .option('--canary <runner>', 'refresh this runner first, alone'),
  ).action(async (opts: RolloutOptions) => {
    process.exitCode = await runBaselineRollout(opts);
  });
}
