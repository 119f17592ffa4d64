import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';

/** Source of the workflows: the compiled index next to this file, or the TS source. */
export function workflowsPath(): string {
  const compiled = join(__dirname, '..', 'workflows', 'index.js');
  return existsSync(compiled) ? compiled : join(__dirname, '..', 'workflows', 'index.ts');
}

/** Where `npm run build` puts the prebuilt bundle the worker loads. */
export function prebuiltBundlePath(): string {
  return join(__dirname, '..', 'workflow-bundle.js');
}

/**
 * Bundles the workflows once, as the worker would at startup. Run by
 * `npm run build` and CI: a workflow that imports something the sandbox
 * cannot load fails here, not in production.
 */
async function main(): Promise<void> {
  const { code } = await bundleWorkflowCode({
    workflowsPath: workflowsPath(),
    logger: new DefaultLogger('WARN'),
  });
  const out = process.argv[2] ?? prebuiltBundlePath();
  await writeFile(out, code);
  process.stdout.write(`workflow bundle: ${out} (${Math.round(code.length / 1024)} KiB)\n`);
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(
      `workflow bundle failed: ${err instanceof Error ? err.stack : String(err)}\n`,
    );
    process.exit(1);
  });
}
