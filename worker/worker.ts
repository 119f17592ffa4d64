import { existsSync } from 'node:fs';
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createActivities, type Activities, type ActivityDeps } from '../activities';
import { GitHubClient } from '../activities/github/client';
import { GitLabClient } from '../activities/gitlab/client';
import type { WorkerMetrics } from '../activities/metrics';
import type { Settings } from '../config/settings';
import { connectWithRetry, type TemporalConnectSettings } from '../config/temporal';
import { gitlabPollTaskQueue, gitlabQueueRates, gitlabTaskQueue } from '../common/gitlab-budget';
import { prebuiltBundlePath, workflowsPath } from './bundle';
import { temporalLogger } from './temporal-logger';

export interface WorkerParams {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  deps: ActivityDeps;
}

/** Activities that make GitLab requests (at most one per attempt), run on the GitLab queue. */
const GITLAB_ACTIVITIES = [
  'checkRunnerPaused',
  'sendPause',
  'pauseRunner',
  'unpauseRunner',
  'checkPausedGitlabRunner',
  'unpausePausedGitlabRunner',
  // An idle runner's hold (quarantine, baseline refresh): check and pause, or unpause.
  'quarantineHoldRunner',
  'refreshHoldRunner',
  'refreshReleaseRunner',
] as const satisfies ReadonlyArray<keyof Activities>;

/** The job-status poll: on the GitLab queue, and alone on 1.1's poll queue. */
const POLL_ACTIVITIES = ['pollJobStatus'] as const satisfies ReadonlyArray<keyof Activities>;

function pick<K extends keyof Activities>(all: Activities, names: readonly K[]) {
  return Object.fromEntries(names.map((n) => [n, all[n]])) as Pick<Activities, K>;
}

/**
 * The Temporal workers of one `e2epool worker`: the main one (every
 * workflow and activity) and one per GitLab queue (the GitLab queue and
 * 1.1's poll queue), which run only GitLab activities and tell Temporal the
 * queue's rate limit (`maxTaskQueueActivitiesPerSecond`). That limit is
 * enforced by the server for the queue as a whole, so it holds across any
 * number of workers, provided they all have the same E2EPOOL_GITLAB_MAX_RPS
 * (the last poller's value wins: while 1.1 and 1.2 workers both run, the
 * two queues may together exceed the budget).
 */
export class WorkerGroup {
  constructor(readonly workers: Worker[]) {}

  /** Runs every worker until all stop; one failing stops the others and fails this. */
  async run(): Promise<void> {
    const results = await Promise.allSettled(
      this.workers.map((w) =>
        w.run().catch((err: unknown) => {
          this.shutdown();
          throw err;
        }),
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Asks every running worker to stop (as SIGTERM does); run() resolves once they have. */
  shutdown(): void {
    // Worker.shutdown throws unless the worker runs: one that stopped (or failed) is left alone.
    for (const w of this.workers) if (w.getState() === 'RUNNING') w.shutdown();
  }
}

/**
 * Creates the e2epool workers: every workflow (the bundle from `npm run build`,
 * else bundled now) and activity on `taskQueue`, and the GitLab activities on
 * the two GitLab queues (common/gitlab-budget.ts) at the fleet's GitLab budget.
 */
export async function createWorker(p: WorkerParams): Promise<WorkerGroup> {
  const bundle = prebuiltBundlePath();
  const workflowSource = existsSync(bundle)
    ? { workflowBundle: { codePath: bundle } }
    : { workflowsPath: workflowsPath() };
  const activities = createActivities(p.deps);
  const rates = gitlabQueueRates(p.deps.settings.gitlabMaxRps);
  const common = {
    connection: p.connection,
    namespace: p.namespace,
    // Give running activities time to finish (or heartbeat-cancel) on SIGTERM.
    shutdownGraceTime: '20 seconds',
  } as const;
  const main = await Worker.create({
    ...common,
    taskQueue: p.taskQueue,
    ...workflowSource,
    activities,
    // The SDK's default is sized from the heap limit (about 2,300 runs on a
    // 24 GiB host), which lets a worker with many waiting checkpoints grow
    // far past what it needs; evicted runs replay cheaply at their next wake.
    maxCachedWorkflows: p.deps.settings.workerMaxCachedWorkflows,
  });
  const gitlab = await Worker.create({
    ...common,
    taskQueue: gitlabTaskQueue(p.taskQueue),
    activities: pick(activities, [...GITLAB_ACTIVITIES, ...POLL_ACTIVITIES]),
    maxTaskQueueActivitiesPerSecond: rates.gitlab,
  });
  // 1.1's poll queue, for the polls runs scheduled there before the upgrade
  // (common/gitlab-budget.ts): empty one poll interval after the last 1.1
  // worker stopped; its rate is taken from the GitLab queue's.
  const poll = await Worker.create({
    ...common,
    taskQueue: gitlabPollTaskQueue(p.taskQueue),
    activities: pick(activities, POLL_ACTIVITIES),
    maxTaskQueueActivitiesPerSecond: rates.legacyPoll,
  });
  return new WorkerGroup([main, gitlab, poll]);
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
export function connectNative(
  t: TemporalConnectSettings,
  waitMs = 60_000,
): Promise<NativeConnection> {
  return connectWithRetry(t, waitMs, () => NativeConnection.connect(t.connectionOptions));
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
