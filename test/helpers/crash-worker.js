// A worker process for crash tests: the compiled worker of `e2epool worker`
// with an agent gateway double (the real gateway arrives with the agent).
// Configured like `e2epool worker`, through E2EPOOL_* and TEMPORAL_* variables.
'use strict';
const { join } = require('node:path');
const dist = (p) => require(join(__dirname, '..', '..', 'dist', p));

const { loadControllerConfig } = dist('cli/bootstrap.js');
const { InventoryStore } = dist('config/inventory.js');
const { connectDatabase } = dist('store/connect.js');
const { connectNative, createWorker, gitlabClientFrom, installRuntime } = dist('worker/worker.js');
const { WorkerMetrics } = dist('activities/metrics.js');
const { scheduleReconciler } = dist('worker/reconcile-schedule.js');
const { attachRunnerRegistry } = dist('store/registry-feed.js');
const { SecretBox } = dist('config/secret-box.js');
const { Client } = require('@temporalio/client');

// Commands this worker's agent double never finishes (comma-separated), so a
// test can kill the worker while one is in flight; CRASH_WORKER_HANG_ONCE:
// only the first call of each hangs.
const hanging = new Set((process.env.CRASH_WORKER_HANG_COMMANDS || '').split(',').filter(Boolean));
const hangOnce = process.env.CRASH_WORKER_HANG_ONCE === '1';

let sessions = 0;
const agents = {
  exec: async (_runnerId, cmd) => {
    if (!hanging.has(cmd)) return { exitCode: 0, stdout: `ran ${cmd}`, stderr: '' };
    if (hangOnce) hanging.delete(cmd);
    return new Promise(() => undefined);
  },
  isConnected: async () => true,
  // Every look is a new session: the agent is back at once after each boot.
  session: async () => ({ sessionId: `crash-${++sessions}`, live: true }),
};

async function main() {
  const { settings, temporal, log } = loadControllerConfig('crash-worker');
  const inventory = InventoryStore.load(settings.inventoryPath, log);
  installRuntime({ log });
  const dataSource = await connectDatabase({ url: settings.databaseUrl, poolSize: 4 }, log);
  // The runner registry too, as `e2epool worker` has (CRASH_WORKER_REGISTRY=1: tests of registry runners).
  if (process.env.CRASH_WORKER_REGISTRY === '1')
    await attachRunnerRegistry({
      inventory,
      dataSource,
      databaseUrl: settings.databaseUrl,
      secrets: settings.secretKey ? new SecretBox(settings.secretKey) : null,
      intervalSeconds: settings.registryReloadSeconds,
      applicationName: 'e2epool-crash-worker',
      log,
    });
  const connection = await connectNative(temporal);
  const client = new Client({ connection, namespace: temporal.namespace });
  // Measured, not served: the crash tests read Postgres and Temporal, not metrics.
  const metrics = new WorkerMetrics();
  const worker = await createWorker({
    connection,
    namespace: temporal.namespace,
    taskQueue: settings.taskQueue,
    deps: {
      dataSource,
      inventory,
      settings,
      log,
      agents,
      gitlab: gitlabClientFrom(settings, metrics),
      metrics,
      temporal: { client, taskQueue: settings.taskQueue },
    },
  });
  // As `e2epool worker` does (CRASH_WORKER_RECONCILE=1 only: other tests' queues need none).
  if (process.env.CRASH_WORKER_RECONCILE === '1') await scheduleReconciler(client, settings, log);
  process.stdout.write('worker running\n');
  await worker.run();
  await dataSource.destroy();
}

main().catch((err) => {
  process.stderr.write(`crash-worker: ${err.stack || err}\n`);
  process.exit(1);
});
