import { changeRows, selectRows, type Queryable } from './queryable';

/** What a checkpoint log entry is (see docs/protocol.md#checkpoint-logs): a step event or an output line of one stream. */
export type LogKind = 'step' | 'stdout' | 'stderr';

/** An entry to append; `seq` and `at` are given by the store. */
export type NewLogEntry =
  | {
      kind: 'step';
      step: string;
      result: string;
      durationMs?: number | null;
      text?: string | null;
    }
  | { kind: 'stdout' | 'stderr'; text: string };

/** An entry as stored and as the API shows it (field names of docs/protocol.md#checkpoint-logs). */
export interface LogEntry {
  seq: number;
  at: string;
  kind: LogKind;
  step?: string;
  result?: string;
  duration_ms?: number;
  text?: string;
}

/** The most entries one read returns (a reader pages on with `after`). */
export const LOG_PAGE = 1000;

/** The channel that says "checkpoint N has new log entries" (payload: its id). */
export const LOG_CHANNEL = 'e2epool_checkpoint_logs';

/**
 * The `checkpoint_logs` table. Appends take the checkpoint row's lock, so
 * entries of one checkpoint are numbered without gaps in the order they were
 * appended, whatever process appends them. Output lines are capped per
 * checkpoint (one `truncated` step entry marks the cut); step events are
 * never dropped, so the log always shows how the checkpoint went.
 */
export class CheckpointLogStore {
  /**
   * `inTransaction` runs its function in a transaction (on a DataSource) or
   * right away (already inside one): the row lock must last until commit, or
   * a reader could see seq 9 committed before seq 8 and never look back.
   */
  constructor(
    private readonly q: Queryable,
    private readonly inTransaction: <T>(fn: (q: Queryable) => Promise<T>) => Promise<T>,
  ) {}

  /**
   * Appends one step event and wakes followers (at commit), in one
   * statement: bumping `log_seq` takes the checkpoint row's lock until
   * commit, as append's SELECT … FOR UPDATE does, and a single statement is
   * its own transaction. `along` is a statement to run with it, in the same
   * statement (its parameters come first): the operation-log row the event
   * mirrors. A step event never counts against the output cap.
   */
  async appendStep(
    checkpointId: number,
    e: Extract<NewLogEntry, { kind: 'step' }>,
    along?: { sql: string; params: unknown[] },
  ): Promise<void> {
    const params = [...(along?.params ?? [])];
    const p = (v: unknown) => `$${params.push(v)}`;
    const id = p(checkpointId);
    await this.q.query(
      `WITH ${along ? `along AS (${along.sql}), ` : ''}
            head AS (UPDATE checkpoints SET log_seq = log_seq + 1 WHERE id = ${id}::int RETURNING log_seq),
            added AS (
              INSERT INTO checkpoint_logs (checkpoint_id, seq, kind, step, result, duration_ms, text)
              SELECT ${id}::int, log_seq, 'step', ${p(e.step)}::varchar, ${p(e.result)}::varchar,
                     ${p(e.durationMs ?? null)}::int, ${p(e.text ?? null)}::text
                FROM head
              RETURNING 1)
       SELECT pg_notify(${p(LOG_CHANNEL)}, ${id}::text) FROM added`,
      params,
    );
  }

  /** Appends entries in order and wakes followers (at commit). */
  async append(checkpointId: number, entries: NewLogEntry[], maxLines: number): Promise<void> {
    if (entries.length === 0) return;
    await this.inTransaction((q) => this.appendIn(q, checkpointId, entries, maxLines));
  }

  private async appendIn(
    q: Queryable,
    checkpointId: number,
    entries: NewLogEntry[],
    maxLines: number,
  ): Promise<void> {
    const [head] = await selectRows<{ seq: number; lines: number }>(
      q,
      `SELECT log_seq AS seq, log_lines AS lines FROM checkpoints WHERE id = $1 FOR UPDATE`,
      [checkpointId],
    );
    if (!head) return; // the checkpoint is gone (retention): nothing to log to
    let { seq, lines } = head;
    const kept: Array<NewLogEntry & { seq: number }> = [];
    for (const e of entries) {
      if (e.kind !== 'step') {
        if (lines > maxLines) continue; // cut already marked
        if (lines === maxLines) {
          lines++;
          kept.push({
            kind: 'step',
            step: 'log',
            result: 'truncated',
            text: `output truncated: more than ${maxLines} lines (E2EPOOL_LOG_MAX_LINES)`,
            seq: ++seq,
          });
          continue;
        }
        lines++;
      }
      kept.push({ ...e, seq: ++seq });
    }
    if (kept.length > 0) {
      await q.query(
        `INSERT INTO checkpoint_logs (checkpoint_id, seq, kind, step, result, duration_ms, text)
         SELECT $1, * FROM unnest($2::int[], $3::varchar[], $4::varchar[], $5::varchar[], $6::int[], $7::text[])`,
        [
          checkpointId,
          kept.map((e) => e.seq),
          kept.map((e) => e.kind),
          kept.map((e) => (e.kind === 'step' ? e.step : null)),
          kept.map((e) => (e.kind === 'step' ? e.result : null)),
          kept.map((e) => (e.kind === 'step' ? (e.durationMs ?? null) : null)),
          kept.map((e) => e.text ?? null),
        ],
      );
    }
    await q.query(`UPDATE checkpoints SET log_seq = $2, log_lines = $3 WHERE id = $1`, [
      checkpointId,
      seq,
      lines,
    ]);
    if (kept.length > 0)
      await q.query(`SELECT pg_notify($1, $2)`, [LOG_CHANNEL, String(checkpointId)]);
  }

  /** Up to `limit` entries after `after`, in order. */
  async after(checkpointId: number, after: number, limit = LOG_PAGE): Promise<LogEntry[]> {
    const rows = await selectRows<{
      seq: number;
      at: Date;
      kind: LogKind;
      step: string | null;
      result: string | null;
      durationMs: number | null;
      text: string | null;
    }>(
      this.q,
      `SELECT seq, at, kind, step, result, duration_ms AS "durationMs", text
         FROM checkpoint_logs WHERE checkpoint_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
      [checkpointId, after, limit],
    );
    return rows.map((r) => ({
      seq: r.seq,
      at: new Date(r.at).toISOString(),
      kind: r.kind,
      ...(r.step !== null ? { step: r.step } : {}),
      ...(r.result !== null ? { result: r.result } : {}),
      ...(r.durationMs !== null ? { duration_ms: r.durationMs } : {}),
      ...(r.text !== null ? { text: r.text } : {}),
    }));
  }

  /** Deletes up to `batch` entries of checkpoints that ended more than `days` ago; returns how many. */
  async pruneEnded(days: number, batch: number): Promise<number> {
    const { count } = await changeRows(
      this.q,
      `DELETE FROM checkpoint_logs WHERE (checkpoint_id, seq) IN (
         SELECT l.checkpoint_id, l.seq FROM checkpoint_logs l JOIN checkpoints c ON c.id = l.checkpoint_id
          WHERE c.ended_at < now() - make_interval(days => $1)
          LIMIT $2)`,
      [days, batch],
    );
    return count;
  }
}
