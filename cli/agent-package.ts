import type { Command } from 'commander';
import { setBuildInfo, type BuildInfo } from '../common/build-info';
import { runFromArgv } from './agent-commands';
import { buildProgram } from './main';

/**
 * The entry point of the agent package (`npm run package`, see
 * agent/packaging/build-package.ts): the single-file bundle
 * e2epool-agent-<version>.js, the executable built from it and the .deb.
 *
 * It is the `e2epool` command line cut down to what a runner host runs: the
 * daemon (`agent`) and the commands CI jobs run through it (`create`,
 * `finalize`, `status`, `logs`, `ping`). The controller's commands are not in
 * it (the package build replaces their modules with a stub), so neither are
 * Temporal, TypeORM or express: the bundle needs nothing but Node, and a
 * single-executable application cannot `require()` files beside it anyway.
 */

/** The version and commit the package build bakes in (esbuild `define`); absent when compiled by tsc. */
declare const E2EPOOL_PACKAGE_BUILD_INFO: BuildInfo | undefined;

/** The commands of the agent package, in the full CLI's order. */
export const AGENT_PACKAGE_COMMANDS: readonly string[] = [
  'agent',
  'create',
  'finalize',
  'status',
  'ping',
  'logs',
];

/** The full program without the controller's commands (their help would promise what is not there). */
export function buildAgentProgram(): Command {
  const program = buildProgram();
  const commands = program.commands as Command[];
  for (let i = commands.length - 1; i >= 0; i--) {
    if (!AGENT_PACKAGE_COMMANDS.includes(commands[i]!.name())) commands.splice(i, 1);
  }
  return program;
}

/** Runs the agent package's command line on `argv` (process.argv: node, script, arguments). */
export function main(argv: readonly string[]): Promise<void> {
  if (typeof E2EPOOL_PACKAGE_BUILD_INFO !== 'undefined' && E2EPOOL_PACKAGE_BUILD_INFO) {
    setBuildInfo(E2EPOOL_PACKAGE_BUILD_INFO);
  }
  // As bin/e2epool.js: a plain call of a CI job's command skips commander.
  return (
    runFromArgv(argv.slice(2)) ??
    buildAgentProgram()
      .parseAsync([...argv])
      .then(() => undefined)
  );
}

if (require.main === module || typeof E2EPOOL_PACKAGE_BUILD_INFO !== 'undefined') {
  main(process.argv).catch((err: unknown) => {
    process.stderr.write(`e2epool: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
