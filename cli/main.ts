import { Argument, Command, InvalidArgumentError } from 'commander';
import { versionText } from '../common/build-info';
import type { AgentCommandName, AgentCommandOptions } from './agent-commands';
import { completionScript } from './completion';
import { EXIT_CODES_HELP, usageExit } from './output';
import { addRunnerCommands } from './runner-commands';
import { addBaselineCommands } from './baseline-commands';

// Imports of the heavy modules stay inside the actions: the agent CLI
// commands run in every CI job and must start fast. `create`, `finalize`,
// `status`, `logs` and `ping` load only ./agent-commands and ../agent/cli, which
// use Node builtins alone (bin/e2epool.js runs a plain call of them without
// loading this module at all).
/* eslint-disable @typescript-eslint/consistent-type-imports, @typescript-eslint/no-require-imports */
type ControllerModule = typeof import('./controller');
type DoctorModule = typeof import('./doctor');
type BootstrapModule = typeof import('./bootstrap');
type AgentCliModule = typeof import('../agent/cli');
type AgentCommandsModule = typeof import('./agent-commands');
type AgentDaemonModule = typeof import('../agent/daemon');
type RegistryCliModule = typeof import('./registry');
const controller = (): ControllerModule => require('./controller');
const doctor = (): DoctorModule => require('./doctor');
const agentCli = (): AgentCliModule => require('../agent/cli');
const agentCommands = (): AgentCommandsModule => require('./agent-commands');
const agentDaemon = (): AgentDaemonModule => require('../agent/daemon');
const registryCli = (): RegistryCliModule => require('./registry');
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

/** `action` for an agent command: runs it and sets the exit code. */
function agentAction<K extends AgentCommandName>(
  name: K,
): (opts: AgentCommandOptions[K]) => Promise<void> {
  return async (opts) => {
    process.exitCode = await agentCommands().runAgentCommand(name, opts);
  };
}

/** `action` for a controller command: a failure is reported as its startup error. */
function controllerAction<A extends unknown[]>(
  command: string,
  run: (...args: A) => Promise<unknown>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    await run(...args).catch((err: unknown) => exitOnStartupError(command, err));
  };
}

/** The `e2epool` command line. */
export function buildProgram(): Command {
  const program = new Command('e2epool')
    .description('Keeps shared end-to-end CI runners clean')
    .showHelpAfterError()
    // Inherited by every command added after it: a usage error exits 2 everywhere.
    .exitOverride(usageExit)
    .addHelpText('after', EXIT_CODES_HELP);
  addProcessCommands(program);
  addOneShotCommands(program);
  addAgentDaemonCommand(program);
  addJobCommands(program);
  addInspectCommands(program);
  addRunnerCommands(program);
  addBaselineCommands(program);
  addCompletionCommand(program);
  addVersionEverywhere(program, versionText());
  return program;
}

/**
 * `-V, --version` on every command and subcommand (`e2epool agent --version`
 * as well as `e2epool --version`), added last so commands of any module get it.
 */
function addVersionEverywhere(cmd: Command, version: string): void {
  if (!cmd.options.some((o) => o.long === '--version'))
    cmd.version(version, '-V, --version', 'print the version and git commit');
  for (const sub of cmd.commands) addVersionEverywhere(sub, version);
}

/** `e2epool completion bash|zsh`: prints a completion script made from this command tree. */
function addCompletionCommand(program: Command): void {
  program
    .command('completion')
    .description('print a bash or zsh completion script')
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
    .addHelpText(
      'after',
      '\nbash: source <(e2epool completion bash), or save it in /etc/bash_completion.d/e2epool\n' +
        'zsh:  e2epool completion zsh > "${fpath[1]}/_e2epool", or source <(e2epool completion zsh)',
    )
    .action((shell: 'bash' | 'zsh') => {
      process.stdout.write(completionScript(program, shell));
    });
}

/** The controller's long-running processes, and `setup` and `doctor` that prepare and check them. */
function addProcessCommands(program: Command): void {
  program
    .command('api')
    .description('run the REST API (E2EPOOL_PORT, default 8080)')
    .action(controllerAction('api', () => controller().runApi()));

  program
    .command('worker')
    .description('run the Temporal worker on E2EPOOL_TASK_QUEUE')
    .action(controllerAction('worker', () => controller().runWorker()));

  program
    .command('setup')
    .description(
      "register e2epool's search attributes on the Temporal namespace and exit (the worker does it at start)",
    )
    .action(controllerAction('setup', () => controller().runSetup()));

  program
    .command('doctor')
    .description(
      'check that Temporal, Postgres, the worker, GitLab/GitHub, Proxmox and the agents are wired up right; writes nothing',
    )
    .option('--json', 'print one JSON document instead of lines')
    .option('--timeout <seconds>', 'deadline of each check', positiveInt, 10)
    .addHelpText('after', DOCTOR_HELP)
    .action(async (opts: { json?: boolean; timeout: number }) => {
      const code = await doctor()
        .runDoctor(opts)
        .catch((err: unknown) => exitOnStartupError('doctor', err));
      process.exitCode = code;
      // Keep-alive sockets (Proxmox, GitLab) must not hold the report's exit.
      setTimeout(() => process.exit(code), 200).unref();
    });
}

