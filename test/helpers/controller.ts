import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import pino from 'pino';
import type { DataSource } from 'typeorm';
import { AgentBus } from '../../activities/agent-bus';
import type { AgentGateway } from '../../activities/agent-gateway';
import type { GitHubClient } from '../../activities/github/client';
import type { GitLabClient } from '../../activities/gitlab/client';
import { WorkerMetrics } from '../../activities/metrics';
import { databaseUrlOf, startApiServer, type ApiServer } from '../../api/server';
import { checkpointWorkflowId } from '../../common/checkpoint';
import { InventoryStore } from '../../config/inventory';
import { loadSettings, type Settings } from '../../config/settings';
import { loadTemporalSettings } from '../../config/temporal';
import { startMetricsServer, type MetricsServer } from '../../worker/metrics-server';
import { createWorker, githubClientFrom, gitlabClientFrom } from '../../worker/worker';
import { createDataSource, runMigrations } from '../../store/data-source';
import { SecretBox } from '../../config/secret-box';
import { attachRunnerRegistry } from '../../store/registry-feed';
import { createMigratedDatabase } from './db';
import { waitFor } from './wait';
import { temporalEnv, uniqueId, writeInventory } from './env';

export interface TestController {
  api: ApiServer;
  client: Client;
  ds: DataSource;
  settings: Settings;
  inventory: InventoryStore;
  taskQueue: string;
  /** The in-process worker's metrics, served as `e2epool worker` serves them (on a free port). */
  worker: { metrics: WorkerMetrics; metricsUrl: string };
  /**
   * Starts another API instance on the same database and task queue, with an
   * inventory of its own (the same file, the registry read on its own).
   */
  startAnotherApi(): Promise<ApiServer>;
  stop(): Promise<void>;
}

export interface ControllerOptions {
  inventory: string;
  env?: Record<string, string>;
  agents: AgentGateway;
  gitlab?: GitLabClient | null;
  /** Default: the client E2EPOOL_GITHUB_TOKEN (and E2EPOOL_GITHUB_URL) in `env` make. */
  github?: GitHubClient | null;
  /** Another Temporal server than the shared one. */
  temporalAddress?: string;
  /** A database of the test's own (e.g. on a Postgres it restarts) instead of a fresh one on the shared server. */
  databaseUrl?: string;
}

/**
 * The controller of a test file: a migrated database of its own, the API on
 * port 0 and a worker on a task queue of its own, on the shared real Temporal.
 */
export type AgentController = TestController & { bus: AgentBus };

/**
 * A controller whose activities reach real agents through the gateway: an
 * AgentBus on the controller's database, as `e2epool worker` has. Its stop()
 * closes the bus too.
 */
export async function startAgentController(
  o: Omit<ControllerOptions, 'agents'> & {
    bus?: { staleAfterSeconds?: number; connectWaitSeconds?: number };
  },
): Promise<AgentController> {
  const lazyBus = lateAgentGateway();
  const c = await startTestController({ ...o, agents: lazyBus });
  const bus = new AgentBus(c.ds, databaseUrlOf(c.ds), {
    staleAfterSeconds: o.bus?.staleAfterSeconds ?? 90,
    connectWaitSeconds: o.bus?.connectWaitSeconds ?? 20,
    pollMs: 100,
    log: pino({ level: 'silent' }),
  });
  lazyBus.use(bus);
  return {
    ...c,
    bus,
    async stop() {
      await bus.close();
      await c.stop();
    },
  };
}

