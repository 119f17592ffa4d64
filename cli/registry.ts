import type { DataSource } from 'typeorm';
import { stringify as toYaml } from 'yaml';
import { fieldsOf } from '../api/runner-registry';
import { loadInventoryFile, sha256 } from '../config/inventory';
import { SecretBox } from '../config/secret-box';
import { createStore } from '../store';
import { connectDatabase } from '../store/connect';
import { assertSchemaCurrent, createDataSource } from '../store/data-source';
import { loadControllerConfig } from './bootstrap';
import { printJson } from './output';

/** Raised when an import cannot go ahead; nothing was written. */
export class ImportRefused extends Error {
  override name = 'ImportRefused';
}

/**
 * Copies the runners of an inventory file into the registry, in one
 * transaction: tokens and agent tokens stored as SHA-256 (agents keep their tokens), Proxmox
 * token values sealed with `secrets`. Refuses (writing nothing) when a runner
 * id is already in the registry, or a Proxmox runner needs a key that is not
 * set. Returns the lines to print.
 */
export async function importInventory(o: {
  ds: DataSource;
  file: string;
  secrets: SecretBox | null;
  dryRun: boolean;
}): Promise<string[]> {
  const { inventory } = loadInventoryFile(o.file);
  const store = createStore(o.ds);
  const existing = new Set((await store.runners.list(true)).map((r) => r.runnerId));
  const clashes = inventory.fileRunners.filter((r) => existing.has(r.runner_id));
  if (clashes.length) {
    throw new ImportRefused(
      `already in the registry: ${clashes.map((r) => r.runner_id).join(', ')} (nothing imported)`,
    );
  }
  if (!o.secrets && inventory.fileRunners.some((r) => r.backend === 'proxmox')) {
    throw new ImportRefused(
      'Proxmox runners need E2EPOOL_SECRET_KEY to store their proxmox_token_value (nothing imported)',
    );
  }
  const verb = o.dryRun ? 'would import' : 'imported';
  const lines = inventory.fileRunners.map((r) => `${verb} ${r.runner_id} (${r.backend})`);
  if (!o.dryRun) {
    await store.transaction(async (tx) => {
      for (const r of inventory.fileRunners) {
        const row = await tx.runners.insert({
          runnerId: r.runner_id,
          fields: fieldsOf(r),
          tokenHash: sha256(r.token),
          agentTokenHash: r.agent_token === undefined ? null : sha256(r.agent_token),
          sealedProxmoxToken:
            r.backend === 'proxmox' ? o.secrets!.seal(r.proxmox_token_value) : null,
        });
        if (!row)
          throw new ImportRefused(`already in the registry: ${r.runner_id} (nothing imported)`);
        await tx.audit.record({
          actor: 'import-inventory',
          action: 'import',
          runnerId: r.runner_id,
          detail: { backend: r.backend, fields: Object.keys(fieldsOf(r)).sort() },
        });
      }
    });
  }
  lines.push(
    `${o.dryRun ? 'would import' : 'imported'} ${inventory.fileRunners.length} runner(s) from ${o.file}` +
      (o.dryRun ? ' (dry run: nothing written)' : ''),
  );
  return lines;
}

/** The registry's active runners, `{runners: [{runner_id, ...fields}]}`: no tokens, no Proxmox token values. */
export async function exportedRunners(
  ds: DataSource,
): Promise<{ runners: Array<Record<string, unknown>> }> {
  const runners = await createStore(ds).runners.list(false);
  return { runners: runners.map((r) => ({ runner_id: r.runnerId, ...r.fields })) };
}

/** The registry's active runners as inventory YAML, without tokens or Proxmox token values. */
export async function exportInventory(ds: DataSource): Promise<string> {
  const doc = await exportedRunners(ds);
  return (
    '# Exported from the e2epool runner registry. Tokens and proxmox_token_value are not\n' +
    '# exported (only their hash / ciphertext is stored): add them before using this file.\n' +
    toYaml(doc)
  );
}

/**
 * Runs `fn` on the database. `readOnly`: connects without migrating (and
 * refuses with SchemaNotCurrent, exit 78, when the schema is behind);
 * otherwise waits for Postgres and applies pending migrations, as the API does.
 */
async function withDatabase<T>(
  component: string,
  fn: (ds: DataSource, secrets: SecretBox | null) => Promise<T>,
  o: { readOnly?: boolean } = {},
): Promise<T> {
  const { settings, log } = loadControllerConfig(component);
  const options = {
    url: settings.databaseUrl,
    poolSize: 2,
    applicationName: `e2epool-${component}`,
  };
  let ds: DataSource;
  if (o.readOnly) {
    ds = createDataSource(options);
    await ds.initialize();
  } else {
    ds = await connectDatabase(options, log);
  }
  try {
    if (o.readOnly) await assertSchemaCurrent(ds);
    return await fn(ds, settings.secretKey ? new SecretBox(settings.secretKey) : null);
  } finally {
    await ds.destroy();
  }
}

/** `e2epool import-inventory FILE [--dry-run]`. */
export async function runImportInventory(file: string, opts: { dryRun?: boolean }): Promise<void> {
  const lines = await withDatabase('import-inventory', (ds, secrets) =>
    importInventory({ ds, file, secrets, dryRun: !!opts.dryRun }),
  );
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** `e2epool export-inventory [--json]`: reads only (never migrates); the result alone on stdout. */
export async function runExportInventory(opts: { json?: boolean } = {}): Promise<void> {
  if (opts.json) {
    printJson(await withDatabase('export-inventory', exportedRunners, { readOnly: true }), {
      pretty: true,
    });
  } else {
    process.stdout.write(
      await withDatabase('export-inventory', exportInventory, { readOnly: true }),
    );
  }
}
