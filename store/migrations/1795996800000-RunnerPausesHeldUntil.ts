import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Facts as data: whether (and which GitHub labels) e2epool has a runner
 * paused moves from the words of `operation_logs.detail` to `runner_pauses`
 * (one row per checkpoint, see RunnerPauseStore), and the end of a hold for
 * debugging to `checkpoints.held_until`. The operation log keeps its rows for
 * operators to read; from here on no code reads state back from them.
 *
 * up() moves the existing facts. This is the one place that parses the old
 * log text, because it is the migration of data written by earlier versions:
 * the phrases below are frozen as those versions wrote them, and must not
 * follow later changes of the log wording. The partial index over pause rows
 * of the log (OperationLogPauseEvents) served only those reads, so it goes.
 */
export class RunnerPausesHeldUntil1795996800000 implements MigrationInterface {
  name = 'RunnerPausesHeldUntil1795996800000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE runner_pauses (
        checkpoint_id   integer      NOT NULL,
        runner_id       varchar(255) NOT NULL,
        ci              varchar(16)  NOT NULL,
        ci_runner_id    bigint,
        github_scope    jsonb,
        labels          jsonb        NOT NULL DEFAULT '[]',
        state           varchar(32)  NOT NULL,
        owned           boolean      GENERATED ALWAYS AS (state IN ('sent', 'paused', 'kept_for_drain')) STORED,
        paused_at       timestamptz  NOT NULL,
        unpaused_at     timestamptz,
        changed_at      timestamptz  NOT NULL DEFAULT now(),
        CONSTRAINT pk_runner_pauses PRIMARY KEY (checkpoint_id),
        CONSTRAINT fk_runner_pauses_checkpoint FOREIGN KEY (checkpoint_id)
          REFERENCES checkpoints (id) ON DELETE CASCADE,
        CONSTRAINT ck_runner_pauses_ci CHECK (ci IN ('gitlab', 'github')),
        CONSTRAINT ck_runner_pauses_state CHECK (state IN (
          'sent', 'paused', 'kept_for_drain', 'unpaused', 'left_paused', 'unpaused_elsewhere')),
        CONSTRAINT ck_runner_pauses_labels CHECK (jsonb_typeof(labels) = 'array'),
        CONSTRAINT ck_runner_pauses_unpaused_at CHECK (
          (unpaused_at IS NULL) = (state IN ('sent', 'paused', 'kept_for_drain')))
      )`);
    // Each runner's newest pause (RunnerPauseStore.latestByRunner): the reconciler, every pass.
    await q.query(
      `CREATE INDEX ix_runner_pauses_runner ON runner_pauses (runner_id, changed_at DESC)`,
    );
    await q.query(`ALTER TABLE checkpoints ADD COLUMN held_until timestamptz`);
    await backfillPauses(q);
    await backfillHolds(q);
    await q.query(`DROP INDEX ix_operation_logs_pause_events`);
  }

  async down(q: QueryRunner): Promise<void> {
    // The log rows were never removed: the code before this migration reads them again.
    await q.query(
      `CREATE INDEX ix_operation_logs_pause_events ON operation_logs (runner_id, started_at DESC)
        WHERE operation IN ('pause', 'unpause', 'left_paused', 'unpaused_elsewhere', 'reconcile:paused_runner')`,
    );
    await q.query(`ALTER TABLE checkpoints DROP COLUMN held_until`);
    await q.query(`DROP TABLE runner_pauses`);
  }
}

/** One pause-related log row of an earlier version. */
interface OldRow {
  checkpointId: number;
  runnerId: string;
  operation: string;
  result: string;
  detail: string | null;
  at: Date;
}

/** A runner_pauses row being rebuilt from a checkpoint's log rows. */
interface Fact {
  checkpoint_id: number;
  runner_id: string;
  ci: 'gitlab' | 'github';
  ci_runner_id: number | null;
  labels: string[];
  state: string;
  paused_at: Date;
  unpaused_at: Date | null;
  changed_at: Date;
}

// The old log phrases, as earlier versions wrote them (frozen: see the class comment).
const OLD_PAUSE_SENT = 'pause request sent';
const OLD_LABELS = /labels (\[.*\]) from GitHub runner /;
const OLD_CI_RUNNER = /(GitLab|GitHub) runner (\d+)/;
const OLD_KEPT_FOR_DRAIN = / is draining: .* stays paused until it is undrained$/;
const OLD_HOLD_STARTED = /^held for debugging until (\S+); /;

const OPEN = ['sent', 'paused', 'kept_for_drain'];

function oldLabels(detail: string): string[] {
  const m = OLD_LABELS.exec(detail);
  if (!m) return [];
  try {
    const parsed: unknown = JSON.parse(m[1]!);
    return Array.isArray(parsed) ? parsed.filter((l): l is string => typeof l === 'string') : [];
  } catch {
    return [];
  }
}

/** Applies one old log row to the checkpoint's fact, as the code before this migration read it. */
function apply(fact: Fact | undefined, r: OldRow): Fact | undefined {
  const detail = r.detail ?? '';
  const open = fact !== undefined && OPEN.includes(fact.state);
  if (r.operation === 'pause') {
    if (r.result !== 'ok' && !detail.startsWith(OLD_PAUSE_SENT)) return fact;
    const ci = OLD_CI_RUNNER.exec(detail);
    const github = ci?.[1] === 'GitHub' || OLD_LABELS.test(detail);
    const labels = oldLabels(detail);
    return {
      checkpoint_id: r.checkpointId,
      runner_id: r.runnerId,
      ci: github ? 'github' : 'gitlab',
      ci_runner_id: ci ? Number(ci[2]) : (fact?.ci_runner_id ?? null),
      labels: open ? [...fact.labels, ...labels.filter((l) => !fact.labels.includes(l))] : labels,
      state: r.result === 'ok' || (open && fact.state === 'paused') ? 'paused' : 'sent',
      paused_at: open ? fact.paused_at : r.at,
      unpaused_at: null,
      changed_at: r.at,
    };
  }
  if (!fact || !open) return fact;
  let state: string | null = null;
  if (r.operation === 'unpause' || r.operation === 'reconcile:paused_runner') {
    if (r.result === 'ok') state = 'unpaused';
    else if (r.operation === 'unpause' && OLD_KEPT_FOR_DRAIN.test(detail)) state = 'kept_for_drain';
  } else if (r.operation === 'left_paused' || r.operation === 'unpaused_elsewhere') {
    state = r.operation;
  }
  if (state === null) return fact;
  const closed = !OPEN.includes(state);
  return { ...fact, state, unpaused_at: closed ? r.at : null, changed_at: r.at };
}

/** Checkpoints read per batch: their pause rows are folded in memory, then inserted at once. */
const BATCH = 500;

async function backfillPauses(q: QueryRunner): Promise<void> {
  for (let after = 0; ;) {
    const rows = (await q.query(
      `SELECT checkpoint_id AS "checkpointId", runner_id AS "runnerId", operation, result, detail, started_at AS "at"
         FROM operation_logs
        WHERE operation IN ('pause', 'unpause', 'left_paused', 'unpaused_elsewhere', 'reconcile:paused_runner')
          AND checkpoint_id IN (
            SELECT DISTINCT checkpoint_id FROM operation_logs
             WHERE operation = 'pause' AND checkpoint_id > $1 ORDER BY 1 LIMIT $2)
        ORDER BY checkpoint_id, started_at, id`,
      [after, BATCH],
    )) as OldRow[];
    if (rows.length === 0) return;
    const facts = new Map<number, Fact>();
    for (const r of rows) {
      const next = apply(facts.get(r.checkpointId), r);
      if (next) facts.set(r.checkpointId, next);
      after = Math.max(after, r.checkpointId);
    }
    if (facts.size === 0) continue;
    await q.query(
      `INSERT INTO runner_pauses
         (checkpoint_id, runner_id, ci, ci_runner_id, labels, state, paused_at, unpaused_at, changed_at)
       SELECT checkpoint_id, runner_id, ci, ci_runner_id, labels, state, paused_at, unpaused_at, changed_at
         FROM jsonb_to_recordset($1::jsonb) AS x(
           checkpoint_id integer, runner_id varchar, ci varchar, ci_runner_id bigint, labels jsonb,
           state varchar, paused_at timestamptz, unpaused_at timestamptz, changed_at timestamptz)`,
      [JSON.stringify([...facts.values()])],
    );
  }
}

/** Holds under way: a waiting checkpoint whose newest `hold` note is a start note. */
async function backfillHolds(q: QueryRunner): Promise<void> {
  const notes = (await q.query(
    `SELECT DISTINCT ON (o.checkpoint_id) o.checkpoint_id AS "id", o.detail
       FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
      WHERE c.state = 'finalize_queued' AND o.operation = 'hold'
      ORDER BY o.checkpoint_id, o.started_at DESC, o.id DESC`,
  )) as Array<{ id: number; detail: string | null }>;
  for (const n of notes) {
    const m = OLD_HOLD_STARTED.exec(n.detail ?? '');
    const until = m ? Date.parse(m[1]!) : NaN;
    if (Number.isNaN(until)) continue;
    await q.query(`UPDATE checkpoints SET held_until = $2 WHERE id = $1`, [n.id, new Date(until)]);
  }
}