export async function startTestController(o: ControllerOptions): Promise<TestController> {
  quietRuntime();
  const log = pino({ level: process.env.E2EPOOL_TEST_LOG_LEVEL ?? 'silent' });
  const { ds, close } = o.databaseUrl
    ? await migratedDataSource(o.databaseUrl)
    : await createMigratedDatabase('cp');
  const taskQueue = uniqueId('tq');
  // The shared Temporal (on the cluster: its namespace and mTLS) or a dev server of the test's own.
  const env = {
    ...temporalEnv(o.temporalAddress),
    E2EPOOL_PORT: '0',
    E2EPOOL_HOST: '127.0.0.1',
    E2EPOOL_TASK_QUEUE: taskQueue,
    E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.1',
    E2EPOOL_READINESS_TIMEOUT_SECONDS: '5',
    E2EPOOL_PROXMOX_TASK_POLL_SECONDS: '0.05',
    E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
    // Tests poll readiness and read /metrics right after a change; the limits' own tests set these.
    E2EPOOL_READINESS_BURST: '1000',
    E2EPOOL_METRICS_CACHE_SECONDS: '0',
    E2EPOOL_METRICS_FINDINGS_SECONDS: '0',
    ...o.env,
  };
  const settings = loadSettings(env);
  const temporalSettings = loadTemporalSettings(env);
  const inventoryPath = writeInventory(o.inventory);
  const inventory = InventoryStore.load(inventoryPath, log);
  const withRegistry = (inv: InventoryStore) =>
    attachRunnerRegistry({
      inventory: inv,
      dataSource: ds,
      databaseUrl: databaseUrlOf(ds),
      secrets: settings.secretKey ? new SecretBox(settings.secretKey) : null,
      intervalSeconds: settings.registryReloadSeconds,
      applicationName: 'e2epool-test-registry',
      log,
    });
  const feeds = [
    await withRegistry(inventory).catch(async (err: unknown) => {
      await close();
      throw err;
    }),
  ];
  const otherInventories: InventoryStore[] = [];
  // Connected as `e2epool api` / `e2epool worker` connect: from the TEMPORAL_* settings.
  const { namespace } = temporalSettings;
  const connection = await Connection.connect(temporalSettings.connectionOptions);
  const client = new Client({ connection, namespace });
  const native = await NativeConnection.connect(temporalSettings.connectionOptions);
  const metrics = new WorkerMetrics();
  const metricsServer: MetricsServer = await startMetricsServer({
    registry: metrics.registry,
    host: '127.0.0.1',
    port: 0,
    log,
  });
  const worker = await createWorker({
    connection: native,
    namespace,
    taskQueue,
    deps: {
      dataSource: ds,
      inventory,
      settings,
      log,
      agents: o.agents,
      gitlab: o.gitlab === undefined ? gitlabClientFrom(settings, metrics) : o.gitlab,
      github: o.github === undefined ? githubClientFrom(settings, metrics) : o.github,
      metrics,
      temporal: { client: new Client({ connection: native, namespace }), taskQueue },
    },
  });
  const running = worker.run();
  const apis: ApiServer[] = [];
  const startApi = async (own = false) => {
    // Another instance reads the file and the registry itself, as another process would.
    let inv = inventory;
    if (own) {
      inv = InventoryStore.load(inventoryPath, log);
      inv.watch(100); // tests that rewrite the file watch the first instance's inventory
      otherInventories.push(inv);
      feeds.push(await withRegistry(inv));
    }
    const api = await startApiServer({
      settings,
      dataSource: ds,
      temporal: connection,
      temporalSettings,
      inventory: inv,
      log,
    });
    apis.push(api);
    return api;
  };
  const api = await startApi();
  return {
    api,
    client,
    ds,
    settings,
    inventory,
    taskQueue,
    worker: { metrics, metricsUrl: metricsServer.url },
    startAnotherApi: () => startApi(true),
    async stop() {
      await Promise.all(apis.map((a) => a.close()));
      worker.shutdown();
      await running;
      await metricsServer.close();
      await native.close();
      await connection.close();
      await Promise.all(feeds.map((f) => f.close()));
      for (const inv of [inventory, ...otherInventories]) inv.close();
      await close();
    },
  };
}

async function migratedDataSource(
  url: string,
): Promise<{ ds: DataSource; close(): Promise<void> }> {
  const ds = createDataSource({ url, poolSize: 4 });
  await ds.initialize();
  await runMigrations(ds);
  return { ds, close: () => ds.destroy() };
}

