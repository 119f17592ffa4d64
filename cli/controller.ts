import { randomUUID } from 'node:crypto';
import { Client } from '@temporalio/client';
import { SELF_TEST_WORKFLOW, type SelfTestResult } from '../common/self-test';
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
import { loadControllerConfig, watchParent } from './bootstrap';
import { runControllerProcess, type ControllerProcess, type ProcessPart } from './process';

/** `e2epool api`: the REST API and the agent WebSocket gateway, on one port. */
export function runApi(): Promise<void> {
  return runControllerProcess('api', async ({ settings, temporal, log, inventory, dataSource }) => {
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
    return {
      async close() {
        await api.close();
        await connection.close().catch(() => undefined);
      },
    };
  });
}

/** `e2epool worker`: runs workflows and activities on E2EPOOL_TASK_QUEUE. */
export function runWorker(): Promise<void> {
  // The SDK runtime holds SIGINT/SIGTERM: it drains the worker, and then worker.run() resolves.
  return runControllerProcess('worker', startWorker, {
    beforeConnect: ({ log }) => installRuntime({ log }),
  });
}

async function startWorker(p: ControllerProcess): Promise<ProcessPart> {
  const { settings, temporal, log, inventory, dataSource } = p;
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
  return {
    done: worker.run(),
    async close() {
      await metricsServer.close();
      await connection.close().catch(() => undefined);
      await agents.close();
    },
  };
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
