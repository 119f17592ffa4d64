import { Command, InvalidArgumentError } from 'commander';

// Imports of the heavy modules stay inside the actions: the agent CLI
// commands run in every CI job and must start fast. `create`, `finalize` and
// `status` load only ../agent/cli, which uses Node builtins alone.
/* eslint-disable @typescript-eslint/consistent-type-imports, @typescript-eslint/no-require-imports */
type ControllerModule = typeof import('./controller');
type BootstrapModule = typeof import('./bootstrap');
type AgentCliModule = typeof import('../agent/cli');
type AgentDaemonModule = typeof import('../agent/daemon');
const controller = (): ControllerModule => require('./controller');
const agentCli = (): AgentCliModule => require('../agent/cli');
const agentDaemon = (): AgentDaemonModule => require('../agent/daemon');
/* eslint-enable @typescript-eslint/consistent-type-imports, @typescript-eslint/no-require-imports */

/** Reports a controller startup failure; bootstrap (settings, logger, Temporal config) loads only then. */
function exitOnStartupError(command: string, err: unknown): never {
  return (require('./bootstrap') as BootstrapModule).exitOnStartupError(command, err); // eslint-disable-line @typescript-eslint/no-require-imports
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

/** The `e2epool` command line. */
export function buildProgram(): Command {
  const program = new Command('e2epool')
    .description('Keeps shared end-to-end CI runners clean')
    .showHelpAfterError();

  program
    .command('api')
    .description('run the REST API (E2EPOOL_PORT, default 8080)')
    .action(async () => {
      await controller()
        .runApi()
        .catch((err: unknown) => exitOnStartupError('api', err));
    });

  program
    .command('worker')
    .description('run the Temporal worker on E2EPOOL_TASK_QUEUE')
    .action(async () => {
      await controller()
        .runWorker()
        .catch((err: unknown) => exitOnStartupError('worker', err));
    });

  program
    .command('migrate')
    .description('apply pending database migrations and exit')
    .option('--revert', 'revert the latest migration instead')
    .action(async (opts: { revert?: boolean }) => {
      await controller()
        .runMigrate(opts)
        .catch((err: unknown) => exitOnStartupError('migrate', err));
    });

  program
    .command('selftest')
    .description('run a workflow through a live worker and Postgres, print the result')
    .option('--timeout <seconds>', 'give up after this many seconds', positiveInt, 60)
    .action(async (opts: { timeout: number }) => {
      await controller()
        .runSelfTest(opts)
        .catch((err: unknown) => exitOnStartupError('selftest', err));
    });

  program
    .command('agent')
    .description('run the agent daemon on a runner host (until SIGTERM or SIGINT)')
    .option(
      '--config <path>',
      'agent YAML config (default $E2EPOOL_AGENT_CONFIG or /etc/e2epool/agent.yml)',
    )
    .action(async (opts: { config?: string }) => {
      const code = await agentDaemon().runAgentCommand({ configPath: opts.config });
      exitAfterShutdown(code);
    });

  program
    .command('create')
    .description('take a checkpoint for this CI job through the agent; prints its name')
    .requiredOption(
      '--job-id <id>',
      'the CI job id: $CI_JOB_ID in GitLab CI, ${{ job.check_run_id }} in GitHub Actions',
    )
    .option('--socket <path>', 'agent socket (default from the agent config)')
    .action(async (opts: { jobId: string; socket?: string }) => {
      process.exitCode = await agentCli().createAction({ jobId: opts.jobId, socket: opts.socket });
    });

  program
    .command('finalize')
    .description("report how the CI job ended; prints the controller's answer")
    .requiredOption('--checkpoint <name>', 'checkpoint name printed by `e2epool create`')
    .requiredOption(
      '--status <status>',
      "success, failure or canceled (GitLab's $CI_JOB_STATUS `failed` means failure)",
      finalizeStatus,
    )
    .option('--socket <path>', 'agent socket (default from the agent config)')
    .action(
      async (opts: {
        checkpoint: string;
        status: ReturnType<AgentCliModule['parseFinalizeStatus']>;
        socket?: string;
      }) => {
        process.exitCode = await agentCli().finalizeAction(opts);
      },
    );

  program
    .command('status')
    .description("print a checkpoint's name, state and result")
    .requiredOption('--checkpoint <name>', 'checkpoint name')
    .option('--socket <path>', 'agent socket (default from the agent config)')
    .action(async (opts: { checkpoint: string; socket?: string }) => {
      process.exitCode = await agentCli().statusAction(opts);
    });

  return program;
}

/** Usage errors exit 1 (commander's default), never 2: 2 means "agent not running". */
function finalizeStatus(v: string) {
  try {
    return agentCli().parseFinalizeStatus(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/**
 * Ends the daemon once its shutdown is done. Normally nothing is left and the
 * process ends by itself; the unref'd timer only cuts short a straggler.
 */
function exitAfterShutdown(code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 2000).unref();
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => exitOnStartupError('', err));
}