let runtimeInstalled = false;
/** The SDK logs worker state changes at INFO; tests want warnings only. */
function quietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({
    logger: new DefaultLogger((process.env.E2EPOOL_TEST_SDK_LOG_LEVEL as 'WARN') ?? 'WARN'),
  });
}

/** A tiny REST client for the tests. */
export function restClient(baseUrl: () => string, token: string) {
  const call = async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const res = await fetch(`${baseUrl()}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  return {
    create: (runnerId: string, jobId: string, extra: Record<string, unknown> = {}) =>
      call('POST', '/checkpoint/create', { runner_id: runnerId, job_id: jobId, ...extra }),
    finalize: (name: string, status: string, extra: Record<string, unknown> = {}) =>
      call('POST', '/checkpoint/finalize', { checkpoint_name: name, status, ...extra }),
    status: (name: string) => call('GET', `/checkpoint/status/${encodeURIComponent(name)}`),
    call,
  };
}

/**
 * Waits until the runner's workflow run has ended. The state a checkpoint
 * reaches is visible (status, row) a moment before the run's last writes, such
 * as that state's operation-log row: wait for this before reading those.
 */
export async function runEnded(c: TestController, runnerId: string): Promise<unknown> {
  return c.client.workflow.getHandle(checkpointWorkflowId(runnerId)).result();
}

/** Operation-log rows of a checkpoint, in order. */
export async function operations(
  ds: DataSource,
  name: string,
): Promise<
  Array<{ operation: string; result: string; detail: string | null; error: string | null }>
> {
  return ds.query(
    `SELECT o.operation, o.result, o.detail, o.error FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
      WHERE c.name = $1 ORDER BY o.started_at, o.id`,
    [name],
  );
}

/**
 * Rewrites every log detail of the checkpoint into other words: the log is
 * for operators, so nothing e2epool does may depend on its wording.
 */
export async function rewordLog(ds: DataSource, name: string): Promise<void> {
  await ds.query(
    `UPDATE operation_logs o SET detail = 'reworded for the test: row ' || o.id
       FROM checkpoints c WHERE c.id = o.checkpoint_id AND c.name = $1 AND o.detail IS NOT NULL`,
    [name],
  );
}

/**
 * `operation:result` of a checkpoint's log rows in order, without its
 * `poller:skipped` note, and how many such notes it has. The note is written
 * beside the wait for the job (PAUSE_FIRST_PATCH), so with a finalize right
 * after the create it may land before or after the pause.
 */
export async function stepsBesidesPollerNote(
  ds: DataSource,
  name: string,
): Promise<{ steps: string[]; pollerNotes: number }> {
  const all = (await operations(ds, name)).map((o) => `${o.operation}:${o.result}`);
  const note = (x: string) => x === 'poller:skipped';
  return { steps: all.filter((x) => !note(x)), pollerNotes: all.filter(note).length };
}

/**
 * An agent gateway whose real implementation is set later: the AgentBus needs
 * the controller's database, which exists only once the controller started.
 */
export function lateAgentGateway(): AgentGateway & { use(g: AgentGateway): void } {
  let target: AgentGateway | undefined;
  const get = () => {
    if (!target) throw new Error('agent gateway used before use()');
    return target;
  };
  return {
    use: (g) => (target = g),
    exec: (...a) => get().exec(...a),
    isConnected: (...a) => get().isConnected(...a),
    session: (...a) => get().session(...a),
  };
}

/**
 * Creates a checkpoint of `runnerId` and finalizes it as failed; resolves with its
 * name once it waits in needs_attention. The caller makes the runner's reset fail.
 */
export async function needsAttentionCheckpoint(
  client: ReturnType<typeof restClient>,
  runnerId: string,
): Promise<string> {
  const cp = await client.create(runnerId, uniqueId('job'));
  expect(cp.status).toBe(201);
  const name = cp.body.name as string;
  expect((await client.finalize(name, 'failure')).status).toBe(202);
  await waitFor(
    'needs_attention',
    async () => (await client.status(name)).body.state === 'needs_attention',
  );
  return name;
}
