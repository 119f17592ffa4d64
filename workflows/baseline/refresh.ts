/**
 * baselineRefreshWorkflow (docs/operators.md, "Baseline refresh"): makes a new golden
 * baseline of one Proxmox runner, durably. Workflow id
 * `e2epool-baseline-<runner_id>`, started with conflict policy FAIL: one
 * refresh per runner at a time. Every side effect is an activity that checks
 * the VM or the registry first (activities/baseline.ts), so a worker that dies
 * anywhere in here resumes where it was.
 */
import {
  ApplicationFailure,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  sleep,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../../activities';
import {
  baselineSnapshotName,
  type BaselineRefreshInput,
  type BaselineRefreshResult,
} from '../../common/baseline';
import { describeFailure } from '../../common/fail';
import { NON_RETRYABLE_TYPES } from '../../common/failures';
import { GITLAB_PRIORITY } from '../../common/gitlab-budget';
import { PATCH_REFRESH_HOLD_AND_AGENT } from '../../common/patches';
import { gitlabBudget } from '../checkpoint/activities';

/** Registry reads and writes: a few tries; a refresh that cannot reach Postgres fails (and restores). */
const REGISTRY: ActivityOptions = {
  startToCloseTimeout: '30 seconds',
  retry: {
    maximumAttempts: 10,
    initialInterval: '1 second',
    maximumInterval: '30 seconds',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
};
const registry = proxyActivities<Activities>(REGISTRY);

/**
 * The pause and unpause in the runner's CI system (refreshHoldRunner,
 * refreshReleaseRunner) on the GitLab budget (common/gitlab-budget.ts) at a
 * reset's priority: the refresh waits on the pause, and the runner's next
 * job on the unpause, as a reset's do. Only on the PATCH_REFRESH_HOLD_AND_AGENT
 * path, new in 2.0.0 (no older history reaches it): no gate of its own.
 */
function ciHold() {
  return proxyActivities<Activities>({ ...REGISTRY, ...gitlabBudget(GITLAB_PRIORITY.reset) });
}

/**
 * VM steps (Proxmox tasks, the guest command): long, heartbeating, a few
 * attempts (each starts again from a rolled-back VM); 30 minutes only bounds a
 * stuck attempt (the update's own deadline is E2EPOOL_COMMAND_TIMEOUT_SECONDS).
 */
const vm = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '15 seconds',
  retry: {
    maximumAttempts: 3,
    initialInterval: '1 second',
    maximumInterval: '30 seconds',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
});

/** Restoring after a failure: more patient, since what is left otherwise is a quarantine. */
const restorer = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '15 seconds',
  retry: {
    maximumAttempts: 5,
    initialInterval: '2 seconds',
    maximumInterval: '1 minute',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
});

/** Progress for the Web UI's "current details". */
function progress(runnerId: string, step: string): void {
  setCurrentDetails(`**Baseline refresh of \`${runnerId}\`**: ${step}`);
}

