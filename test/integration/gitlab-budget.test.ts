import type { ChildProcess } from 'node:child_process';
import { Client, Connection } from '@temporalio/client';
import { tsToMs } from '@temporalio/common/lib/time';
import { defaultPayloadConverter } from '@temporalio/common';
import { checkpointWorkflowId, type CheckpointWorkflowInput } from '../../common/checkpoint';
import { join } from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import { gitlabPollRate, gitlabQueueRates, temporalBurst } from '../../common/gitlab-budget';
import { freePort } from '../../dev/ports';
import { startDevServer, type DevServer } from '../../temporal-dev/dev-server';
import { restClient } from '../helpers/controller';
import { startCrashController, type CrashController } from '../helpers/crash-controller';
import { bareMetalRunnerYaml, testRunners, uniqueId, type TestRunner } from '../helpers/env';
import { queueUrgent, type priorityOrderWorkflow } from '../helpers/priority-workflow';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabCall, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * One GitLab rate budget for the fleet (common/gitlab-budget.ts): every
 * GitLab request runs in an activity on the GitLab queues, whose rate limit
 * Temporal's matching service enforces for all workers together. Workers
 * here are separate processes (the compiled worker, an agent double).
 *
 * The Temporal server is one of this file's own with one partition per task
 * queue, as docs/operators.md ("GitLab rate budget") recommends for the GitLab queues: then each queue's
 * token bucket has the burst ceil(rate) (temporalBurst), which the windows
 * below allow for.
 */
const PROJECT = '9';