/** Controller commands that do one thing and exit. */
function addOneShotCommands(program: Command): void {
  program
    .command('migrate')
    .description('apply pending database migrations and exit')
    .option('--revert', 'revert the latest migration instead')
    .action(
      controllerAction('migrate', (opts: { revert?: boolean }) => controller().runMigrate(opts)),
    );

  program
    .command('import-inventory')
    .description(
      'copy the runners of an inventory file into the runner registry (tokens hashed, Proxmox tokens encrypted)',
    )
    .argument('<file>', 'the inventory.yml to import')
    .option('--dry-run', 'print what would be imported, write nothing')
    .action(
      controllerAction('import-inventory', (file: string, opts: { dryRun?: boolean }) =>
        registryCli().runImportInventory(file, opts),
      ),
    );

  program
    .command('export-inventory')
    .description(
      "print the registry's active runners as inventory YAML, without secrets; reads only",
    )
    .option('--json', 'print {"runners": [...]} as JSON instead of YAML')
    .addHelpText(
      'after',
      '\nNever writes to the database: when its schema is behind this e2epool it exits 78\n' +
        '(run `e2epool migrate` first). Logs go to stderr, so `> registry.yml` is clean.',
    )
    .action(
      controllerAction('export-inventory', (opts: { json?: boolean }) =>
        registryCli().runExportInventory(opts),
      ),
    );

  program
    .command('selftest')
    .description('run a workflow through a live worker and Postgres, print the result')
    .option('--timeout <seconds>', 'give up after this many seconds', positiveInt, 60)
    .action(
      controllerAction('selftest', (opts: { timeout: number }) => controller().runSelfTest(opts)),
    );
}

/** `e2epool agent`: the daemon on a runner host. */
function addAgentDaemonCommand(program: Command): void {
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
}

/** What a CI job runs through the agent: `create` and `finalize`. */
function addJobCommands(program: Command): void {
  program
    .command('create')
    .description('take a checkpoint for this CI job through the agent; prints its name')
    .requiredOption(
      '--job-id <id>',
      'the CI job id: $CI_JOB_ID in GitLab CI, ${{ job.check_run_id }} in GitHub Actions',
    )
    .option('--socket <path>', SOCKET_HELP)
    .option(
      '--wait <seconds>',
      "wait out the runner's cooldown (429) or its previous checkpoint closing (503) up to this long; 0: fail at once",
      waitSeconds,
      60,
    )
    .action(agentAction('create'));

  program
    .command('finalize')
    .description("report how the CI job ended; prints the controller's answer")
    .requiredOption('--checkpoint <name>', 'checkpoint name printed by `e2epool create`')
    .requiredOption(
      '--status <status>',
      "success, failure or canceled; GitLab's `failed` (failure) and GitHub's `cancelled` (canceled) too",
      finalizeStatus,
    )
    .option('--socket <path>', SOCKET_HELP)
    .action(agentAction('finalize'));
}

/** What a CI job or an operator asks through the agent: `status`, `ping`, `logs`. */
function addInspectCommands(program: Command): void {
  program
    .command('status')
    .description("print a checkpoint's name, state and result")
    .requiredOption('--checkpoint <name>', 'checkpoint name')
    .option('--socket <path>', SOCKET_HELP)
    .option(
      '--json',
      'print {"name", "state", "result", "verified", "verify_detail"} as one JSON object',
    )
    .action(agentAction('status'));

  program
    .command('ping')
    .description(
      'ping the controller through the agent (the path and credentials of real requests) and print the round trip',
    )
    .option('--socket <path>', SOCKET_HELP)
    .option('--json', 'print {"pong": true, "controller_url", "ms"} as one JSON object')
    .addHelpText(
      'after',
      '\nPrints e.g. "pong from https://e2epool.example.com/ in 12 ms".\nExit codes: 0 success, 1 error, 2 the agent is not running, 75 the controller unavailable (503).',
    )
    .action(agentAction('ping'));

  program
    .command('logs')
    .description("print a checkpoint's log: its steps and its commands' output")
    .requiredOption('--checkpoint <name>', 'checkpoint name')
    .option('--follow', 'keep printing new entries until the checkpoint has ended')
    .option('--socket <path>', SOCKET_HELP)
    .option('--json', 'print one JSON object per entry (JSON Lines)')
    .addHelpText('after', LOGS_HELP)
    .action(agentAction('logs'));
}

const SOCKET_HELP = 'agent socket (default from the agent config)';

const DOCTOR_HELP = `
Output: one line per check, in order, each as soon as it is known:
ok|warn|fail <check>: <what>[ — <what to do>] (a runner's checks start with its id).
--json: one document {"ok", "checks": [{"name", "runner", "ok", "detail", "fix"}]}
at the end. Exit codes: 0 every check ok, 1 a check failed, 2 a usage error.
See docs/operators.md, "Bring-up check".`;

const LOGS_HELP = `
Output: one line per entry, in the order they happened, all on stdout:
  <time> step <step> <result>[ <ms>ms][ <detail>]   a step started or ended
  <line>                                           a line a command printed on stdout
  [stderr] <line>                                  a line a command printed on stderr
e.g.
  2026-11-27T14:00:01.123Z step reset_cmd running
  wiping /srv/ci
  [stderr] warning: nothing to wipe
  2026-11-27T14:00:06.347Z step reset_cmd ok 5224ms exit 0; stdout: wiping /srv/ci; stderr: ...

--json: one JSON object per entry instead, {"seq", "at", "kind"} and, when set,
"step", "result", "duration_ms", "text".

Without --follow it prints the log as it is now and exits 0. With --follow it
prints new entries as they come (it asks every second) and exits 0 once the
checkpoint has ended; Ctrl-C stops it with exit code 130.
Exit codes: 0 success, 1 error (e.g. "Error: Checkpoint not found"),
2 the agent is not running, 75 the controller unavailable (503), 130 interrupted.`;

/** A bad --status is a usage error: exit 2, as the Python original's argparse. */
function finalizeStatus(v: string) {
  try {
    return agentCli().parseFinalizeStatus(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** `create --wait`: seconds, 0 or more; a usage error (exit 2) otherwise. */
function waitSeconds(v: string) {
  try {
    return agentCli().parseWaitSeconds(v);
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
