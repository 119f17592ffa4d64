import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client, Connection, ScheduleOverlapPolicy } from '@temporalio/client';
import { reconcileScheduleId } from '../worker/reconcile-schedule';
import { quarantineWorkflowId, RUNNER_QUARANTINE_WORKFLOW } from '../common/quarantine';
import { SA_RUNNER_ID } from '../common/search-attributes';
import type { DataSource } from 'typeorm';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import { connectWithRetry, type TemporalConnectSettings } from '../config/temporal';
import { GitLabClient } from '../activities/gitlab/client';
import { AdminToken } from './auth';
import { LogFeed } from './checkpoint-logs';
import { CheckpointLogs } from '../service/checkpoint-logs';
import { AgentHub } from '../gateway/agent-hub';
import { attachAgentGateway } from '../gateway/ws-gateway';
import { createStore, type Store } from '../store';
import { createApp } from './app';
import { answerClientErrors } from './input-guard';
import { TokenBuckets } from './rate-limit';
import { CheckpointService } from '../service/checkpoint-service';
import { RunnerRegistry } from './runner-registry';
import { SecretBox } from '../config/secret-box';
import { FleetView } from './ui/fleet';
import { RefreshWatch } from './ui/refreshes';
import { GitLabPauseCache } from './ui/gitlab-pauses';

/**
 * The fleet page asks GitLab about a runner's pause at most this often, and
 * gives up on one answer after GITLAB_UI_TIMEOUT_MS (or E2EPOOL_HTTP_TIMEOUT
 * if shorter): the page shows the last answer meanwhile.
 */
const GITLAB_UI_MAX_AGE_MS = 60_000;
const GITLAB_UI_TIMEOUT_MS = 5_000;
const GITLAB_UI_CONCURRENCY = 4;
/** One fleet snapshot serves every viewer for this long. */
const FLEET_CACHE_MS = 2_000;
/** How long the fleet page waits for a running refresh's worker to say its step. */
const REFRESH_QUERY_TIMEOUT_MS = 2_000;

/**
 * A client must send its request headers (an agent: its WebSocket upgrade
 * request) within this long, or it gets 408 and is disconnected; a socket that
 * sends nothing, or half a request, never lingers longer (Node's default: 60 s,
 * checked every 30 s).
 */
export const HEADERS_TIMEOUT_MS = 10_000;

