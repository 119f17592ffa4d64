import { Client, Connection } from '@temporalio/client';
import { MIGRATIONS } from '../../store/migrations';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { bareMetalInventory, controllerEnv, uniqueId, writeInventory } from '../helpers/env';
import { runCli, startCli, type RunningProcess } from '../helpers/processes';
import { shared } from '../helpers/shared';

describe('e2epool worker (the real entry point, on the real dev server)', () => {
  let db: TestDatabase;
  let worker: RunningProcess;
  let env: Record<string, string>;

  beforeAll(async () => {
    db = await createTestDatabase('worker');
    env = controllerEnv({
      E2EPOOL_DATABASE_URL: db.url,
      E2EPOOL_INVENTORY_PATH: writeInventory(bareMetalInventory()),
      E2EPOOL_TASK_QUEUE: uniqueId('tq-worker'),
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
    const connection = await Connection.connect({ address: shared().temporalAddress });
    try {
      const client = new Client({ connection });
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

  it('stops cleanly on SIGTERM', async () => {
    const code = await worker.stop('SIGTERM');
    expect(code).toBe(0);
    expect(worker.stdout()).toMatch(/worker stopped/);
  });
});
