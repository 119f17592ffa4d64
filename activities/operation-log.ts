import { Context } from '@temporalio/activity';
import type { Backend } from '../common/states';
import type {
  OperationLogStore,
  OperationMeta,
  OperationOutcome,
  OperationResult,
} from '../store/operation-log';
import { secondsSince, type WorkerMetrics } from './metrics';

/** First line of an error, trimmed: error text that is safe to store and show. */
function errorText(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0]!.slice(0, 2000);
}

/** What every side-effect step knows about its checkpoint. */
export interface StepInput {
  checkpointId: number;
  checkpointName: string;
  runnerId: string;
  /** Reset round (an operator `retry` starts a new one): part of the log rows' keys. */
  round: number;
}

function attempt(): number {
  try {
    return Context.current().info.attempt;
  } catch {
    return 1; // called outside an activity (tests)
  }
}

/**
 * Writes the step's log row (see activityKey for `m.key`), stamped with the
 * current activity attempt.
 */
export async function writeOperation(
  ops: OperationLogStore,
  m: OperationMeta,
  row: Omit<OperationOutcome, 'attempt'>,
): Promise<void> {
  await ops.write(m, { ...row, attempt: attempt() });
}

/** Where a step's record goes: its operation-log row and its duration metric. */
export interface StepLog {
  operations: OperationLogStore;
  metrics: WorkerMetrics;
}

/** A step's log row, and the runner's backend for its metric (a GitLab step's row has none). */
export interface StepMeta extends OperationMeta {
  runnerBackend?: Backend | null;
}

/**
 * Runs one step and records it: a `running` row before, then `ok` (with the
 * detail `fn` returns) or `error` (with the error text) after. Retries of the
 * same step update the same row; each attempt is one observation of
 * e2epool_step_duration_seconds (the step itself, not its log writes).
 */
export async function withOperation<T>(
  log: StepLog,
  m: StepMeta,
  fn: () => Promise<{ value: T; detail?: string | null; result?: OperationResult }>,
): Promise<T> {
  const ops = log.operations;
  const startedAt = new Date();
  await writeOperation(ops, m, { result: 'running', startedAt });
  const start = performance.now();
  const observe = (result: OperationResult) =>
    log.metrics.observeStep(m.runnerBackend ?? m.backend, m.operation, result, secondsSince(start));
  try {
    const { value, detail, result } = await fn();
    observe(result ?? 'ok');
    await writeOperation(ops, m, {
      result: result ?? 'ok',
      detail,
      startedAt,
      finishedAt: new Date(),
    });
    return value;
  } catch (err) {
    observe('error');
    await writeOperation(ops, m, {
      result: 'error',
      error: errorText(err),
      startedAt,
      finishedAt: new Date(),
    }).catch(
      () => undefined, // the step's own error matters more than a failed log write
    );
    throw err;
  }
}

/**
 * Idempotency key of the current activity call: Temporal keeps workflow id,
 * run id and activity id the same across retries of one call, and different
 * for every other call. Outside an activity (tests) the fallback is used.
 */
export function activityKey(suffix: string, fallback: string): string {
  try {
    const { workflowExecution, activityId } = Context.current().info;
    if (!workflowExecution) throw new Error('standalone activity');
    return `${workflowExecution.workflowId}/${workflowExecution.runId}/${activityId}/${suffix}`;
  } catch {
    return fallback;
  }
}
