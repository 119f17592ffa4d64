import { Command, InvalidArgumentError } from 'commander';
import { exitOnStartupError } from './bootstrap';

// Imports of the heavy modules stay inside the actions: the agent CLI
// commands run in every CI job and must start fast.
type ControllerModule = typeof import('./controller'); // eslint-disable-line @typescript-eslint/consistent-type-imports
// eslint-disable-next-line @typescript-eslint/no-require-imports
const controller = (): ControllerModule => require('./controller');

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

  return program;
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => exitOnStartupError('', err));
}
