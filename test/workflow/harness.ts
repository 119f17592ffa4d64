/**
 * Workflow-level tests: the real checkpoint workflow on the real Temporal dev
 * server, with its activities replaced by stubs that record every call and do
 * what the test says. One worker per test, on a task queue of its own; every
 * test names its own runner, so its own workflow id.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { Client, Connection, WithStartWorkflowOperation } from '@temporalio/client';
import {
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  bundleWorkflowCode,
} from '@temporalio/worker';
import { join } from 'node:path';
import type { Activities } from '../../activities';
import {
  CHECKPOINT_WORKFLOW,
  checkpointWorkflowId,
  createUpdate,
  type CheckpointDto,
  type CheckpointWorkflowInput,
  type PauseTarget,
  type VerifyResetMode,
} from '../../common/checkpoint';
import { gitlabPollTaskQueue, gitlabTaskQueue } from '../../common/gitlab-budget';
import { SA_BACKEND, SA_RUNNER_ID } from '../../common/search-attributes';
import { uniqueId } from '../helpers/env';
import { shared } from '../helpers/shared';

/** The name of a real activity (activities/index.ts `createActivities`). */
export type ActivityName = keyof Activities;

/**
 * A stand-in for activity `K`, typed like the real one: a renamed activity or
 * a changed input or result breaks the typecheck of the stubs and the tests.
 */
export type StubFn<K extends ActivityName = ActivityName> = (
  input: Parameters<Activities[K]>[0],
) => Awaited<ReturnType<Activities[K]>> | ReturnType<Activities[K]>;

/** Stand-ins for some of the real activities, each typed like its original. */
export type StubMap = { [K in ActivityName]?: StubFn<K> };

export interface StubCall {
  name: ActivityName;
  input: Record<string, unknown>;
  attempt: number;
  /** When the call started (Date.now()). */
  at: number;
}

/**
 * Stub activities: each call is logged; a behaviour set with `on` decides the
 * result (default: what a healthy environment answers).
 */
export class StubActivities {
  readonly calls: StubCall[] = [];
  private readonly behaviours: StubMap = {};
  private nextId = 1000 + Math.floor(Math.random() * 1_000_000);

  on<K extends ActivityName>(name: K, fn: StubFn<K>): this {
    (this.behaviours as Record<K, StubFn<K>>)[name] = fn;
    return this;
  }

  names(): ActivityName[] {
    return this.calls.map((c) => c.name);
  }

  callsOf(name: ActivityName): StubCall[] {
    return this.calls.filter((c) => c.name === name);
  }

  private defaults(): StubMap {
    return {
      recordCheckpoint: () => ({ id: this.nextId++, pollJobs: true }),
      transitionCheckpoint: () => undefined,
      noteOperation: () => undefined,
      takeSnapshot: () => undefined,
      removeSnapshot: () => undefined,
      stopVm: () => ({ staleSession: 'session-before-stop' }),
      rollbackVm: () => undefined,
      startVm: () => undefined,
      runRunnerCommand: () => undefined,
      waitUntilReady: () => undefined,
      writeCanary: () => undefined,
      verifyReset: () => ({ verified: true, detail: 'canary gone' }),
      pauseRunner: () => ({ pausedByUs: true }),
      checkRunnerPaused: () => ({ paused: false }),
      sendPause: () => undefined,
      unpauseRunner: () => undefined,
      checkRunnerLabels: () => ({ labels: ['self-hosted', 'Linux', 'X64', 'e2e'] }),
      removeRunnerLabels: (i: { labels: string[] }) => ({ removed: i.labels }),
      pauseRunnerLabels: (i: { target: { labels: string[] } }) => ({ removed: i.target.labels }),
      restoreRunnerLabels: () => undefined,
      pollJobStatus: () => 'running',
      // The reconciler: one GitLab runner e2epool left paused, unpaused.
      reconcileCheckpoints: () => [],
      reconcilePausedRunners: () => [],
      pausedGitlabCandidates: () => [
        {
          runnerId: 'stub-runner',
          checkpointId: 1,
          checkpointName: 'job-1-1795000000-abcdef12',
          at: '2026-11-27T00:00:00.000Z',
          labels: [],
          keptForDrain: false,
          target: { kind: 'gitlab', gitlabRunnerId: 42 },
        },
      ],
      checkPausedGitlabRunner: () => ({ findings: [], unpauseWhy: 'left paused' }),
      unpausePausedGitlabRunner: () => ({
        kind: 'paused_runner',
        checkpoint: 'job-1-1795000000-abcdef12',
        runnerId: 'stub-runner',
        action: 'unpaused',
        detail: 'left paused: unpaused',
      }),
      reconcileSnapshots: () => [],
      pruneRetention: () => ({ commands: 0, logs: 0 }),
      // Baseline refresh: a runner on its configured baseline, idle, every step fine.
      refreshStart: () => ({
        previous: 'golden-base',
        wasDraining: false,
        canaryPath: '/var/lib/e2epool/canary',
      }),
      refreshSetDraining: () => undefined,
      refreshHasActiveCheckpoint: () => false,
      refreshPrepare: () => 'update_cmd exited 0',
      refreshTakeBaseline: (i: { name: string }) => `snapshot '${i.name}' taken`,
      refreshVerify: () => ({ detail: 'canary gone', staleSession: 'session-1' }),
      refreshCommit: () => undefined,
      refreshPrune: () => ['e2epool-baseline-20200101000000'],
      refreshRestore: () => ({ detail: "rolled back to 'golden-base'", staleSession: 'session-2' }),
      refreshQuarantine: () => undefined,
      refreshHoldRunner: () => 'GitLab runner 42 paused',
      refreshReleaseRunner: () => 'GitLab runner 42 unpaused',
      refreshAwaitAgent: () => 'agent connected',
      // Quarantine of an idle runner.
      quarantineHoldRunner: () => 'GitLab runner 42 paused',
    };
  }

