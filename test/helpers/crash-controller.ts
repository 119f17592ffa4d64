import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import pino from 'pino';
import { startApiServer, type ApiServer } from '../../api/server';
import { InventoryStore } from '../../config/inventory';
import { loadSettings } from '../../config/settings';
import { loadTemporalSettings } from '../../config/temporal';
import { createMigratedDatabase } from './db';
import { restClient } from './controller';
import { controllerEnv, uniqueId, writeInventory, type TestRunner } from './env';
import { waitFor } from './wait';

/**
 * An API in the test process and workers as separate processes
 * (crash-worker.js, the compiled `e2epool worker` with an agent double), so a
 * test can SIGKILL a worker mid-reset and start another.
 */
export interface CrashController {
  api: ApiServer;
  db: Awaited<ReturnType<typeof createMigratedDatabase>>;
  /** The workers' task queue. */
  taskQueue: string;
  /** Starts a worker process (with extra environment); resolves once it polls its task queue. */
  startWorker(workerEnv?: Record<string, string>): Promise<ChildProcess>;
  /** A checkpoint's operation-log rows (operation, result), oldest first. */
  operations(name: string): Promise<Array<{ operation: string; result: string }>>;
  /** Whether a step of the checkpoint is in flight (its log row says `running`). */
  stepRunning(name: string, operation: string): Promise<boolean>;
  /** Creates a checkpoint for the runner and returns its name (fails the test unless 201). */
  create(r: TestRunner, jobId: string): Promise<string>;
  /** Finalizes the runner's checkpoint as failed (fails the test unless 202). */
  finalizeFailed(r: TestRunner, name: string): Promise<void>;
  /** Waits until the checkpoint reaches `state`. */
  awaitState(r: TestRunner, name: string, state: string, timeoutMs?: number): Promise<void>;
  /** SIGKILLs a worker and waits until it is gone. */
  kill(worker: ChildProcess): Promise<void>;
  stop(): Promise<void>;
}

export async function startCrashController(
  inventoryYaml: string,
  extraEnv: Record<string, string>,
): Promise<CrashController> {
  const db = await createMigratedDatabase('crash');
  const inventoryPath = writeInventory(inventoryYaml);
  const taskQueue = uniqueId('tq-crash');
  const env = controllerEnv({
    E2EPOOL_DATABASE_URL: db.db.url,
    E2EPOOL_INVENTORY_PATH: inventoryPath,
    E2EPOOL_TASK_QUEUE: taskQueue,
    E2EPOOL_PROXMOX_TASK_POLL_SECONDS: '0.05',
    E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.1',
    E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
    E2EPOOL_PORT: '0',
    E2EPOOL_HOST: '127.0.0.1',
    E2EPOOL_LOG_LEVEL: 'warn',
    ...extraEnv,
  });
  const log = pino({ level: 'silent' });
  // The workers' Temporal, through envconfig (extraEnv may name a server of the test's own).
  const temporalSettings = loadTemporalSettings(env);
  const connection = await Connection.connect(temporalSettings.connectionOptions);
  const api = await startApiServer({
    settings: loadSettings(env),
    dataSource: db.ds,
    temporal: connection,
    temporalSettings,
    inventory: InventoryStore.load(inventoryPath, log),
    log,
  });
  const workers: ChildProcess[] = [];

  function startWorker(workerEnv: Record<string, string> = {}): Promise<ChildProcess> {
    const child = spawn(process.execPath, [join(__dirname, 'crash-worker.js')], {
      env: { PATH: process.env.PATH, ...env, ...workerEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    workers.push(child);
    let out = '';
    return new Promise((resolve, reject) => {
      const onData = (c: Buffer) => {
        out += c.toString();
        if (out.includes('worker running')) resolve(child);
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`worker exited early (${code}):\n${out}`)));
      setTimeout(
        () => reject(new Error(`worker did not start within 30 s:\n${out}`)),
        30_000,
      ).unref();
    });
  }

  return {
    api,
    db,
    taskQueue,
    startWorker,
    operations: (name) =>
      db.ds.query(
        `SELECT o.operation, o.result FROM operation_logs o JOIN checkpoints k ON k.id = o.checkpoint_id
          WHERE k.name = $1 ORDER BY o.id`,
        [name],
      ),
    stepRunning: async (name, operation) =>
      (
        (await db.ds.query(
          `SELECT o.operation, o.result FROM operation_logs o JOIN checkpoints k ON k.id = o.checkpoint_id
            WHERE k.name = $1 AND o.operation = $2`,
          [name, operation],
        )) as Array<{ result: string }>
      ).some((o) => o.result === 'running'),
    async create(r, jobId) {
      const res = await restClient(() => api.url, r.token).create(r.id, jobId);
      if (res.status !== 201)
        throw new Error(`create for ${r.id}: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.name as string;
    },
    async finalizeFailed(r, name) {
      const res = await restClient(() => api.url, r.token).finalize(name, 'failure');
      if (res.status !== 202)
        throw new Error(`finalize of ${name}: ${res.status} ${JSON.stringify(res.body)}`);
    },
    async awaitState(r, name, state, timeoutMs = 90_000) {
      const rest = restClient(() => api.url, r.token);
      await waitFor(
        `${name} to reach ${state}`,
        async () => (await rest.status(name)).body?.state === state,
        { timeoutMs, intervalMs: 250 },
      );
    },
    async kill(worker) {
      if (worker.exitCode !== null || worker.signalCode !== null) return;
      const gone = new Promise((r) => worker.once('exit', r));
      worker.kill('SIGKILL');
      await gone;
    },
    async stop() {
      for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
      await api.close();
      await connection.close();
      await db.close();
    },
  };
}
