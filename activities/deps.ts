import type { Client } from '@temporalio/client';
import type { DataSource } from 'typeorm';
import { fail } from '../common/fail';
import type { InventoryStore } from '../config/inventory';
import type { RunnerConfig } from '../config/runner-schema';

export type CiAdapter = RunnerConfig['ci_adapter'];
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import type { AgentGateway } from './agent-gateway';
import type { CiSystem } from './ci/system';
import type { GitHubClient } from './github/client';
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
  /** GitHub API; null (or absent) unless E2EPOOL_GITHUB_TOKEN is set (GitHub runners: no label pause, no polling). */
  github?: GitHubClient | null;
  /** The worker's metrics (steps, time to clean, paused seconds), served by its metrics endpoint. */
  metrics: WorkerMetrics;
  /** Temporal, for the reconciler (it looks at and starts checkpoint runs); absent: no reconciling. */
  temporal?: { client: Client; taskQueue: string };
}

/**
 * The CI system of a runner's jobs, by its inventory entry now; a runner that
 * left the inventory counts as GitLab's, as every runner did before GitHub.
 */
export function ciAdapterOf(deps: Pick<ActivityDeps, 'inventory'>, runnerId: string): CiAdapter {
  return deps.inventory.inventory.forReset(runnerId)?.ci_adapter ?? 'gitlab';
}

/**
 * Whether this worker polls the job status of a checkpoint of `runnerId`:
 * only with a client of the runner's CI system, and the poller enabled.
 */
export function pollsJobsOf(
  deps: Pick<ActivityDeps, 'inventory' | 'gitlab' | 'github' | 'settings'>,
  runnerId: string,
): boolean {
  return ciSystemOf(deps, runnerId) !== null && deps.settings.pollerEnabled;
}

/** The client of the CI system of a runner's jobs (see ciAdapterOf); null when this process has none. */
export function ciSystemOf(
  deps: Pick<ActivityDeps, 'inventory' | 'gitlab' | 'github'>,
  runnerId: string,
): CiSystem | null {
  return ciAdapterOf(deps, runnerId) === 'github' ? (deps.github ?? null) : deps.gitlab;
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
