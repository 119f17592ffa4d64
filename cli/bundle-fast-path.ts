/**
 * `npm run build` step: bundles the commands a CI job runs (cli/agent-commands
 * and what it loads, Node builtins only) into one file,
 * `dist/cli/agent-commands.bundle.js`, which bin/e2epool.js loads first. One
 * file to find, read and compile instead of eight: about 1 ms of a ~57 ms
 * `e2epool status` on 2 cores, where a bare socket client written in plain
 * Node takes ~55 ms (bench/agents.ts measures all three side by side).
 *
 * esbuild is a dev dependency: it runs where the package is built, and the
 * bundle ships in `dist/`. Without the bundle (a build that skipped this
 * step) bin/e2epool.js loads the same commands from the compiled modules.
 */
import { join, relative } from 'node:path';

/** The bundle bin/e2epool.js prefers; keep its name in step with bin/e2epool.js. */
export const FAST_PATH_BUNDLE = 'agent-commands.bundle.js';

async function main(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports, @typescript-eslint/consistent-type-imports
  const esbuild = require('esbuild') as typeof import('esbuild');
  const outfile = join(__dirname, FAST_PATH_BUNDLE);
  const result = await esbuild.build({
    entryPoints: [join(__dirname, 'agent-commands.js')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // agent/config requires it lazily, only for an agent.yml its own reader cannot read.
    external: ['yaml'],
    metafile: true,
    logLevel: 'warning',
  });
  // The CI path loads no package (test/agent/cli-fast-path.test.ts): a library
  // imported into it by mistake fails the build here rather than slowing every job.
  const packages = Object.keys(result.metafile.inputs).filter((p) => p.includes('node_modules'));
  if (packages.length > 0)
    throw new Error(`the CI commands' bundle would carry packages: ${packages.join(', ')}`);
  const bytes = result.metafile.outputs[relative(process.cwd(), outfile)]?.bytes;
  process.stdout.write(
    `CLI fast path: ${outfile}${bytes !== undefined ? ` (${Math.round(bytes / 1024)} KiB)` : ''}\n`,
  );
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
