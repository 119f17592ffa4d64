import {
  ACTIVE_STATES,
  isTerminalState,
  type ActiveState,
  type Backend,
  type CheckpointState,
  type FinalizeStatus,
} from '../common/states';
import type { CheckpointDtoSource } from '../common/checkpoint';
import { changeRows, selectRows, type Queryable } from './queryable';

/** A checkpoint to record, as its workflow knows it. */
export interface NewCheckpoint {
  name: string;
  runnerId: string;
  jobId: string;
  projectId: string | null;
  caller: string | null;
  backend: Backend;
  workflowId: string;
  snapshotName: string | null;
  /** ISO-8601. */
  createdAt: string;
}

/** Enough of a checkpoint to log about it. */
export interface CheckpointRef {
  id: number;
  name: string;
  runnerId: string;
  backend: Backend;
}

/** A compare-and-set of a checkpoint's state, with what changes along with it. */
export interface CheckpointTransition {
  checkpointId: number;
  from: CheckpointState[];
  to: CheckpointState;
  /** Unset or null: kept as it is (likewise `finalizeSource`, `finalizedAt`, `resetRounds`). */
  finalizeStatus?: FinalizeStatus | null;
  finalizeSource?: string | null;
  /** ISO-8601. */
  finalizedAt?: string | null;
  /** Set (or, with null, clear) the error detail shown to operators; unset: kept. */
  errorDetail?: string | null;
  resetRounds?: number;
}

/** Whether the state changed; if not, the row as it is now (null: there is none). */
export type TransitionOutcome =
  | { changed: true; checkpoint: CheckpointRef }
  | { changed: false; current: (CheckpointRef & { state: CheckpointState }) | null };

/** A checkpoint as the API shows it (common/checkpoint.ts checkpointDto), plus the workflow that holds it. */
export interface CheckpointRecord extends CheckpointDtoSource {
  workflowId: string;
}

/** A checkpoint as the fleet page lists it. */
export interface FleetCheckpoint {
  id: number;
  name: string;
  jobId: string;
  state: CheckpointState;
  createdAt: Date;
  endedAt: Date | null;
  /** Proof of reset: true, false (the check failed), null (no answer). */
  verified: boolean | null;
}

/** A runner's checkpoints that the fleet page shows. */
export interface RunnerCheckpoints {
  runnerId: string;
  /** Its active checkpoint, else the one that ended last; null when it never had one. */
  current: FleetCheckpoint | null;
  /** The last checkpoint that ended with the runner clean (reset, deleted, gc_reset). */
  lastClean: FleetCheckpoint | null;
}

/** A checkpoint's facts as the fleet page's checkpoint view shows them. */
export interface CheckpointFacts extends CheckpointRecord {
  id: number;
  backend: Backend;
  endedAt: Date | null;
  updatedAt: Date;
  errorDetail: string | null;
  resetAttempts: number;
}

/** An active checkpoint as the reconciler sees it. */
export interface ActiveCheckpoint extends CheckpointRef {
  jobId: string;
  projectId: string | null;
  state: ActiveState;
  workflowId: string;
  createdAt: Date;
  finalizeStatus: FinalizeStatus | null;
  finalizeSource: string | null;
  finalizedAt: Date | null;
}

/**
 * Postgres refused a second active checkpoint for the runner (the partial
 * unique index): another create for it won a race.
 */
export class ActiveCheckpointExists extends Error {
  override name = 'ActiveCheckpointExists';
  constructor(runnerId: string) {
    super(`runner '${runnerId}' already has an active checkpoint`);
  }
}

function isUniqueViolation(err: unknown, constraint: string): boolean {
  const e = err as {
    code?: string;
    constraint?: string;
    driverError?: { code?: string; constraint?: string };
  };
  const d = e.driverError ?? e;
  return d.code === '23505' && d.constraint === constraint;
}

/** A checkpoint as currentByRunner's rows carry it (one JSON object per lateral join). */
const FLEET_JSON = `json_build_object('id', id, 'name', name, 'jobId', job_id, 'state', state,
                                   'createdAt', created_at, 'endedAt', ended_at,
                                   'verified', verified)`;

