import type { DataSource } from 'typeorm';
import { InventoryStore } from '../config/inventory';
import { SecretBox } from '../config/secret-box';
import { connectDatabase } from '../store/connect';
import { attachRunnerRegistry } from '../store/registry-feed';
import { loadControllerConfig, onShutdown, type ControllerConfig } from './bootstrap';

/** What every long-running controller process holds. */
export interface ControllerProcess extends ControllerConfig {
  /** The inventory file (watched), with the runner registry's runners. */
  inventory: InventoryStore;
  /** Postgres, migrated. */
  dataSource: DataSource;
}

/** The part of a long-running process that is its own (the API server, the Temporal worker). */
export interface ProcessPart {
  /**
   * Resolves once the part has stopped by itself: the worker, drained by the
   * Temporal runtime's own SIGINT/SIGTERM handling. Without it the process
   * stops on SIGINT, SIGTERM or its parent (npm run dev) exiting, and exits 0.
   */
  done?: Promise<void>;
  /** Closes what the part holds; runs before the shared parts close. */
  close(): Promise<void>;
}

/**
 * Runs a long-running controller process (`e2epool api`, `e2epool worker`):
 * settings and logger, the inventory, Postgres (waited for and migrated) and
 * the runner registry feeding the inventory, then `start` for the process's
 * own part; then waits for its end and closes everything, logging
 * `<component> stopped`. A start-up failure rejects (the caller exits with it).
 */
export async function runControllerProcess(
  component: 'api' | 'worker',
  start: (p: ControllerProcess) => Promise<ProcessPart>,
  opts: { beforeConnect?: (c: ControllerConfig) => void } = {},
): Promise<void> {
  const config = loadControllerConfig(component);
  const { settings, log } = config;
  const inventory = InventoryStore.load(settings.inventoryPath, log);
  inventory.watch();
  opts.beforeConnect?.(config);
  const dataSource = await connectDatabase(
    {
      url: settings.databaseUrl,
      poolSize: settings.dbPoolSize,
      applicationName: `e2epool-${component}`,
    },
    log,
  );
  // Both find registry runners too; the worker's activities also deactivated
  // ones (their open checkpoint is still reset).
  const registry = await attachRunnerRegistry({
    inventory,
    dataSource,
    databaseUrl: settings.databaseUrl,
    secrets: settings.secretKey ? new SecretBox(settings.secretKey) : null,
    intervalSeconds: settings.registryReloadSeconds,
    applicationName: `e2epool-${component}-registry`,
    log,
  });
  const part = await start({ ...config, inventory, dataSource });
  const close = async () => {
    await part.close();
    await registry.close();
    inventory.close();
    await dataSource.destroy().catch(() => undefined);
    log.info(`${component} stopped`);
  };
  if (part.done) {
    await part.done;
    await close();
    return;
  }
  onShutdown(async (reason) => {
    log.info({ reason }, `${component} stopping`);
    await close();
    process.exit(0);
  });
}