export async function baselineRefreshWorkflow(
  input: BaselineRefreshInput,
): Promise<BaselineRefreshResult> {
  const { runnerId } = input;
  const r = { runnerId };
  // Asked once, before any command: a run from before 2.0.0 keeps the 1.1.0 path throughout.
  const holds = patched(PATCH_REFRESH_HOLD_AND_AGENT);
  progress(runnerId, 'reading the registry');
  const start = await registry.refreshStart(r);
  progress(runnerId, 'draining');
  await registry.refreshSetDraining({ runnerId, draining: true });
  let attempted: string | null = null;
  try {
    while (await registry.refreshHasActiveCheckpoint(r)) {
      progress(runnerId, 'waiting for its active checkpoint to end');
      await sleep(input.pollSeconds * 1000);
    }
    if (holds) await holdRunner(runnerId);
    progress(runnerId, `updating from ${start.previous ?? 'the running VM'}`);
    await vm.refreshPrepare({ runnerId, from: start.previous, updateCmd: input.updateCmd });
    // Workflow time: the same name on replay and after a worker crash.
    attempted = baselineSnapshotName(new Date());
    progress(runnerId, `taking ${attempted}`);
    await vm.refreshTakeBaseline({ runnerId, name: attempted });
    progress(runnerId, `verifying ${attempted} (canary round trip)`);
    const verified = await vm.refreshVerify({
      runnerId,
      name: attempted,
      canaryPath: start.canaryPath,
    });
    // Before it becomes the baseline: one whose agent does not come back is refused.
    if (holds) await awaitAgent(vm, runnerId, verified.staleSession);
    await registry.refreshCommit({ runnerId, name: attempted, previous: start.previous });
    progress(runnerId, `pruning baselines beyond ${input.keep}`);
    const deleted = await vm.refreshPrune({ runnerId, keep: input.keep, current: attempted });
    if (!start.wasDraining) await registry.refreshSetDraining({ runnerId, draining: false });
    if (holds) await releaseRunner(runnerId);
    progress(runnerId, `done: baseline ${attempted}`);
    return { runnerId, baseline: attempted, previous: start.previous, deleted };
  } catch (err) {
    const why = describeFailure(err);
    await recover(input, start, attempted, why, holds);
    throw ApplicationFailure.nonRetryable(
      `baseline refresh of '${runnerId}' failed (${why}); the previous baseline ${start.previous ?? '(none)'} is restored`,
      'BaselineRefreshFailed',
    );
  }
}

/**
 * Pauses the drained runner in its CI system, so its CI system hands it no
 * job that would get 423. A pause that cannot be made does not stop the
 * refresh (as a checkpoint's reset goes ahead unpaused).
 */
async function holdRunner(runnerId: string): Promise<void> {
  progress(runnerId, 'pausing it in its CI system');
  try {
    await ciHold().refreshHoldRunner({ runnerId });
  } catch (err) {
    log.warn('baseline refresh: pausing the runner failed; refreshing anyway', {
      runnerId,
      error: describeFailure(err),
    });
  }
}

/** Waits for the runner's e2epool agent after the last reboot, as a reset's readiness does. */
async function awaitAgent(
  acts: typeof vm,
  runnerId: string,
  staleSession: string | null,
): Promise<void> {
  progress(runnerId, 'waiting for its e2epool agent to reconnect (readiness)');
  await acts.refreshAwaitAgent({ runnerId, staleSession });
}

/**
 * Unpauses the runner once undrained (a quarantined or still draining
 * runner stays paused). A failure is left to the reconciler: the pause is
 * recorded kept_for_drain, which it undoes once the runner is undrained.
 */
async function releaseRunner(runnerId: string): Promise<void> {
  progress(runnerId, 'unpausing it in its CI system');
  try {
    await ciHold().refreshReleaseRunner({ runnerId });
  } catch (err) {
    log.warn('baseline refresh: unpausing the runner failed; the reconciler unpauses it', {
      runnerId,
      error: describeFailure(err),
    });
  }
}

/**
 * After a failure: back to the previous baseline (`holds`: and its agent
 * back) and undrained; if even that fails, the runner is quarantined and
 * left drained (its VM state is unknown), and (`holds`) paused.
 */
async function recover(
  input: BaselineRefreshInput,
  start: { previous: string | null; wasDraining: boolean },
  attempted: string | null,
  why: string,
  holds: boolean,
): Promise<void> {
  const { runnerId } = input;
  progress(runnerId, `failed (${why}); restoring ${start.previous ?? 'the VM'}`);
  try {
    const restored = await restorer.refreshRestore({
      runnerId,
      previous: start.previous,
      attempted,
    });
    if (holds) await awaitAgent(restorer, runnerId, restored.staleSession);
  } catch (restoreErr) {
    const reason = `baseline refresh failed (${why}) and the previous baseline could not be restored (${describeFailure(restoreErr)})`;
    progress(runnerId, `quarantined: ${reason}`);
    await registry.refreshQuarantine({ runnerId, reason });
    if (holds) await releaseRunner(runnerId);
    throw ApplicationFailure.nonRetryable(reason, 'BaselineRefreshFailed');
  }
  if (!start.wasDraining) await registry.refreshSetDraining({ runnerId, draining: false });
  if (holds) await releaseRunner(runnerId);
}
