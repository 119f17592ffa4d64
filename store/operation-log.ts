import type { Backend } from '../common/states';
import type { CheckpointLogStore } from './checkpoint-log';
import { changeRows, selectRows, type Queryable } from './queryable';

/** Outcome of one step in `operation_logs` (the values its CHECK constraint allows). */
export type OperationResult = 'running' | 'ok' | 'error' | 'skipped';

/** Which step of which checkpoint a log row is about. */
export interface OperationMeta {
  checkpointId: number;
  runnerId: string;
  backend: Backend | null;
  operation: string;
  /** Idempotency key: a retried step rewrites its row instead of adding one. */
  key: string;
}

/** What happened in the step (so far). */
export interface OperationOutcome {
  result: OperationResult;
  detail?: string | null;
  error?: string | null;
  startedAt: Date;
  finishedAt?: Date | null;
  /** Attempt of the activity that writes the row. */
  attempt: number;
}

/** The `operation_logs` table: one row per step, keyed for retries. */
export class OperationLogStore {
  /** `logs`: each write is also a step event of the checkpoint's log (see docs/protocol.md#checkpoint-logs). */
  constructor(
    private readonly q: Queryable,
    private readonly logs?: CheckpointLogStore,
  ) {}

  /**
   * Upserts the step's row by its idempotency key; the duration is derived
   * from the two times. A write without a detail keeps the row's detail, so a
   * note an attempt left (e.g. that it sent a request) survives its failure.
   */
  async write(m: OperationMeta, o: OperationOutcome): Promise<void> {
    const finishedAt = o.finishedAt ?? null;
    const durationMs = finishedAt
      ? Math.max(0, finishedAt.getTime() - o.startedAt.getTime())
      : null;
    const upsert = {
      sql: `INSERT INTO operation_logs
         (checkpoint_id, idempotency_key, operation, runner_id, backend, result, detail, error, attempt, started_at, finished_at, duration_ms)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
       ON CONFLICT (idempotency_key) DO UPDATE SET
         result = EXCLUDED.result, detail = COALESCE(EXCLUDED.detail, operation_logs.detail), error = EXCLUDED.error, attempt = EXCLUDED.attempt,
         started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms`,
      params: [
        m.checkpointId,
        m.key,
        m.operation,
        m.runnerId,
        m.backend,
        o.result,
        o.detail ?? null,
        o.error ?? null,
        o.attempt,
        o.startedAt,
        finishedAt,
        durationMs,
      ],
    };
    if (!this.logs) {
      await this.q.query(upsert.sql, upsert.params);
      return;
    }
    // One round trip: the row and its step event, together or not at all.
    await this.logs.appendStep(
      m.checkpointId,
      {
        kind: 'step',
        step: m.operation,
        result: o.result,
        durationMs,
        text: o.error ?? o.detail ?? null,
      },
      upsert,
    );
  }

  /**
   * How long each checkpoint's `operations` took together: from the first
   * one's start to the last one's end (a step still running counts up to
   * its start), in ms, by checkpoint id.
   */
  async spans(
    checkpointIds: number[],
    operations: readonly string[],
  ): Promise<Map<number, number>> {
    if (checkpointIds.length === 0) return new Map();
    const rows = await selectRows<{ checkpointId: number; ms: number }>(
      this.q,
      `SELECT checkpoint_id AS "checkpointId",
              (EXTRACT(EPOCH FROM max(COALESCE(finished_at, started_at)) - min(started_at)) * 1000)::float8 AS ms
         FROM operation_logs WHERE checkpoint_id = ANY($1) AND operation = ANY($2)
        GROUP BY checkpoint_id`,
      [checkpointIds, operations],
    );
    return new Map(rows.map((r) => [r.checkpointId, Math.max(0, Math.round(r.ms))]));
  }

  /** What the reconciler found, by kind (`reconcile:<kind>` rows) and action (ok: repaired, skipped: reported). */
  async reconcileFindings(): Promise<Array<{ kind: string; action: string; n: number }>> {
    return selectRows(
      this.q,
      `SELECT substr(operation, 11) AS kind,
              CASE result WHEN 'ok' THEN 'repaired' WHEN 'skipped' THEN 'reported' ELSE 'failed' END AS action,
              count(*)::int AS n
         FROM operation_logs WHERE starts_with(operation, 'reconcile:') GROUP BY 1, 2`,
    );
  }

  /**
   * Deletes up to `batch` log rows older than `days` whose checkpoint has
   * ended (an active checkpoint keeps its whole log); returns how many went.
   */
  async pruneEnded(days: number, batch: number): Promise<number> {
    const { count } = await changeRows(
      this.q,
      `DELETE FROM operation_logs WHERE id IN (
         SELECT o.id FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
          WHERE c.ended_at IS NOT NULL AND o.started_at < now() - make_interval(days => $1)
          LIMIT $2)`,
      [days, batch],
    );
    return count;
  }
}
