import type { Client, Connection } from '@temporalio/client';
import express, { type Express } from 'express';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import type { Store } from '../store';
import { checkpointLogRouter, type LogFeed } from './checkpoint-logs';
import type { CheckpointLogs } from '../service/checkpoint-logs';
import { checkpointRouter } from './checkpoint-routes';
import type { RunnerRegistry } from './runner-registry';
import { runnerRouter } from './runner-routes';
import { baselineRouter } from './baseline-routes';
import { operatorRouter } from './operator-routes';
import { openApiRouter } from './openapi';
import { webhookRouter } from './webhooks';
import type { CheckpointService } from '../service/checkpoint-service';
import { errorHandler, notFound } from './errors';
import type { AdminToken } from './auth';
import { healthRouter } from './health';
import { bodyGuard, urlGuard } from './input-guard';
import { TokenBuckets } from './rate-limit';
import { createMetricsRegistry, metricsRouter } from './metrics';
import type { FleetView } from './ui/fleet';
import { uiRouter } from './ui/router';

export interface AppDeps {
  store: Store;
  /** For /healthz: a connection without the SDK's retries (a probe answers about now). */
  healthTemporal: Connection;
  /** The checkpoint operations, shared with the agent gateway. */
  checkpoints: CheckpointService;
  inventory: InventoryStore;
  settings: Settings;
  /** An agent silent this long is unreachable (E2EPOOL_WS_HEARTBEAT_TIMEOUT). */
  agentStaleAfterSeconds: number;
  /** Checkpoint logs (see docs/protocol.md#checkpoint-logs) and the feed that wakes their live followers. */
  logs: CheckpointLogs;
  logFeed: LogFeed;
  /** How many agent WebSocket sessions this instance holds. */
  agentSessions: () => number;
  /** E2EPOOL_ADMIN_TOKEN: admin reads of checkpoint logs, the fleet page's login. */
  admin: AdminToken;
  /** The fleet page's data. */
  fleet: FleetView;
  /** The runner registry (the admin API, see docs/protocol.md#runner-registry). */
  registry: RunnerRegistry;
  /** The Temporal client (the fleet page's `release-hold`, an operator's retry and release). */
  temporal: Client;
  log: Logger;
}

/** How often the fleet page refreshes itself. */
export const FLEET_REFRESH_MS = 5000;

/** The Express app: thin routes that validate and delegate, one error middleware. */
export function createApp(d: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(urlGuard);
  // Before the JSON parser: webhooks read their raw body (GitHub signs the bytes).
  app.use(
    webhookRouter({
      settings: d.settings,
      records: d.store.checkpoints,
      checkpoints: d.checkpoints,
      inventory: d.inventory,
      log: d.log,
    }),
  );
  app.use(express.json({ limit: '64kb' }));
  app.use(bodyGuard);
  app.use(openApiRouter());
  app.use(healthRouter({ database: d.store.database, temporal: d.healthTemporal, log: d.log }));
  app.use(
    metricsRouter(
      createMetricsRegistry({
        records: d.store.checkpoints,
        sessions: d.store.sessions,
        operations: d.store.operations,
        pauses: d.store.pauses,
        inventory: d.inventory,
        agentStaleAfterSeconds: d.agentStaleAfterSeconds,
        agentSessions: d.agentSessions,
        findingsMaxAgeMs: d.settings.metricsFindingsSeconds * 1000,
        log: d.log,
      }),
      { token: d.settings.metricsToken, cacheMs: d.settings.metricsCacheSeconds * 1000 },
    ),
  );
  app.use(
    checkpointRouter(
      d.checkpoints,
      d.inventory,
      new TokenBuckets(d.settings.readinessBurst, d.settings.readinessPerSecond),
    ),
  );
  // Before runnerRouter: its routes check the admin token themselves.
  app.use(
    baselineRouter(
      {
        store: d.store,
        inventory: d.inventory,
        temporal: d.temporal,
        settings: d.settings,
        log: d.log,
      },
      d.admin,
    ),
  );
  app.use(
    operatorRouter(
      { store: d.store, registry: d.registry, temporal: d.temporal, log: d.log },
      d.admin,
    ),
  );
  app.use(runnerRouter(d.registry, d.admin));
  app.use(checkpointLogRouter(d.logs, d.logFeed, d.inventory, d.admin, d.log));
  app.use(
    uiRouter({
      store: d.store,
      admin: d.admin,
      fleet: d.fleet,
      logs: d.logs,
      logFeed: d.logFeed,
      temporal: d.temporal,
      registry: d.registry,
      refreshMs: FLEET_REFRESH_MS,
      log: d.log,
    }),
  );
  app.use(notFound);
  app.use(errorHandler(d.log));
  return app;
}
