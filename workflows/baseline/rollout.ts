/**
 * baselineRolloutWorkflow (docs/operators.md, "Baseline refresh"): refreshes the
 * baselines of several runners, each as a child baselineRefreshWorkflow (id
 * `e2epool-baseline-<runner_id>`, so a refresh already running for one of them
 * is a failure here). The canary first, alone; then the rest, never more than
 * `maxUnavailable` at once; after the first failure no refresh starts (those
 * running finish) and the rollout fails, its details naming which failed and
 * which did not start.
 */
import {
  ApplicationFailure,
  ParentClosePolicy,
  executeChild,
  setCurrentDetails,
  workflowInfo,
} from '@temporalio/workflow';
import {
  BASELINE_REFRESH_WORKFLOW,
  baselineWorkflowId,
  type BaselineRefreshInput,
  type BaselineRolloutInput,
  type BaselineRolloutResult,
} from '../../common/baseline';
import { describeFailure } from '../../common/fail';
import { SA_BACKEND, SA_RUNNER_ID } from '../../common/search-attributes';

export async function baselineRolloutWorkflow(
  input: BaselineRolloutInput,
): Promise<BaselineRolloutResult> {
  const result: BaselineRolloutResult = { refreshed: [], failed: [], notStarted: [] };
  const order = input.canary
    ? [input.canary, ...input.runners.filter((r) => r !== input.canary)]
    : [...input.runners];
  const queue = [...order];
  const running = new Set<string>();
  const show = () =>
    setCurrentDetails(
      `**Baseline rollout** of ${order.length} runner(s): refreshed ${result.refreshed.length}, running ${[...running].join(', ') || 'none'}, waiting ${queue.length}, failed ${result.failed.map((f) => f.runnerId).join(', ') || 'none'}`,
    );
  const refresh = async (runnerId: string): Promise<void> => {
    running.add(runnerId);
    show();
    try {
      await executeChild(BASELINE_REFRESH_WORKFLOW, {
        workflowId: baselineWorkflowId(runnerId),
        taskQueue: workflowInfo().taskQueue,
        // A rollout canceled or terminated leaves a refresh under way to finish (or restore).
        parentClosePolicy: ParentClosePolicy.ABANDON,
        // Findable as the refresh started by the API is (the checkpoint's runner-id attribute).
        typedSearchAttributes: [
          { key: SA_RUNNER_ID, value: runnerId },
          { key: SA_BACKEND, value: 'proxmox' },
        ],
        args: [refreshInput(input, runnerId)],
      });
      result.refreshed.push(runnerId);
    } catch (err) {
      result.failed.push({ runnerId, error: describeFailure(err) });
    } finally {
      running.delete(runnerId);
      show();
    }
  };
  // The canary alone: its failure stops the rollout before any other runner is touched.
  if (input.canary) await refresh(queue.shift()!);
  const lane = async (): Promise<void> => {
    while (queue.length && result.failed.length === 0) await refresh(queue.shift()!);
  };
  const lanes = Math.max(1, Math.min(input.maxUnavailable, queue.length));
  if (result.failed.length === 0) await Promise.all(Array.from({ length: lanes }, lane));
  result.notStarted = [...queue];
  show();
  // Failed in the Web UI and `temporal workflow list`; the details carry the whole result.
  if (result.failed.length)
    throw ApplicationFailure.nonRetryable(
      `baseline rollout stopped: ${result.failed.map((f) => `'${f.runnerId}' failed (${f.error})`).join('; ')}; not started: ${result.notStarted.join(', ') || 'none'}`,
      'BaselineRolloutFailed',
      result,
    );
  return result;
}

function refreshInput(input: BaselineRolloutInput, runnerId: string): BaselineRefreshInput {
  return {
    runnerId,
    keep: input.keep,
    pollSeconds: input.pollSeconds,
    ...(input.updateCmd !== undefined ? { updateCmd: input.updateCmd } : {}),
  };
}