/** The largest number of `times` (ms) in any window [t, t + windowMs). */
function busiestWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < sorted.length; hi++) {
    while (sorted[hi]! - sorted[lo]! >= windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

function inventory(runners: TestRunner[], gitlabIds: number[]): string {
  return `runners:\n${runners
    .map((r, i) => bareMetalRunnerYaml(r, { gitlab_runner_id: gitlabIds[i]! }))
    .join('')}`;
}

/**
 * A test's controller: an API here, `workers` worker processes, all on one
 * GitLab budget (`workerEnv` overrides `env` in the workers only).
 */
async function startFleet(
  temporal: DevServer,
  gitlab: GitLabStandIn,
  runners: TestRunner[],
  gitlabIds: number[],
  env: Record<string, string>,
  workers: number,
  workerEnv: Record<string, string> = {},
): Promise<{ c: CrashController; procs: ChildProcess[] }> {
  for (const id of gitlabIds) gitlab.addRunner(id);
  const c = await startCrashController(inventory(runners, gitlabIds), {
    TEMPORAL_ADDRESS: temporal.address,
    E2EPOOL_GITLAB_URL: gitlab.url,
    E2EPOOL_GITLAB_TOKEN: gitlab.token,
    E2EPOOL_POLLER_MIN_AGE_SECONDS: '0',
    E2EPOOL_LOG_LEVEL: 'error',
    ...env,
  });
  const procs: ChildProcess[] = [];
  for (let i = 0; i < workers; i++) procs.push(await c.startWorker(workerEnv));
  return { c, procs };
}

async function create(c: CrashController, r: TestRunner, job: string): Promise<string> {
  const res = await restClient(() => c.api.url, r.token).create(r.id, job, {
    project_id: PROJECT,
  });
  if (res.status !== 201)
    throw new Error(`create ${r.id}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.name as string;
}

/** The input the runner's checkpoint workflow started with (its history's first event). */
async function inputOf(temporal: DevServer, r: TestRunner): Promise<CheckpointWorkflowInput> {
  const connection = await Connection.connect({ address: temporal.address });
  try {
    const history = await new Client({ connection }).workflow
      .getHandle(checkpointWorkflowId(r.id))
      .fetchHistory();
    const payload =
      history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
    return defaultPayloadConverter.fromPayload<CheckpointWorkflowInput>(payload!);
  } finally {
    await connection.close();
  }
}

const runnerCalls = (gitlab: GitLabStandIn, id: number, method: string) =>
  gitlab.calls.filter((k) => k.method === method && k.path === `/api/v4/runners/${id}`);

describe('the GitLab rate budget', () => {
  let temporal: DevServer;
  let gitlab: GitLabStandIn;

  beforeAll(async () => {
    [temporal, gitlab] = await Promise.all([
      startDevServer({
        bin: shared().temporalBin,
        port: await freePort(),
        uiPort: null,
        namespace: 'default',
        dynamicConfig: {
          'matching.numTaskqueueReadPartitions': 1,
          'matching.numTaskqueueWritePartitions': 1,
        },
      }),
      startGitLabStandIn(),
    ]);
  }, 60_000);
  afterAll(async () => {
    await gitlab?.close();
    await temporal?.stop();
  });

  it('holds across two workers, each caching 4 of the 12 runs, while every checkpoint resets and its runner is unpaused', async () => {
    const MAX_RPS = 4;
    const N = 12;
    const labels = Array.from({ length: N }, (_, i) => `budget${i}`);
    const R = Object.values(testRunners(labels));
    const ids = R.map((_, i) => 7100 + i);
    for (let i = 0; i < N; i++) gitlab.setJob(PROJECT, 9100 + i, 'running');
    const { c } = await startFleet(
      temporal,
      gitlab,
      R,
      ids,
      {
        E2EPOOL_GITLAB_MAX_RPS: String(MAX_RPS),
        E2EPOOL_GITLAB_POLL_SHARE: '0.5',
        // Asked for every second; 12 runners get every 6 s, their share of 2 polls/s.
        E2EPOOL_POLLER_INTERVAL_SECONDS: '1',
        // 2 × 4 cached runs for 12 waiting checkpoints: at any time some are
        // evicted and replayed from their histories at their next wake (and
        // for the finalize), as on a worker holding 1,000.
        E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS: '4',
      },
      2,
    );
    try {
      const start = Date.now();
      const names = await Promise.all(R.map((r, i) => create(c, r, String(9100 + i))));
      // The API stretched the poll interval to fit the fleet's polls into their share.
      const started = await inputOf(temporal, R[0]!);
      expect(started.timing.pollerIntervalSeconds).toBe(N / gitlabPollRate(MAX_RPS, 0.5));
      // Let the polls run against the budget for a while, then end every job at once:
      // 12 × (pause check, pause, unpause) and the polls against 3.8/s on the GitLab queue.
      await waitFor(
        'polls running against the budget',
        () => gitlab.calls.filter((k) => k.path.includes('/jobs/')).length >= 8,
        { timeoutMs: 30_000 },
      );
      await Promise.all(R.map((r, i) => c.finalizeFailed(r, names[i]!)));
      await Promise.all(R.map((r, i) => c.awaitState(r, names[i]!, 'reset', 120_000)));
      await waitFor(
        'every runner unpaused',
        () => ids.every((id) => gitlab.runner(id).pausedHistory.join() === 'true,false'),
        { timeoutMs: 60_000 },
      );
      const mine = new Set([
        ...ids.map((id) => `/api/v4/runners/${id}`),
        ...R.map((_, i) => `/api/v4/projects/${PROJECT}/jobs/${9100 + i}`),
      ]);
      const calls = gitlab.calls.filter((k) => k.at >= start && mine.has(k.path));
      // The queues' rate counts activities: one request each, except the unpause,
      // whose activity also reads the runner back (docs/operators.md, "GitLab rate budget": up to 4/3 of the rate
      // in requests while only resets run). So the limit is checked on the calls
      // that start an activity, and the read-backs are counted apart.
      const last = new Map<string, GitLabCall>();
      const readBacks = calls.filter((k) => {
        const before = last.get(k.path);
        last.set(k.path, k);
        return (
          k.method === 'GET' && before?.method === 'PUT' && String(before.body.paused) === 'false'
        );
      });
      const times = calls.filter((k) => !readBacks.includes(k)).map((k) => k.at);
      const rates = gitlabQueueRates(MAX_RPS);
      const burst = temporalBurst(rates.gitlab, 1) + temporalBurst(rates.legacyPoll, 1);
      const perSecond = busiestWindow(times, 1000);
      const perFiveSeconds = busiestWindow(times, 5000);
      const requestsPerSecond = busiestWindow(
        calls.map((k) => k.at),
        1000,
      );
      const runnerRequests = calls.filter((k) => k.path.startsWith('/api/v4/runners/'));
      const span = (ks: GitLabCall[]) => (ks.at(-1)!.at - ks[0]!.at) / 1000;
      console.log(
        `GitLab budget ${MAX_RPS}/s, burst ${burst}: ${calls.length} requests in ${span(calls).toFixed(1)} s; ` +
          `busiest 1 s window ${perSecond} activities (${requestsPerSecond} requests with ${readBacks.length} read-backs in all), busiest 5 s window ${perFiveSeconds}; ` +
          `${runnerRequests.length} pause/unpause requests in ${span(runnerRequests).toFixed(1)} s`,
      );
      // A token bucket hands out at most its burst plus rate × window in any window.
      expect(perSecond).toBeLessThanOrEqual(MAX_RPS + burst);
      expect(perFiveSeconds).toBeLessThanOrEqual(5 * MAX_RPS + burst);
      // Per runner: the pause check, the pause, the unpause and its read-back (in the
      // unpause's activity). Demand exceeded the budget: 36 activities at 3.8/s cannot
      // take less than ~8 s.
      expect(runnerRequests).toHaveLength(4 * N);
      expect(readBacks).toHaveLength(N);
      const activities = 3 * N;
      expect(span(runnerRequests)).toBeGreaterThanOrEqual(
        (activities - temporalBurst(rates.gitlab, 1)) / rates.gitlab - 1,
      );
    } finally {
      await c.stop();
    }
  }, 240_000);

  it('makes the poller wait as long as a 429 asks, then finalizes through it', async () => {
    const R = testRunners(['poll429']);
    const id = 7201;
    const job = 9201;
    const path = `/api/v4/projects/${PROJECT}/jobs/${job}`;
    gitlab.setJob(PROJECT, job, 'running');
    const { c } = await startFleet(
      temporal,
      gitlab,
      [R.poll429],
      [id],
      { E2EPOOL_POLLER_INTERVAL_SECONDS: '1' },
      1,
    );
    try {
      gitlab.failNext(
        { method: 'GET', pathIncludes: `/jobs/${job}` },
        { kind: 'rate-limit', retryAfterSeconds: 4 },
      );
      const name = await create(c, R.poll429, String(job));
      const limited = await waitFor(
        'the rate-limited poll',
        () => gitlab.calls.find((k) => k.path === path && k.status === 429),
        { timeoutMs: 30_000 },
      );
      gitlab.setJob(PROJECT, job, 'failed');
      await c.awaitState(R.poll429, name, 'reset', 60_000);
      const status = await restClient(() => c.api.url, R.poll429.token).status(name);
      expect(status.body.finalize_source).toBe('poller');
      const after = gitlab.calls.filter((k) => k.path === path && k.at > limited.at);
      // RateLimit-ResetTime (whole seconds) comes first: no poll before that moment.
      const resetAt = (Math.floor(limited.at / 1000) + 4) * 1000;
      expect(after.length).toBeGreaterThan(0);
      expect(after[0]!.at).toBeGreaterThanOrEqual(resetAt);
    } finally {
      await c.stop();
    }
  }, 120_000);

  it('delays a pause and an unpause answered 429 by the wait asked, and still unpauses', async () => {
    const R = testRunners(['unpause429']);
    const id = 7301;
    const { c } = await startFleet(temporal, gitlab, [R.unpause429], [id], {}, 1);
    try {
      const name = await create(c, R.unpause429, '9301');
      // The pause, then the unpause, are each answered 429 once.
      for (const body of ['paused=true', 'paused=false'])
        gitlab.failNext(
          { method: 'PUT', pathIncludes: `/runners/${id}`, bodyIncludes: body },
          { kind: 'rate-limit', retryAfterSeconds: 3 },
        );
      await c.finalizeFailed(R.unpause429, name);
      await c.awaitState(R.unpause429, name, 'reset', 60_000);
      expect(gitlab.runner(id).pausedHistory).toEqual([true, false]);
      const puts = runnerCalls(gitlab, id, 'PUT');
      expect(puts.map((k) => k.status)).toEqual([429, 200, 429, 200]);
      for (const [limited, retried] of [
        [puts[0]!, puts[1]!],
        [puts[2]!, puts[3]!],
      ])
        expect(retried.at).toBeGreaterThanOrEqual((Math.floor(limited.at / 1000) + 3) * 1000);
    } finally {
      await c.stop();
    }
  }, 120_000);

  it('does not queue an unpause behind a backlog of polls', async () => {
    const N = 15;
    const labels = Array.from({ length: N }, (_, i) => `backlog${i}`);
    const R = Object.values(testRunners(labels));
    const ids = R.map((_, i) => 7400 + i);
    for (let i = 0; i < N; i++) gitlab.setJob(PROJECT, 9400 + i, 'running');
    const { c } = await startFleet(
      temporal,
      gitlab,
      R,
      ids,
      {
        // The API starts the checkpoints as one that did not know this budget
        // would (an API of another E2EPOOL_GITLAB_MAX_RPS, or from before the
        // poll interval was fitted to the budget): 15 runners poll every 4 s.
        E2EPOOL_GITLAB_MAX_RPS: '100',
        E2EPOOL_GITLAB_POLL_SHARE: '0.5',
        E2EPOOL_POLLER_INTERVAL_SECONDS: '4',
      },
      1,
      // The worker's budget: 1.9/s on the GitLab queue, against 3.75 polls/s.
      // Behind that backlog, first in first out, an unpause would wait about a
      // poll interval (4 s), the longest a poll stays queued; by priority it
      // goes next.
      { E2EPOOL_GITLAB_MAX_RPS: '2' },
    );
    const connection = await Connection.connect({ address: temporal.address });
    const client = new Client({ connection });
    try {
      const names = await Promise.all(R.map((r, i) => create(c, r, String(9400 + i))));
      expect((await inputOf(temporal, R[0]!)).timing.pollerIntervalSeconds).toBe(4);
      const dropped = async () => {
        let n = 0;
        for (const r of R.slice(1)) {
          const history = await client.workflow
            .getHandle(checkpointWorkflowId(r.id))
            .fetchHistory();
          n += (history.events ?? []).filter(
            (e) =>
              e.activityTaskTimedOutEventAttributes !== undefined &&
              e.activityTaskTimedOutEventAttributes !== null,
          ).length;
        }
        return n;
      };
      // The poll queue is saturated: polls wait a whole interval and are dropped.
      await waitFor('polls dropped after waiting an interval', async () => (await dropped()) >= 3, {
        timeoutMs: 60_000,
        intervalMs: 1000,
      });
      const first = R[0]!;
      const finalizedAt = Date.now();
      await c.finalizeFailed(first, names[0]!);
      await c.awaitState(first, names[0]!, 'reset', 60_000);
      const history = await client.workflow
        .getHandle(checkpointWorkflowId(first.id))
        .fetchHistory();
      const scheduled = (history.events ?? []).find(
        (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'unpauseRunner',
      );
      expect(scheduled).toBeDefined();
      const scheduledAt = tsToMs(scheduled!.eventTime);
      const unpause = runnerCalls(gitlab, ids[0]!, 'PUT').at(-1)!;
      const queued = unpause.at - scheduledAt;
      const pollBacklog = gitlab.calls.filter(
        (k) => k.path.includes('/jobs/94') && k.at >= finalizedAt && k.at <= unpause.at,
      ).length;
      console.log(
        `unpause queued ${queued} ms (finalize → unpause ${unpause.at - finalizedAt} ms) ` +
          `while ${pollBacklog} polls were served and ${await dropped()} dropped in all`,
      );
      // One token of 1.9/s at most (plus dispatch slack on a loaded machine), never a poll backlog's worth.
      expect(queued).toBeLessThan(3000);
      expect(gitlab.runner(ids[0]!).paused).toBe(false);
    } finally {
      await connection.close();
      await c.stop();
    }
  }, 180_000);

  it('starts a priority-1 activity ahead of the priority-5 ones queued before it, on a rate-limited queue (matching.useNewMatcher)', async () => {
    const LOW = 8;
    const RATE = 1;
    const workflowQueue = uniqueId('prio-wf');
    const activityQueue = uniqueId('prio-act');
    const native = await NativeConnection.connect({ address: temporal.address });
    const connection = await Connection.connect({ address: temporal.address });
    const client = new Client({ connection });
    const started: string[] = [];
    // As in production: the queue is polled all along and its rate limit makes the backlog.
    const workers = [
      await Worker.create({
        connection: native,
        taskQueue: workflowQueue,
        workflowsPath: join(__dirname, '..', 'helpers', 'priority-workflow.ts'),
      }),
      await Worker.create({
        connection: native,
        taskQueue: activityQueue,
        activities: {
          probe: (label: string) => {
            started.push(label);
            return Promise.resolve();
          },
        },
        maxTaskQueueActivitiesPerSecond: RATE,
      }),
    ];
    const running = Promise.all(workers.map((w) => w.run()));
    try {
      const handle = await client.workflow.start<typeof priorityOrderWorkflow>(
        'priorityOrderWorkflow',
        {
          taskQueue: workflowQueue,
          workflowId: uniqueId('prio'),
          args: [{ queue: activityQueue, low: LOW }],
        },
      );
      // The first priority-5 one goes at once (the bucket's one token); the rest wait.
      await waitFor('a priority-5 activity started', () => started.length > 0);
      await handle.signal(queueUrgent);
      // Wait until the matching service has the priority-1 task (tasks reach it
      // asynchronously after the history records them).
      const urgentQueued = async () => {
        const res = await connection.workflowService.describeTaskQueue({
          namespace: 'default',
          taskQueue: { name: activityQueue, kind: 1 }, // TASK_QUEUE_KIND_NORMAL
          taskQueueType: 2, // TASK_QUEUE_TYPE_ACTIVITY
          reportStats: true,
        });
        return Number(res.statsByPriorityKey?.[1]?.approximateBacklogCount ?? 0) > 0;
      };
      await waitFor(
        'the priority-1 task in matching',
        async () => started.includes('urgent') || (await urgentQueued()),
      );
      const startedBefore = started.filter((l) => l !== 'urgent').length;
      await handle.result();
      const at = started.indexOf('urgent');
      console.log(
        `start order at ${RATE}/s: ${started.join(' ')} (${startedBefore} had started when the priority-1 one was queued)`,
      );
      expect(started).toHaveLength(LOW + 1);
      // Still a backlog of priority-5 ones when it was queued: first in, first out would start it last.
      expect(startedBefore).toBeLessThan(LOW - 1);
      // It goes next (one more may have been on its way to the worker already).
      expect(at).toBeLessThanOrEqual(startedBefore + 1);
    } finally {
      for (const w of workers) w.shutdown();
      await running;
      await connection.close();
      await native.close();
    }
  }, 120_000);
});