/** The columns of a CheckpointFacts. */
const FACTS_COLUMNS = `id, name, runner_id AS "runnerId", job_id AS "jobId", backend, state,
  finalize_status AS "finalizeStatus", finalize_source AS "finalizeSource",
  created_at AS "createdAt", finalized_at AS "finalizedAt", ended_at AS "endedAt",
  updated_at AS "updatedAt", workflow_id AS "workflowId",
  error_detail AS "errorDetail", reset_attempts AS "resetAttempts",
  verified, verify_detail AS "verifyDetail"`;

/**
 * The `checkpoints` table. Every state change is a compare-and-set. Queries
 * name their columns in camelCase (`AS "runnerId"`), so rows come back as the
 * types above.
 */
export class CheckpointStore {
  constructor(private readonly q: Queryable) {}

  /**
   * Inserts a checkpoint in state `created`; recording the same name again
   * finds the row already there. An active row of the same runner under
   * another name is first marked `reset_failed` and returned as superseded.
   * Run it in a transaction with the log rows that go with it.
   *
   * @throws ActiveCheckpointExists when a concurrent create holds the runner.
   */
  async record(c: NewCheckpoint): Promise<{ id: number; superseded: CheckpointRef[] }> {
    const stale = await changeRows<CheckpointRef>(
      this.q,
      `UPDATE checkpoints
          SET state = 'reset_failed', ended_at = now(), updated_at = now(),
              error_detail = 'superseded: its workflow run ended without finishing it (terminated?)'
        WHERE runner_id = $1 AND state = ANY($2) AND name <> $3
    RETURNING id, name, runner_id AS "runnerId", backend`,
      [c.runnerId, ACTIVE_STATES, c.name],
    );
    const inserted = await selectRows<{ id: number }>(
      this.q,
      `INSERT INTO checkpoints
         (name, runner_id, job_id, project_id, caller, backend, state, snapshot_name, workflow_id, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, 'created', $7, $8, $9, now())
       ON CONFLICT (name) DO NOTHING
       RETURNING id`,
      [
        c.name,
        c.runnerId,
        c.jobId,
        c.projectId,
        c.caller,
        c.backend,
        c.snapshotName,
        c.workflowId,
        c.createdAt,
      ],
    ).catch((err: unknown) => {
      if (isUniqueViolation(err, 'ix_one_active_checkpoint_per_runner'))
        throw new ActiveCheckpointExists(c.runnerId);
      throw err;
    });
    const id =
      inserted[0]?.id ??
      (
        await selectRows<{ id: number }>(this.q, `SELECT id FROM checkpoints WHERE name = $1`, [
          c.name,
        ])
      )[0]!.id;
    return { id, superseded: stale.rows };
  }

  /**
   * Moves a checkpoint from one of `from` to `to`. `ended_at` is set exactly
   * when `to` is terminal (a CHECK constraint holds the table to that).
   */
  async transition(t: CheckpointTransition): Promise<TransitionOutcome> {
    const { rows } = await changeRows<CheckpointRef>(
      this.q,
      `UPDATE checkpoints SET
          state = $3,
          finalize_status = COALESCE($4, finalize_status),
          finalize_source = COALESCE($5, finalize_source),
          finalized_at = COALESCE($6::timestamptz, finalized_at),
          error_detail = CASE WHEN $7 THEN $8 ELSE error_detail END,
          reset_attempts = COALESCE($9, reset_attempts),
          ended_at = CASE WHEN $10 THEN now() ELSE NULL END,
          held_until = NULL,
          updated_at = now()
        WHERE id = $1 AND state = ANY($2)
      RETURNING id, name, runner_id AS "runnerId", backend`,
      [
        t.checkpointId,
        t.from,
        t.to,
        t.finalizeStatus ?? null,
        t.finalizeSource ?? null,
        t.finalizedAt ?? null,
        t.errorDetail !== undefined,
        t.errorDetail ?? null,
        t.resetRounds ?? null,
        isTerminalState(t.to),
      ],
    );
    if (rows[0]) return { changed: true, checkpoint: rows[0] };
    const [current] = await selectRows<CheckpointRef & { state: CheckpointState }>(
      this.q,
      `SELECT id, name, runner_id AS "runnerId", backend, state FROM checkpoints WHERE id = $1`,
      [t.checkpointId],
    );
    return { changed: false, current: current ?? null };
  }