  /** The activity object a worker registers. */
  activities(): Record<string, (input: unknown) => Promise<unknown>> {
    const out: Record<string, (input: unknown) => Promise<unknown>> = {};
    const defaults = this.defaults();
    for (const name of Object.keys(defaults) as ActivityName[]) {
      out[name] = async (input: unknown) => {
        const attempt = Context.current().info.attempt;
        this.calls.push({ name, input: input as Record<string, unknown>, attempt, at: Date.now() });
        const fn = (this.behaviours[name] ?? defaults[name]) as (i: unknown) => unknown;
        return fn(input);
      };
    }
    return out;
  }
}

/**
 * A failure that is not retried, whatever its type: makes a step fail at once
 * instead of after its retry budget (real activities raise through common/fail.ts).
 */
export function nonRetryable(message: string, type = 'PermanentFailure'): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

let bundle: Promise<string> | undefined;
/** The workflows, bundled once per test file (bundling takes seconds). */
export function workflowBundle(): Promise<string> {
  bundle ??= bundleWorkflowCode({
    workflowsPath: join(__dirname, '..', '..', 'workflows', 'index.ts'),
    logger: new DefaultLogger('WARN'),
  }).then((b) => b.code);
  return bundle;
}

let runtimeInstalled = false;
function quietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  try {
    // Stubs fail on purpose; the SDK would log each failed attempt as a warning.
    Runtime.install({ logger: new DefaultLogger('ERROR') });
  } catch {
    /* already installed by another helper in this process */
  }
}

export interface WorkflowHarness {
  client: Client;
  taskQueue: string;
  stubs: StubActivities;
  stop(): Promise<void>;
}

/** A worker with stubbed activities on a task queue of its own. */
export async function startWorkflowHarness(
  stubs = new StubActivities(),
  address = shared().temporalAddress,
): Promise<WorkflowHarness> {
  quietRuntime();
  const taskQueue = uniqueId('wf-tq');
  const native = await NativeConnection.connect({ address });
  const worker = await Worker.create({
    connection: native,
    namespace: 'default',
    taskQueue,
    workflowBundle: { code: await workflowBundle() },
    activities: stubs.activities(),
  });
  // The GitLab queues, served by the same stubs, unthrottled.
  const gitlabWorkers = await Promise.all(
    [gitlabTaskQueue(taskQueue), gitlabPollTaskQueue(taskQueue)].map((q) =>
      Worker.create({
        connection: native,
        namespace: 'default',
        taskQueue: q,
        activities: stubs.activities(),
      }),
    ),
  );
  const workers = [worker, ...gitlabWorkers];
  const running = Promise.all(workers.map((w) => w.run()));
  const connection = await Connection.connect({ address });
  const client = new Client({ connection });
  return {
    client,
    taskQueue,
    stubs,
    async stop() {
      for (const w of workers) w.shutdown();
      await running;
      await native.close();
      await connection.close();
    },
  };
}

export interface RunnerSpec {
  runnerId: string;
  backend: 'proxmox' | 'bare_metal';
  /** The GitLab runner to pause (the input's `pause`, unless `pause` is given). */
  gitlabRunnerId: number | null;
  pause?: PauseTarget | null;
  resetOnSuccess?: boolean;
  holdOnFailureSeconds?: number;
  /** 1.1.0 plan fields (absent: a 1.0.0 input). */
  baselineSnapshot?: string;
  verifyReset?: VerifyResetMode;
  canaryPath?: string;
}

/** Starts the runner's checkpoint workflow with a create, as the API does. */
export async function createCheckpoint(
  h: WorkflowHarness,
  runner: RunnerSpec,
  input: CheckpointWorkflowInput,
  req: { jobId: string; projectId?: string | null; caller?: string | null; deadline?: string },
): Promise<CheckpointDto> {
  return h.client.workflow.executeUpdateWithStart(createUpdate, {
    args: [
      {
        jobId: req.jobId,
        caller: req.caller ?? null,
        projectId: req.projectId ?? null,
        // As the API does: nobody waits for a create longer than this.
        deadline: req.deadline ?? new Date(Date.now() + 10 * 60_000).toISOString(),
      },
    ],
    startWorkflowOperation: new WithStartWorkflowOperation(CHECKPOINT_WORKFLOW, {
      workflowId: checkpointWorkflowId(runner.runnerId),
      taskQueue: h.taskQueue,
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowIdReusePolicy: 'ALLOW_DUPLICATE',
      typedSearchAttributes: [
        { key: SA_RUNNER_ID, value: runner.runnerId },
        { key: SA_BACKEND, value: runner.backend },
      ],
    }),
  });
}
