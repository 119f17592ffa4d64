import { existsSync } from 'node:fs';
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities';
import { GitHubClient } from '../activities/github/client';
import { GitLabClient } from '../activities/gitlab/client';
import type { WorkerMetrics } from '../activities/metrics';
import type { Settings } from '../config/settings';
import type { TemporalConnectSettings } from '../config/temporal';
import { prebuiltBundlePath, workflowsPath } from './bundle';
import { temporalLogger } from './temporal-logger';

export interface WorkerParams {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  deps: ActivityDeps;
}

/**
 * Creates the e2epool worker: every workflow (the bundle from `npm run build`,
 * else bundled now), activities bound to `deps`.
 */
export async function createWorker(p: WorkerParams): Promise<Worker> {
  const bundle = prebuiltBundlePath();
  const workflowSource = existsSync(bundle)
    ? { workflowBundle: { codePath: bundle } }
    : { workflowsPath: workflowsPath() };
  return Worker.create({
    connection: p.connection,
    namespace: p.namespace,
    taskQueue: p.taskQueue,
    ...workflowSource,
    activities: createActivities(p.deps),
    // Give running activities time to finish (or heartbeat-cancel) on SIGTERM.
    shutdownGraceTime: '20 seconds',
  });
}

let runtimeInstalled = false;

/** Installs the SDK runtime once per process: logs to pino, stops on SIGINT/SIGTERM. */
export function installRuntime(deps: Pick<ActivityDeps, 'log'>): void {
  if (runtimeInstalled) return;
  Runtime.install({
    logger: temporalLogger(deps.log.child({ component: 'temporal' })),
    shutdownSignals: ['SIGINT', 'SIGTERM'],
  });
  runtimeInstalled = true;
}

/** Connects to Temporal, retrying for up to `waitMs` while the server starts. */
export async function connectNative(
  t: TemporalConnectSettings,
  waitMs = 60_000,
): Promise<NativeConnection> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await NativeConnection.connect(t.connectionOptions);
    } catch (err) {
      if (Date.now() >= deadline)
        throw new Error(`cannot reach Temporal at ${t.address}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/**
 * The GitLab client for the settings, counting its requests in `metrics`;
 * null when GitLab is not configured.
 */
export function gitlabClientFrom(s: Settings, metrics: WorkerMetrics): GitLabClient | null {
  if (!s.gitlabUrl || !s.gitlabToken) return null;
  return new GitLabClient(s.gitlabUrl, s.gitlabToken, s.httpTimeoutSeconds * 1000, {
    onResponse: (op, code) => metrics.gitlabRequests.inc({ op, code }),
  });
}

/**
 * The GitHub client for the settings, counting its requests in `metrics`;
 * null without a token (E2EPOOL_GITHUB_URL has a default).
 */
export function githubClientFrom(s: Settings, metrics: WorkerMetrics): GitHubClient | null {
  if (!s.githubToken) return null;
  return new GitHubClient(s.githubUrl, s.githubToken, s.httpTimeoutSeconds * 1000, {
    onResponse: (op, code) => metrics.githubRequests.inc({ op, code }),
  });
}
