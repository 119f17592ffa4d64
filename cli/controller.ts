import { randomUUID } from 'node:crypto';
import { Client } from '@temporalio/client';
import { SELF_TEST_WORKFLOW, type SelfTestResult } from '../common/self-test';
import { InventoryStore } from '../config/inventory';
import { SecretBox } from '../config/secret-box';
import { connectDatabase } from '../store/connect';
import { attachRunnerRegistry } from '../store/registry-feed';
import { createDataSource, revertLastMigration, runMigrations } from '../store/data-source';
import { connectClient, startApiServer } from '../api/server';
import { AgentBus } from '../activities/agent-bus';
import { WorkerMetrics } from '../activities/metrics';
import { startMetricsServer } from '../worker/metrics-server';
import { scheduleReconciler } from '../worker/reconcile-schedule';
import {
  connectNative,
  createWorker,
  githubClientFrom,
  gitlabClientFrom,
  installRuntime,
} from '../worker/worker';
import { ensureSearchAttributes } from '../worker/search-attributes';
import { loadControllerConfig, onShutdown, watchParent } from './bootstrap';

/** `e2epool api`: the REST API and the agent WebSocket gateway, on one port. */
export async function runApi(): Promise<void> {
  const { settings, temporal, log } = loadControllerConfig('api');
  const inventory = InventoryStore.load(settings.inventoryPath, log);
  inventory.watch();
  const dataSource = await connectDatabase(
    { url: settings.databaseUrl, poolSize: settings.dbPoolSize, applicationName: 'e2epool-api' },
    log,
  );
  const registry = await attachRunnerRegistry({
    inventory,
    dataSource,
    databaseUrl: settings.databaseUrl,
    secrets: settings.secretKey ? new SecretBox(settings.secretKey) : null,
    intervalSeconds: settings.registryReloadSeconds,
    applicationName: 'e2epool-api-registry',
    log,
  });
  const connection = await connectClient(temporal);
  const api = await startApiServer({
    settings,
    dataSource,
    temporal: connection,
    temporalSettings: temporal,
    inventory,
    log,
  });
  log.info(
    { url: api.url, temporal: temporal.address, namespace: temporal.namespace },
    'api listening',
  );
  onShutdown(async (reason) => {
    log.info({ reason }, 'api stopping');
    await api.close();
    await registry.close();
    inventory.close();
    await connection.close().catch(() => undefined);
    await dataSource.destroy().catch(() => undefined);
    log.info('api stopped');
    process.exit(0);
  });
}

/** `e2epool worker`: runs workflows and activities on E2EPOOL_TASK_QUEUE. */
export async function runWorker(): Promise<void> {
  const { settings, temporal, log } = loadControllerConfig('worker');
  const inventory = InventoryStore.load(settings.inventoryPath, log);
  inventory.watch();
  installRuntime({ log });
  const dataSource = await connectDatabase(
    { url: settings.databaseUrl, poolSize: settings.dbPoolSize, applicationName: 'e2epool-worker' },
    log,
  );
  // Activities find registry runners too, deactivated ones included (their open checkpoint is still reset).
  const registry = await attachRunnerRegistry({
    inventory,
    dataSource,
    databaseUrl: settings.databaseUrl,
    secrets: settings.secretKey ? new SecretBox(settings.secretKey) : null,
    intervalSeconds: settings.registryReloadSeconds,
    applicationName: 'e2epool-worker-registry',
    log,
  });
  const connection = await connectNative(temporal);
  // Before polling: a workflow that sets an unregistered attribute fails its task.
  await ensureSearchAttributes(connection, temporal.namespace, log);
  // Agents are reached through whichever API instance holds their WebSocket.
  const agents = new AgentBus(dataSource, settings.databaseUrl, {
    staleAfterSeconds: settings.wsHeartbeatTimeoutSeconds,
    connectWaitSeconds: settings.readinessTimeoutSeconds,
    log,
  });
  const client = new Client({ connection, namespace: temporal.namespace });
  const metrics = new WorkerMetrics();
  // What the worker measures lives in this process: it serves it itself.
  const metricsServer = await startMetricsServer({
    registry: metrics.registry,
    host: settings.host,
    port: settings.workerMetricsPort,
    log,
  }).catch((err: unknown) => {
    throw new Error(
      `cannot serve the worker metrics on ${settings.host}:${settings.workerMetricsPort} (E2EPOOL_WORKER_METRICS_PORT): ${(err as Error).message}`,
    );
  });
  const worker = await createWorker({
    connection,
    namespace: temporal.namespace,
    taskQueue: settings.taskQueue,
    deps: {
      dataSource,
      inventory,
      settings,
      log,
      gitlab: gitlabClientFrom(settings, metrics),
      github: githubClientFrom(settings, metrics),
      agents,
      metrics,
      temporal: { client, taskQueue: settings.taskQueue },
    },
  });
  await scheduleReconciler(client, settings, log);
  // A parent (npm run dev) going away stops us like a signal would.
  watchParent(() => worker.shutdown());
  log.info(
    {
      taskQueue: settings.taskQueue,
      temporal: temporal.address,
      namespace: temporal.namespace,
      metrics: metricsServer.url,
    },
    'worker running',
  );
  await worker.run();
  await metricsServer.close();
  await registry.close();
  inventory.close();
  await connection.close().catch(() => undefined);
  await dataSource.destroy().catch(() => undefined);
  await agents.close();
  log.info('worker stopped');
}

/** `e2epool migrate [--revert]`: applies (or reverts the latest) migration and exits. */
export async function runMigrate(opts: { revert?: boolean }): Promise<void> {
  const { settings, log } = loadControllerConfig('migrate');
  const ds = createDataSource({
    url: settings.databaseUrl,
    poolSize: 2,
    applicationName: 'e2epool-migrate',
  });
  await ds.initialize();
  try {
    if (opts.revert) await revertLastMigration(ds, log);
    else {
      const applied = await runMigrations(ds, log);
      process.stdout.write(
        applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n',
      );
    }
  } finally {
    await ds.destroy();
  }
}

/** `e2epool selftest`: runs a workflow through a live worker and prints what it saw. */
export async function runSelfTest(opts: { timeout: number }): Promise<void> {
  const { settings, temporal } = loadControllerConfig('selftest');
  const connection = await connectClient(temporal, 10_000);
  try {
    const client = new Client({ connection, namespace: temporal.namespace });
    const result: SelfTestResult = await client.workflow.execute(SELF_TEST_WORKFLOW, {
      taskQueue: settings.taskQueue,
      workflowId: `e2epool-selftest-${randomUUID()}`,
      args: [{ probeId: randomUUID() }],
      workflowExecutionTimeout: `${opts.timeout} seconds`,
    });
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await connection.close();
  }
}

/**
 * `e2epool setup`: registers e2epool's search attributes on the namespace
 * (what the worker does at start) and exits; refuses like the worker when
 * it may not.
 */
export async function runSetup(): Promise<void> {
  const { temporal, log } = loadControllerConfig('setup');
  const connection = await connectClient(temporal, 10_000);
  try {
    const added = await ensureSearchAttributes(connection, temporal.namespace, log);
    process.stdout.write(
      added.length
        ? `registered search attributes in namespace ${temporal.namespace}: ${added.join(', ')}\n`
        : `namespace ${temporal.namespace} has every search attribute e2epool needs\n`,
    );
  } finally {
    await connection.close().catch(() => undefined);
  }
}

export { runDoctor } from './doctor';