export interface ApiServer {
  server: Server;
  hub: AgentHub;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Connects a Temporal client, retrying for up to `waitMs` while the server starts. */
export function connectClient(t: TemporalConnectSettings, waitMs = 60_000): Promise<Connection> {
  return connectWithRetry(t, waitMs, () =>
    Connection.connect(t.connectionOptions as Parameters<typeof Connection.connect>[0]),
  );
}

export interface ApiServerDeps {
  settings: Settings;
  dataSource: DataSource;
  temporal: Connection;
  temporalSettings: TemporalConnectSettings;
  inventory: InventoryStore;
  log: Logger;
  /**
   * GitLab for the fleet page's pause column; unset: built from the
   * settings (none without E2EPOOL_GITLAB_URL and _TOKEN).
   */
  gitlab?: Pick<GitLabClient, 'runnerPaused'> | null;
}

/** The fleet page's data, with GitLab's pause answers cached when GitLab is configured. */
function fleetView(d: ApiServerDeps, store: Store, client: Client): FleetView {
  const gitlab =
    d.gitlab !== undefined
      ? d.gitlab
      : d.settings.gitlabUrl && d.settings.gitlabToken
        ? new GitLabClient(
            d.settings.gitlabUrl,
            d.settings.gitlabToken,
            Math.min(GITLAB_UI_TIMEOUT_MS, d.settings.httpTimeoutSeconds * 1000),
          )
        : null;
  return new FleetView({
    store,
    inventory: d.inventory,
    agentStaleAfterSeconds: d.settings.wsHeartbeatTimeoutSeconds,
    gitlab: gitlab
      ? new GitLabPauseCache(gitlab, {
          maxAgeMs: GITLAB_UI_MAX_AGE_MS,
          concurrency: GITLAB_UI_CONCURRENCY,
          log: d.log.child({ component: 'ui' }),
        })
      : null,
    cacheMs: FLEET_CACHE_MS,
    refreshes: new RefreshWatch({
      client,
      namespace: d.temporalSettings.namespace,
      uiUrl: d.settings.temporalUiUrl ?? null,
      queryTimeoutMs: REFRESH_QUERY_TIMEOUT_MS,
    }),
    warn: (msg, err) => d.log.child({ component: 'ui' }).warn({ err: (err as Error).message }, msg),
  });
}

function runnerRegistry(
  d: ApiServerDeps,
  store: Store,
  client: Client,
  fleet: FleetView,
): RunnerRegistry {
  return new RunnerRegistry({
    store,
    inventory: d.inventory,
    secrets: d.settings.secretKey ? new SecretBox(d.settings.secretKey) : null,
    log: d.log.child({ component: 'registry' }),
    // The pass may start before a worker has seen the undrain: the next pass catches up.
    undrained: () =>
      client.schedule
        .getHandle(reconcileScheduleId(d.settings.taskQueue))
        .trigger(ScheduleOverlapPolicy.BUFFER_ONE),
    // Read your writes: the operator's next fleet page load shows the change.
    changed: () => fleet.invalidate(),
    quarantined: async (runnerId) => {
      await client.workflow.start(RUNNER_QUARANTINE_WORKFLOW, {
        workflowId: quarantineWorkflowId(runnerId),
        taskQueue: d.settings.taskQueue,
        args: [{ runnerId }],
        // A second quarantine while one runs joins it; a finished one is started again.
        workflowIdConflictPolicy: 'USE_EXISTING',
        typedSearchAttributes: [{ key: SA_RUNNER_ID, value: runnerId }],
      });
    },
  });
}

/**
 * The SDK's retry interceptor would keep retrying a failed probe in the
 * background long after /healthz answered; the probe gets a connection without it.
 */
function healthConnection(t: TemporalConnectSettings): Connection {
  return Connection.lazy({
    ...(t.connectionOptions as Parameters<typeof Connection.lazy>[0]),
    interceptors: [],
  });
}

function listen(server: Server, settings: Settings): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(settings.port, settings.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Starts the HTTP server (port 0 picks a free one, as tests do). */
export async function startApiServer(d: ApiServerDeps): Promise<ApiServer> {
  const store = createStore(d.dataSource);
  const client = new Client({ connection: d.temporal, namespace: d.temporalSettings.namespace });
  // The checkpoint operations REST and the agent gateway share.
  const checkpoints = new CheckpointService({
    client,
    records: store.checkpoints,
    inventory: d.inventory,
    settings: d.settings,
    log: d.log,
  });
  const healthTemporal = healthConnection(d.temporalSettings);
  const logs = new CheckpointLogs(store);
  const logFeed = new LogFeed(databaseUrlOf(d.dataSource), d.log.child({ component: 'log-feed' }), {
    perRunner: d.settings.logStreamsPerRunner,
    total: d.settings.logStreamsMax,
    stalledMs: d.settings.logStreamStallSeconds * 1000,
  });
  const hub = new AgentHub(
    store,
    databaseUrlOf(d.dataSource),
    d.log.child({ component: 'agent-hub' }),
    d.settings.wsHeartbeatTimeoutSeconds,
    { logMaxLines: d.settings.logMaxLines },
  );
  const fleet = fleetView(d, store, client);
  const registry = runnerRegistry(d, store, client, fleet);
  const app = createApp({
    store,
    registry,
    settings: d.settings,
    admin: new AdminToken(
      d.settings.adminToken,
      new TokenBuckets(d.settings.authFailureBurst, d.settings.authFailurePerMinute / 60),
    ),
    fleet,
    temporal: client,
    logs,
    logFeed,
    healthTemporal,
    checkpoints,
    inventory: d.inventory,
    agentStaleAfterSeconds: d.settings.wsHeartbeatTimeoutSeconds,
    agentSessions: () => hub.sessionCount,
    log: d.log,
  });
  const server = createServer(
    { headersTimeout: HEADERS_TIMEOUT_MS, connectionsCheckingInterval: 1000 },
    app,
  );
  answerClientErrors(server);
  await hub.start();
  const gateway = attachAgentGateway(server, {
    inventory: d.inventory,
    checkpoints,
    logs,
    hub,
    settings: d.settings,
    log: d.log.child({ component: 'ws' }),
  });
  await listen(server, d.settings);
  warnSharedCredentials(d.inventory, d.log);
  const port = (server.address() as AddressInfo).port;
  const host = d.settings.host === '0.0.0.0' ? '127.0.0.1' : d.settings.host;
  return {
    server,
    port,
    url: `http://${host}:${port}`,
    hub,
    close: async () => {
      gateway.close();
      await hub.stop();
      await logFeed.close();
      await healthTemporal.close().catch(() => undefined);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/** How many runner ids a shared-credential warning names. */
const SHARED_CREDENTIAL_IDS_SHOWN = 10;

/**
 * Warns (once, at startup) about runners whose agent uses the REST token:
 * their CI jobs hold it too, so a job could stand in for the agent and answer
 * its reset commands. The gauge e2epool_runners_shared_credential follows it live.
 */
export function warnSharedCredentials(inventory: InventoryStore, log: Logger): void {
  const shared = inventory.inventory.sharedCredentialRunners();
  if (shared.length === 0) return;
  const shown = shared.slice(0, SHARED_CREDENTIAL_IDS_SHOWN);
  const more = shared.length > shown.length ? ` and ${shared.length - shown.length} more` : '';
  log.warn(
    { sharedCredentialRunners: shared.length, runnerIds: shown },
    `${shared.length} runner(s) share one credential between their agent and their CI jobs (no agent_token): ` +
      `${shown.join(', ')}${more}. A job on such a runner can stand in for its agent and fake a reset; ` +
      'give each an agent_token (inventory.yml, or POST /api/runners/{id}/rotate-agent-token)',
  );
}

/** The connection URL a DataSource was made with (the agent hub LISTENs on its own connection). */
export function databaseUrlOf(ds: DataSource): string {
  const url = (ds.options as { url?: string }).url;
  if (!url) throw new Error('the DataSource has no url');
  return url;
}
