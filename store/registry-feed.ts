import type { DataSource } from 'typeorm';
import type {
  Inventory,
  InventoryStore,
  RegistryRunner,
  RegistrySource,
} from '../config/inventory';
import { bareMetalSchema, proxmoxSchema, type RunnerConfig } from '../config/runner-schema';
import type { Logger } from '../config/logger';
import type { SecretBox } from '../config/secret-box';
import { AgentNoticeListener } from './agent-notices';
import { RunnerStateStore } from './runner-state';
import { RunnerStore, type StoredRunner } from './runners';

/**
 * A stored runner as the inventory's RunnerConfig: the Proxmox token value
 * opened with `secrets`, the token itself empty (only its digest is stored).
 * Throws when the row cannot be used (e.g. its Proxmox token cannot be opened).
 */
export function storedRunnerConfig(r: StoredRunner, secrets: SecretBox | null): RunnerConfig {
  let proxmoxTokenValue: string | undefined;
  if (r.fields.backend === 'proxmox') {
    if (!r.sealedProxmoxToken) throw new Error('no proxmox_token_value stored');
    if (!secrets) throw new Error('its proxmox_token_value needs E2EPOOL_SECRET_KEY to be set');
    proxmoxTokenValue = secrets.open(r.sealedProxmoxToken);
  }
  const raw = {
    ...r.fields,
    runner_id: r.runnerId,
    token: 'stored-as-digest',
    ...(proxmoxTokenValue !== undefined ? { proxmox_token_value: proxmoxTokenValue } : {}),
  };
  const parsed =
    r.fields.backend === 'proxmox' ? proxmoxSchema.safeParse(raw) : bareMetalSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${issue.path.join('.')}: ${issue.message}`);
  }
  return { ...parsed.data, token: '' } as RunnerConfig;
}

/**
 * The registry as the inventory reads it, and the run-time state of every
 * runner (`runner_state`, whose trigger NOTIFYs the same channel). A row that cannot be used is left
 * out with an error logged once (until it changes): the rest still works.
 */
export function registrySource(
  ds: DataSource,
  secrets: SecretBox | null,
  log: Logger,
): RegistrySource {
  const store = new RunnerStore(ds);
  const states = new RunnerStateStore(ds);
  const reported = new Map<string, number>();
  return {
    async load(): Promise<RegistryRunner[]> {
      const out: RegistryRunner[] = [];
      for (const r of await store.list(true)) {
        try {
          out.push({
            config: storedRunnerConfig(r, secrets),
            tokenDigest: r.tokenHash,
            agentTokenDigest: r.agentTokenHash,
            isActive: r.isActive,
            draining: r.draining,
          });
          reported.delete(r.runnerId);
        } catch (err) {
          if (reported.get(r.runnerId) === r.updatedAt.getTime()) continue;
          reported.set(r.runnerId, r.updatedAt.getTime());
          log.error(
            { runnerId: r.runnerId, err: (err as Error).message },
            `registry runner '${r.runnerId}' left out: ${(err as Error).message}`,
          );
        }
      }
      return out;
    },
    // Every runner's, file or registry: quarantine, current baseline, a refresh's drain.
    loadStates: () => states.all(),
  };
}

/**
 * Adds the runner registry to `inventory` (a runner id in both the file and
 * the registry rejects: a startup error naming it) and keeps it current: a
 * LISTEN on the registry's channel reloads at once, a reload every
 * `intervalSeconds` covers missed notices and a lost listener connection.
 */
export async function attachRunnerRegistry(o: {
  inventory: InventoryStore;
  dataSource: DataSource;
  databaseUrl: string;
  secrets: SecretBox | null;
  intervalSeconds: number;
  applicationName: string;
  log: Logger;
}): Promise<{ close(): Promise<void> }> {
  const listener = new AgentNoticeListener({
    databaseUrl: o.databaseUrl,
    channel: 'registry',
    applicationName: o.applicationName,
    onNotice: () => void o.inventory.refreshRegistry(),
    log: o.log,
    name: 'runner registry',
    fallback: `re-reading it every ${o.intervalSeconds} s`,
  });
  // Listen first: a change between the first read and LISTEN is not missed.
  await listener.ensure();
  try {
    await o.inventory.attachRegistry(
      registrySource(o.dataSource, o.secrets, o.log),
      o.intervalSeconds * 1000,
    );
  } catch (err) {
    await listener.close();
    throw err;
  }
  const keepListening = setInterval(() => void listener.ensure(), o.intervalSeconds * 1000);
  keepListening.unref();
  const stopSettling = settleFileBaselines(o.inventory, o.dataSource, o.log);
  return {
    async close() {
      clearInterval(keepListening);
      stopSettling();
      await listener.close();
    },
  };
}

/**
 * An operator who edits an inventory-file runner's `baseline_snapshot` makes
 * that value current, as a PATCH does for a registry runner: on every change
 * of the file (and at start), the refreshed baselines of file runners whose
 * configured value is no longer the one they replaced are forgotten, so
 * setting the old value back later does not bring them back. Readers need
 * not wait for it (config/runner-state.ts gives the same answer meanwhile).
 * Idempotent: every API instance and worker does it. Returns the unsubscribe.
 */
function settleFileBaselines(inventory: InventoryStore, ds: DataSource, log: Logger): () => void {
  const states = new RunnerStateStore(ds);
  let seen: readonly RunnerConfig[] | null = null;
  const settle = (inv: Inventory) => {
    // Registry reloads keep the file's runner list as it was: nothing to do for them.
    if (inv.fileRunners === seen) return;
    seen = inv.fileRunners;
    const configured = inv.fileRunners.map(
      (r) => [r.runner_id, r.backend === 'proxmox' ? (r.baseline_snapshot ?? null) : null] as const,
    );
    states
      .settleBaselines(configured)
      .catch((err: unknown) =>
        log.warn(
          { err: (err as Error).message },
          `cannot settle the inventory file's baselines: ${(err as Error).message}`,
        ),
      );
  };
  settle(inventory.inventory);
  return inventory.onChange(settle);
}
