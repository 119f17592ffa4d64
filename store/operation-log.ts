import { PAUSE_SENT } from '../common/checkpoint';
import type { Backend } from '../common/states';
import type { CheckpointLogStore } from './checkpoint-log';
import { changeRows, selectRows, type Queryable } from './queryable';

/** Outcome of one step in `operation_logs` (the values its CHECK constraint allows). */
export type OperationResult = 'running' | 'ok' | 'error' | 'skipped';

export { PAUSE_SENT };

/**
 * Log rows that say who has a GitLab runner paused, newest wins: e2epool's
 * pause (or one it sent), its unpause, an operator's release that left it
 * paused on purpose, someone else unpausing it, the reconciler's unpause.
 * Listed once: the partial index of migration OperationLogPauseEvents has the
 * same list, so the reconciler's query stays an index scan.
 */
export const PAUSE_EVENT_OPERATIONS = [
  'pause',
  'unpause',
  'left_paused',
  'unpaused_elsewhere',
  'reconcile:paused_runner',
] as const;

/** The newest pause event of a runner, with the checkpoint it belongs to. */
export interface PauseEvent {
  runnerId: string;
  operation: (typeof PAUSE_EVENT_OPERATIONS)[number];
  checkpointId: number;
  checkpointName: string;
  at: Date;
  /** The row's detail (a GitHub pause names the labels it removed). */
  detail: string | null;
}

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
    await this.q.query(
      `INSERT INTO operation_logs
         (checkpoint_id, idempotency_key, operation, runner_id, backend, result, detail, error, attempt, started_at, finished_at, duration_ms)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
       ON CONFLICT (idempotency_key) DO UPDATE SET
         result = EXCLUDED.result, detail = COALESCE(EXCLUDED.detail, operation_logs.detail), error = EXCLUDED.error, attempt = EXCLUDED.attempt,
         started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms`,
      [
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
        finishedAt ? Math.max(0, finishedAt.getTime() - o.startedAt.getTime()) : null,
      ],
    );
    // Step events never count against the output cap (maxLines unused for them).
    await this.logs?.append(
      m.checkpointId,
      [
        {
          kind: 'step',
          step: m.operation,
          result: o.result,
          durationMs: finishedAt ? Math.max(0, finishedAt.getTime() - o.startedAt.getTime()) : null,
          text: o.error ?? o.detail ?? null,
        },
      ],
      0,
    );
  }

  /** The detail of the step's row, or undefined when no attempt got as far as writing it. */
  async detailOf(key: string): Promise<string | null | undefined> {
    const rows = await selectRows<{ detail: string | null }>(
      this.q,
      `SELECT detail FROM operation_logs WHERE idempotency_key = $1`,
      [key],
    );
    return rows[0]?.detail;
  }

  /** Whether an earlier run of this checkpoint paused its GitLab runner (an adopted checkpoint's pause is ours). */
  async pausedByCheckpoint(checkpointId: number): Promise<boolean> {
    const rows = await selectRows(
      this.q,
      `SELECT 1 FROM operation_logs
        WHERE checkpoint_id = $1 AND operation = 'pause' AND result = 'ok'
          AND NOT EXISTS (SELECT 1 FROM operation_logs u
                           WHERE u.checkpoint_id = $1 AND u.operation = 'unpause' AND u.result = 'ok')`,
      [checkpointId],
    );
    return rows.length > 0;
  }

  /**
   * The details of this checkpoint's pauses still open: its `pause` rows
   * (done, or a request sent; a GitHub one names the labels it removed)
   * since its last successful unpause.
   */
  async openPauseDetails(checkpointId: number): Promise<string[]> {
    const rows = await selectRows<{ detail: string }>(
      this.q,
      `SELECT p.detail FROM operation_logs p
        WHERE p.checkpoint_id = $1 AND p.operation = 'pause' AND p.detail IS NOT NULL
          AND (p.result = 'ok' OR starts_with(p.detail, $2))
          AND p.started_at > COALESCE(
                (SELECT max(u.started_at) FROM operation_logs u
                  WHERE u.checkpoint_id = $1 AND u.operation = 'unpause' AND u.result = 'ok'),
                '-infinity')
        ORDER BY p.started_at, p.id`,
      [checkpointId, PAUSE_SENT],
    );
    return rows.map((r) => r.detail);
  }

  /**
   * Since when this checkpoint has had its runner paused: its first `pause`
   * row (done, or a request sent) after its last successful unpause. Null
   * when no pause of it is still open. A run that adopted a paused runner
   * logs a pause of its own: the earlier one still counts.
   */
  async pausedSince(checkpointId: number): Promise<Date | null> {
    const [row] = await selectRows<{ at: Date | null }>(
      this.q,
      `SELECT min(p.started_at) AS "at"
         FROM operation_logs p
        WHERE p.checkpoint_id = $1 AND p.operation = 'pause' AND (p.result = 'ok' OR starts_with(p.detail, $2))
          AND p.started_at > COALESCE(
                (SELECT max(u.started_at) FROM operation_logs u
                  WHERE u.checkpoint_id = $1 AND u.operation = 'unpause' AND u.result = 'ok'),
                '-infinity')`,
      [checkpointId, PAUSE_SENT],
    );
    return row?.at ?? null;
  }

  /**
   * Each runner's newest pause event (see PAUSE_EVENT_OPERATIONS): when it is
   * a pause, e2epool paused the runner and nothing has unpaused it since.
   * Pauses that found the runner paused by someone else (`skipped`) and
   * failed unpauses are not events.
   */
  async latestPauseEvents(runnerIds: string[]): Promise<PauseEvent[]> {
    if (runnerIds.length === 0) return [];
    return selectRows<PauseEvent>(
      this.q,
      `SELECT DISTINCT ON (o.runner_id)
              o.runner_id AS "runnerId", o.operation, o.checkpoint_id AS "checkpointId",
              c.name AS "checkpointName", o.started_at AS "at", o.detail
         FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
        WHERE o.runner_id = ANY($1)
          AND o.operation IN ('pause', 'unpause', 'left_paused', 'unpaused_elsewhere', 'reconcile:paused_runner')
          AND (   (o.operation = 'pause' AND (o.result = 'ok' OR starts_with(o.detail, $2)))
               OR (o.operation IN ('unpause', 'reconcile:paused_runner') AND o.result = 'ok')
               OR o.operation IN ('left_paused', 'unpaused_elsewhere'))
        ORDER BY o.runner_id, o.started_at DESC, o.id DESC`,
      [runnerIds, PAUSE_SENT],
    );
  }

  /**
   * The detail of each checkpoint's newest row of `operation` (e.g. `hold`:
   * whether its hold started or was released), by checkpoint id.
   */
  async latestDetails(checkpointIds: number[], operation: string): Promise<Map<number, string>> {
    if (checkpointIds.length === 0) return new Map();
    const rows = await selectRows<{ checkpointId: number; detail: string | null }>(
      this.q,
      `SELECT DISTINCT ON (checkpoint_id) checkpoint_id AS "checkpointId", detail
         FROM operation_logs WHERE checkpoint_id = ANY($1) AND operation = $2
        ORDER BY checkpoint_id, started_at DESC, id DESC`,
      [checkpointIds, operation],
    );
    return new Map(rows.flatMap((r) => (r.detail === null ? [] : [[r.checkpointId, r.detail]])));
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
         FROM operation_logs WHERE operation LIKE 'reconcile:%' GROUP BY 1, 2`,
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
