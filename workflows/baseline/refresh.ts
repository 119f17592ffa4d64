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
  proxyActivities,
  setCurrentDetails,
  sleep,
} from '@temporalio/workflow';
import type { Activities } from '../../activities';
import {
  baselineSnapshotName,
  type BaselineRefreshInput,
  type BaselineRefreshResult,
} from '../../common/baseline';
import { describeFailure } from '../../common/fail';
import { NON_RETRYABLE_TYPES } from '../../common/failures';

/** Registry reads and writes: a few tries; a refresh that cannot reach Postgres fails (and restores). */
const registry = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: {
    maximumAttempts: 10,
    initialInterval: '1 second',
    maximumInterval: '30 seconds',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
});

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
    progress(runnerId, `updating from ${start.previous ?? 'the running VM'}`);
    await vm.refreshPrepare({ runnerId, from: start.previous, updateCmd: input.updateCmd });
    // Workflow time: the same name on replay and after a worker crash.
    attempted = baselineSnapshotName(new Date());
    progress(runnerId, `taking ${attempted}`);
    await vm.refreshTakeBaseline({ runnerId, name: attempted });
    progress(runnerId, `verifying ${attempted} (canary round trip)`);
    await vm.refreshVerify({ runnerId, name: attempted, canaryPath: start.canaryPath });
    await registry.refreshCommit({ runnerId, name: attempted, previous: start.previous });
    progress(runnerId, `pruning baselines beyond ${input.keep}`);
    const deleted = await vm.refreshPrune({ runnerId, keep: input.keep, current: attempted });
    if (!start.wasDraining) await registry.refreshSetDraining({ runnerId, draining: false });
    progress(runnerId, `done: baseline ${attempted}`);
    return { runnerId, baseline: attempted, previous: start.previous, deleted };
  } catch (err) {
    const why = describeFailure(err);
    await recover(input, start, attempted, why);
    throw ApplicationFailure.nonRetryable(
      `baseline refresh of '${runnerId}' failed (${why}); the previous baseline ${start.previous ?? '(none)'} is restored`,
      'BaselineRefreshFailed',
    );
  }
}

/**
 * After a failure: back to the previous baseline and undrained; if even that
 * fails, the runner is quarantined and left drained (its VM state is unknown).
 */
async function recover(
  input: BaselineRefreshInput,
  start: { previous: string | null; wasDraining: boolean },
  attempted: string | null,
  why: string,
): Promise<void> {
  const { runnerId } = input;
  progress(runnerId, `failed (${why}); restoring ${start.previous ?? 'the VM'}`);
  try {
    await restorer.refreshRestore({ runnerId, previous: start.previous, attempted });
  } catch (restoreErr) {
    const reason = `baseline refresh failed (${why}) and the previous baseline could not be restored (${describeFailure(restoreErr)})`;
    progress(runnerId, `quarantined: ${reason}`);
    await registry.refreshQuarantine({ runnerId, reason });
    throw ApplicationFailure.nonRetryable(reason, 'BaselineRefreshFailed');
  }
  if (!start.wasDraining) await registry.refreshSetDraining({ runnerId, draining: false });
}
