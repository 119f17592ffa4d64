import { Client, type Connection } from '@temporalio/client';
import express, { type Express } from 'express';
import type { DataSource } from 'typeorm';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import { createStore } from '../store';
import { checkpointRouter } from './checkpoint-routes';
import { CheckpointService } from './checkpoint-service';
import { errorHandler, notFound } from './errors';
import { healthRouter } from './health';
import { createMetricsRegistry, metricsRouter } from './metrics';

export interface AppDeps {
  settings: Settings;
  dataSource: DataSource;
  temporal: Connection;
  /** For /healthz: a connection without the SDK's retries (a probe answers about now). */
  healthTemporal?: Connection;
  namespace: string;
  inventory: InventoryStore;
  log: Logger;
}

/** The Express app: thin routes that validate and delegate, one error middleware. */
export function createApp(d: AppDeps & { checkpoints?: CheckpointService }): Express {
  const store = createStore(d.dataSource);
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(express.json({ limit: '64kb' }));
  app.use(
    healthRouter({
      database: store.database,
      temporal: d.healthTemporal ?? d.temporal,
      log: d.log,
    }),
  );
  app.use(metricsRouter(createMetricsRegistry(store.checkpoints, d.log)));
  app.use(checkpointRouter(d.checkpoints ?? checkpointService(d), d.inventory));
  app.use(notFound);
  app.use(errorHandler(d.log));
  return app;
}

/** The checkpoint operations REST and the agent gateway share. */
export function checkpointService(d: AppDeps): CheckpointService {
  const client = new Client({ connection: d.temporal, namespace: d.namespace });
  return new CheckpointService({
    client,
    records: createStore(d.dataSource).checkpoints,
    inventory: d.inventory,
    settings: d.settings,
    log: d.log,
  });
}
