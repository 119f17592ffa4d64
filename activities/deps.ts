import type { Client } from '@temporalio/client';
import type { DataSource } from 'typeorm';
import { fail } from '../common/fail';
import type { InventoryStore, RunnerConfig } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import type { AgentGateway } from './agent-gateway';
import type { GitLabClient } from './gitlab/client';
import type { WorkerMetrics } from './metrics';

/** What activities need from the process that runs them. */
export interface ActivityDeps {
  dataSource: DataSource;
  inventory: InventoryStore;
  settings: Settings;
  log: Logger;
  /** Runs commands on runner hosts through their agents. */
  agents: AgentGateway;
  /** GitLab API; null unless E2EPOOL_GITLAB_URL and E2EPOOL_GITLAB_TOKEN are set (no pause, no polling). */
  gitlab: GitLabClient | null;
  /** The worker's metrics (steps, time to clean, paused seconds), served by its metrics endpoint. */
  metrics: WorkerMetrics;
  /** Temporal, for the reconciler (it looks at and starts checkpoint runs); absent: no reconciling. */
  temporal?: { client: Client; taskQueue: string };
}

/**
 * A runner from the current inventory, a deactivated registry runner included
 * (its open checkpoint is still reset); gone from it is a permanent failure.
 */
export function inventoryRunner(
  deps: Pick<ActivityDeps, 'inventory'>,
  runnerId: string,
): RunnerConfig {
  const r = deps.inventory.inventory.forReset(runnerId);
  if (!r) throw fail('RunnerNotInInventory', `runner '${runnerId}' is not in the inventory`);
  return r;
}
