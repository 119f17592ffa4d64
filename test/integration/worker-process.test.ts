import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Client, Connection } from '@temporalio/client';
import { MIGRATIONS } from '../../store/migrations';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import {
  bareMetalInventory,
  controllerEnv,
  sharedTemporal,
  uniqueId,
  writeInventory,
} from '../helpers/env';
import { exposedNames, scrape } from '../helpers/metrics';
import { runCli, startCli, type RunningProcess } from '../helpers/processes';

describe('e2epool worker (the real entry point, on the shared real Temporal)', () => {
  let db: TestDatabase;
  let worker: RunningProcess;
  let env: Record<string, string>;

  beforeAll(async () => {
    db = await createTestDatabase('worker');
    env = controllerEnv({
      E2EPOOL_DATABASE_URL: db.url,
      E2EPOOL_INVENTORY_PATH: writeInventory(bareMetalInventory()),
      E2EPOOL_TASK_QUEUE: uniqueId('tq-worker'),
      // A free port, logged at start: tests must not race for the default 9464.
      E2EPOOL_WORKER_METRICS_PORT: '0',
      E2EPOOL_HOST: '127.0.0.1',
    });
    worker = startCli(['worker'], env);
    await worker.waitForOutput(/worker running/);
  });

  afterAll(async () => {
    await worker?.stop('SIGKILL');
    await db?.drop();
  });

  it('migrates an empty database at startup and runs a workflow whose activity reads Postgres', async () => {
    const res = await runCli(['selftest', '--timeout', '30'], env);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const result = JSON.parse(res.stdout);
    expect(result).toMatchObject({
      database: db.name,
      appliedMigrations: MIGRATIONS.length,
      runners: 1,
    });
    expect(Date.parse(result.serverTime)).not.toBeNaN();
  });

  it('records the run in Temporal history as a completed workflow with one completed activity', async () => {
    const { connectionOptions, namespace } = sharedTemporal();
    const connection = await Connection.connect(connectionOptions);
    try {
      const client = new Client({ connection, namespace });
      const workflowId = uniqueId('selftest');
      const handle = await client.workflow.start('selfTestWorkflow', {
        taskQueue: env.E2EPOOL_TASK_QUEUE!,
        workflowId,
        args: [{ probeId: workflowId }],
      });
      await expect(handle.result()).resolves.toMatchObject({
        probeId: workflowId,
        database: db.name,
      });
      const history = await handle.fetchHistory();
      const completedActivities = history.events!.filter(
        (e) => e.activityTaskCompletedEventAttributes,
      );
      expect(completedActivities).toHaveLength(1);
      expect((await handle.describe()).status.name).toBe('COMPLETED');
    } finally {
      await connection.close();
    }
  });

  it('serves its own metrics on the port it logged at start', async () => {
    const line = worker
      .stdout()
      .split('\n')
      .find((l) => l.includes('"worker running"'));
    const url = (JSON.parse(line!) as { metrics: string }).metrics;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const text = await scrape(url);
    const names = exposedNames(text);
    for (const m of [
      'e2epool_step_duration_seconds_bucket',
      'e2epool_time_to_clean_seconds_count',
      'e2epool_runner_paused_seconds_total',
      'e2epool_gitlab_requests_total',
      'process_cpu_seconds_total', // the Node process metrics, as the API has
    ])
      expect([m, names.has(m)]).toEqual([m, true]);
    expect(text).toMatch(/^process_cpu_seconds_total\{service="e2epool-worker"\} /m);
    expect((await fetch(url.replace(/\/metrics$/, '/other'))).status).toBe(404);
  });

  it('exits 1 naming E2EPOOL_WORKER_METRICS_PORT when its port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((ok) => taken.listen(0, '127.0.0.1', ok));
    try {
      const port = (taken.address() as AddressInfo).port;
      const res = await runCli(['worker'], {
        ...env,
        E2EPOOL_TASK_QUEUE: uniqueId('tq-worker-port'),
        E2EPOOL_WORKER_METRICS_PORT: String(port),
      });
      expect(res.code).toBe(1);
      expect(res.stderr.trimEnd().split('\n')).toEqual([
        expect.stringMatching(
          new RegExp(
            `^e2epool worker: cannot serve the worker metrics on 127\\.0\\.0\\.1:${port} \\(E2EPOOL_WORKER_METRICS_PORT\\): .*EADDRINUSE`,
          ),
        ),
      ]);
    } finally {
      await new Promise<void>((ok) => taken.close(() => ok()));
    }
  });

  it('stops cleanly on SIGTERM', async () => {
    const code = await worker.stop('SIGTERM');
    expect(code).toBe(0);
    expect(worker.stdout()).toMatch(/worker stopped/);
  });
});
