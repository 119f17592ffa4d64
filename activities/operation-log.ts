import { Context } from '@temporalio/activity';
import type { DataSource } from 'typeorm';
import type { Backend } from '../common/states';
import type { OperationResult } from '../store/operation-log';
import { errorText } from './failures';

/** What every side-effect step knows about its checkpoint. */
export interface StepInput {
  checkpointId: number;
  checkpointName: string;
  runnerId: string;
  /** Reset round (an operator `retry` starts a new one): part of the log rows' keys. */
  round: number;
}

export interface OperationMeta {
  checkpointId: number;
  runnerId: string;
  backend: Backend | null;
  operation: string;
  /** Idempotency key (see activityKey): a retried activity rewrites its row instead of adding one. */
  key: string;
}

function attempt(): number {
  try {
    return Context.current().info.attempt;
  } catch {
    return 1; // called outside an activity (tests)
  }
}

/** A DataSource or a transaction's EntityManager. */
export interface Queryable {
  query(sql: string, parameters?: unknown[]): Promise<unknown>;
}

/** Upserts one operation-log row by its idempotency key. */
export async function writeOperation(
  ds: Queryable,
  m: OperationMeta,
  row: {
    result: OperationResult;
    detail?: string | null;
    error?: string | null;
    startedAt: Date;
    finishedAt?: Date | null;
  },
): Promise<void> {
  const finishedAt = row.finishedAt ?? null;
  await ds.query(
    `INSERT INTO operation_logs
       (checkpoint_id, idempotency_key, operation, runner_id, backend, result, detail, error, attempt, started_at, finished_at, duration_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT (idempotency_key) DO UPDATE SET
       result = EXCLUDED.result, detail = EXCLUDED.detail, error = EXCLUDED.error, attempt = EXCLUDED.attempt,
       started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms`,
    [
      m.checkpointId,
      m.key,
      m.operation,
      m.runnerId,
      m.backend,
      row.result,
      row.detail ?? null,
      row.error ?? null,
      attempt(),
      row.startedAt,
      finishedAt,
      finishedAt ? Math.max(0, finishedAt.getTime() - row.startedAt.getTime()) : null,
    ],
  );
}

/**
 * Runs one step and records it: a `running` row before, then `ok` (with the
 * detail `fn` returns) or `error` (with the error text) after. Retries of the
 * same step update the same row.
 */
export async function withOperation<T>(
  ds: DataSource,
  m: OperationMeta,
  fn: () => Promise<{ value: T; detail?: string | null; result?: OperationResult }>,
): Promise<T> {
  const startedAt = new Date();
  await writeOperation(ds, m, { result: 'running', startedAt });
  try {
    const { value, detail, result } = await fn();
    await writeOperation(ds, m, {
      result: result ?? 'ok',
      detail,
      startedAt,
      finishedAt: new Date(),
    });
    return value;
  } catch (err) {
    await writeOperation(ds, m, {
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
export function activityKey(suffix: string, fallback?: string): string {
  try {
    const { workflowExecution, activityId } = Context.current().info;
    if (!workflowExecution) throw new Error('standalone activity');
    return `${workflowExecution.workflowId}/${workflowExecution.runId}/${activityId}/${suffix}`;
  } catch {
    if (!fallback) throw new Error('activityKey outside an activity needs a fallback key');
    return fallback;
  }
}