  /** The checkpoint of that name, or null. */
  async findByName(name: string): Promise<CheckpointRecord | null> {
    const [c] = await selectRows<CheckpointRecord>(
      this.q,
      `SELECT name, runner_id AS "runnerId", job_id AS "jobId", state,
              finalize_status AS "finalizeStatus", finalize_source AS "finalizeSource",
              created_at AS "createdAt", finalized_at AS "finalizedAt", workflow_id AS "workflowId",
              verified, verify_detail AS "verifyDetail"
         FROM checkpoints WHERE name = $1`,
      [name],
    );
    return c ?? null;
  }

  /**
   * Checkpoints for an operator's listing, newest first: of these states
   * and this runner when given. Reads the primary key backwards, so a filter
   * that matches rarely scans further; `limit` bounds the answer.
   */
  async list(f: {
    states?: readonly CheckpointState[];
    runnerId?: string;
    limit: number;
  }): Promise<CheckpointFacts[]> {
    return selectRows<CheckpointFacts>(
      this.q,
      `SELECT ${FACTS_COLUMNS} FROM checkpoints
        WHERE ($1::varchar[] IS NULL OR state = ANY($1)) AND ($2::varchar IS NULL OR runner_id = $2)
        ORDER BY id DESC LIMIT $3`,
      [f.states ?? null, f.runnerId ?? null, f.limit],
    );
  }

  /** Active checkpoints of a CI job (a webhook names the job, not the checkpoint). */
  async activeByJob(jobId: string): Promise<Array<{ name: string; runnerId: string }>> {
    return selectRows(
      this.q,
      `SELECT name, runner_id AS "runnerId" FROM checkpoints WHERE job_id = $1 AND state = ANY($2)`,
      [jobId, ACTIVE_STATES],
    );
  }

  /** Everything the fleet page shows about one checkpoint, or null. */
  async factsByName(name: string): Promise<CheckpointFacts | null> {
    const [c] = await selectRows<CheckpointFacts>(
      this.q,
      `SELECT ${FACTS_COLUMNS} FROM checkpoints WHERE name = $1`,
      [name],
    );
    return c ?? null;
  }

  /**
   * Per runner: its current checkpoint and its last clean one. Each lookup is
   * an index probe (the active-checkpoint index, the runner/ended_at index),
   * so a page of 1,000 runners reads about 3,000 index entries, whatever the
   * table's size. The state lists are literals on purpose: the planner uses a
   * partial index only for a predicate it can see implies the index's own.
   */
  async currentByRunner(runnerIds: readonly string[]): Promise<RunnerCheckpoints[]> {
    if (runnerIds.length === 0) return [];
    const rows = await selectRows<{
      runnerId: string;
      current: FleetCheckpoint | null;
      lastClean: FleetCheckpoint | null;
    }>(
      this.q,
      `SELECT r.runner_id AS "runnerId",
              COALESCE(a.c, e.c) AS current,
              k.c AS "lastClean"
         FROM unnest($1::varchar[]) AS r(runner_id)
         LEFT JOIN LATERAL (
           SELECT ${FLEET_JSON} AS c FROM checkpoints
            WHERE runner_id = r.runner_id AND state IN ('created', 'finalize_queued', 'needs_attention')
         ) a ON true
         LEFT JOIN LATERAL (
           SELECT ${FLEET_JSON} AS c FROM checkpoints
            WHERE runner_id = r.runner_id AND ended_at IS NOT NULL
            ORDER BY ended_at DESC LIMIT 1
         ) e ON true
         LEFT JOIN LATERAL (
           SELECT ${FLEET_JSON} AS c FROM checkpoints
            WHERE runner_id = r.runner_id AND ended_at IS NOT NULL
              AND state IN ('reset', 'deleted', 'gc_reset')
            ORDER BY ended_at DESC LIMIT 1
         ) k ON true`,
      [runnerIds],
    );
    // json_build_object carries timestamps as text.
    const revive = (c: FleetCheckpoint | null): FleetCheckpoint | null =>
      c && {
        ...c,
        createdAt: new Date(c.createdAt),
        endedAt: c.endedAt === null ? null : new Date(c.endedAt),
      };
    return rows.map((r) => ({
      runnerId: r.runnerId,
      current: revive(r.current),
      lastClean: revive(r.lastClean),
    }));
  }

