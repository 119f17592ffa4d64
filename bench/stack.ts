/**
 * What the in-process benches (lifecycle, reset) set up the same way: the
 * product's settings for a bench (no cooldown, fast readiness polls, no
 * job pollers), the inventory, the database and the Temporal connections.
 */
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import type { Logger } from 'pino';
import { InventoryStore } from '../config/inventory';
import { loadSettings } from '../config/settings';
import { connectDatabase } from '../store/connect';

export async function connectBenchStack(o: {
  databaseUrl: string;
  temporalAddress: string;
  taskQueue: string;
  inventoryPath: string;
  /** The bench's scratch folder (a Temporal profile that does not exist lives there). */
  dir: string;
  log: Logger;
}) {
  const env = {
    E2EPOOL_DATABASE_URL: o.databaseUrl,
    E2EPOOL_PORT: '0',
    E2EPOOL_HOST: '127.0.0.1',
    E2EPOOL_TASK_QUEUE: o.taskQueue,
    E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
    E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.05',
    E2EPOOL_POLLER_ENABLED: 'false',
    TEMPORAL_ADDRESS: o.temporalAddress,
    TEMPORAL_CONFIG_FILE: join(o.dir, 'none.toml'),
  };
  const settings = loadSettings(env);
  const inventory = InventoryStore.load(o.inventoryPath, o.log);
  const ds = await connectDatabase({ url: o.databaseUrl, poolSize: settings.dbPoolSize }, o.log);
  const connection = await Connection.connect({ address: o.temporalAddress });
  const client = new Client({ connection });
  const native = await NativeConnection.connect({ address: o.temporalAddress });
  return { env, settings, inventory, ds, connection, client, native };
}