  /** The checkpoint's state, or null when there is no such checkpoint. */
  async stateOf(id: number): Promise<CheckpointState | null> {
    const [c] = await selectRows<{ state: CheckpointState }>(
      this.q,
      `SELECT state FROM checkpoints WHERE id = $1`,
      [id],
    );
    return c?.state ?? null;
  }

  /** A checkpoint's identity, state and end, by name (the reconciler's view of a snapshot's owner). */
  async refByName(
    name: string,
  ): Promise<(CheckpointRef & { state: CheckpointState; endedAt: Date | null }) | null> {
    const [c] = await selectRows<CheckpointRef & { state: CheckpointState; endedAt: Date | null }>(
      this.q,
      `SELECT id, name, runner_id AS "runnerId", backend, state, ended_at AS "endedAt"
         FROM checkpoints WHERE name = $1`,
      [name],
    );
    return c ?? null;
  }

  /**
   * Active checkpoints older than `minAgeSeconds` (a younger one may still be
   * in its create), for the reconciler to check against Temporal.
   */
  async listActive(minAgeSeconds: number): Promise<ActiveCheckpoint[]> {
    return selectRows<ActiveCheckpoint>(
      this.q,
      `SELECT id, name, runner_id AS "runnerId", job_id AS "jobId", project_id AS "projectId",
              backend, state, workflow_id AS "workflowId", created_at AS "createdAt",
              finalize_status AS "finalizeStatus", finalize_source AS "finalizeSource",
              finalized_at AS "finalizedAt"
         FROM checkpoints
        WHERE state = ANY($1) AND created_at < now() - make_interval(secs => $2)
        ORDER BY id`,
      [ACTIVE_STATES, minAgeSeconds],
    );
  }

  /** Whether the runner holds an active checkpoint (at most one can be). */
  async hasActive(runnerId: string): Promise<boolean> {
    const rows = await selectRows<{ one: number }>(
      this.q,
      `SELECT 1 AS one FROM checkpoints WHERE runner_id = $1 AND state = ANY($2) LIMIT 1`,
      [runnerId, ACTIVE_STATES],
    );
    return rows.length > 0;
  }

  /** How many checkpoints are in each active state (0 for a state none is in). */
  async countActiveByState(): Promise<Record<ActiveState, number>> {
    const counts = Object.fromEntries(ACTIVE_STATES.map((s) => [s, 0])) as Record<
      ActiveState,
      number
    >;
    const rows = await selectRows<{ state: ActiveState; n: number }>(
      this.q,
      `SELECT state, count(*)::int AS n FROM checkpoints WHERE state = ANY($1) GROUP BY state`,
      [ACTIVE_STATES],
    );
    for (const r of rows) counts[r.state] = r.n;
    return counts;
  }

  /** Seconds since the longest-waiting `needs_attention` checkpoint got there; 0 when none. */
  async oldestNeedsAttentionSeconds(): Promise<number> {
    const [row] = await selectRows<{ age: number }>(
      this.q,
      `SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(updated_at)), 0)::float AS age FROM checkpoints WHERE state = 'needs_attention'`,
    );
    return row?.age ?? 0;
  }
}
