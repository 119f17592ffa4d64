import type { Quarantine, QuarantineSource, RunnerState } from '../config/runner-state';
import { noState } from '../config/runner-state';
import { changeRows, selectRows, type Queryable } from './queryable';
import { stateFromRow, upsertState, type RunnerStateRow } from './runner-state';

/** A quarantine or unquarantine: the runner's state as it is now, and whether this call changed it. */
export interface QuarantineChange {
  state: RunnerState;
  changed: boolean;
}

/** Serializes the cap check of failure-streak quarantines (pg_advisory_xact_lock). */
const STREAK_CAP_LOCK = 0x65327175; // "e2qu"

/**
 * The states a checkpoint ends in once its reset or cleanup ended, whichever
 * way: a failure streak is read over these (a failed create never reset anything).
 */
const ENDED_AFTER_RESET = ['reset', 'deleted', 'gc_reset', 'reset_failed'];

/**
 * A runner_state row counts as an active runner's unless it is a deactivated
 * registry runner's (an inventory-file runner has no `runners` row).
 */
const ACTIVE = `NOT EXISTS (SELECT 1 FROM runners r WHERE r.runner_id = s.runner_id AND NOT r.is_active)`;

/**
 * Quarantine (see docs/protocol.md#runner-registry): the `quarantine*`
 * columns of `runner_state`, for every runner, inventory file or registry,
 * keyed by runner id. Every write is idempotent: quarantining a quarantined
 * runner keeps its first reason, source and time, so a retried activity or a
 * second failure changes nothing. Each change NOTIFYs through the
 * runner_state trigger, so API instances and workers re-read the inventory.
 * The store cannot tell whether an id is a runner: callers check.
 */
export class QuarantineStore {
  constructor(private readonly q: Queryable) {}

  /** Quarantines the runner (a quarantined one keeps its first reason, source and time). */
  async quarantine(
    runnerId: string,
    q: { reason: string; source: QuarantineSource },
  ): Promise<QuarantineChange> {
    const row = await upsertState(
      this.q,
      {
        quarantined: 'true',
        quarantine_reason: '$2',
        quarantine_source: '$3',
        quarantined_at: 'now()',
      },
      's.quarantined',
      [runnerId, q.reason, q.source],
    );
    return this.result(runnerId, row);
  }

  /** Ends the runner's quarantine. */
  async unquarantine(runnerId: string): Promise<QuarantineChange> {
    const { rows } = await changeRows<RunnerStateRow>(
      this.q,
      `UPDATE runner_state
          SET quarantined = false, quarantine_reason = NULL, quarantine_source = NULL,
              quarantined_at = NULL, updated_at = now()
        WHERE runner_id = $1 AND quarantined
        RETURNING *`,
      [runnerId],
    );
    return this.result(runnerId, rows[0] ?? null);
  }

  private async result(
    runnerId: string,
    changed: RunnerStateRow | null,
  ): Promise<QuarantineChange> {
    if (changed) return { state: stateFromRow(changed), changed: true };
    const [row] = await selectRows<RunnerStateRow>(
      this.q,
      `SELECT * FROM runner_state WHERE runner_id = $1`,
      [runnerId],
    );
    return { state: row ? stateFromRow(row) : noState(runnerId), changed: false };
  }

  /** Whether the runner is quarantined (read now, not from the inventory's copy). */
  async isQuarantined(runnerId: string): Promise<boolean> {
    const rows = await selectRows<{ quarantined: boolean }>(
      this.q,
      `SELECT quarantined FROM runner_state WHERE runner_id = $1`,
      [runnerId],
    );
    return rows[0]?.quarantined === true;
  }

  /** The quarantines of those of `runnerIds` that are quarantined. */
  async ofRunners(runnerIds: readonly string[]): Promise<Map<string, Quarantine>> {
    if (runnerIds.length === 0) return new Map();
    const rows = await selectRows<{ runnerId: string } & Quarantine>(
      this.q,
      `SELECT runner_id AS "runnerId", quarantine_reason AS reason, quarantine_source AS source,
              quarantined_at AS at
         FROM runner_state WHERE quarantined AND runner_id = ANY($1)`,
      [runnerIds],
    );
    return new Map(rows.map(({ runnerId, ...q }) => [runnerId, q]));
  }

  /** The ids of the quarantined runners. */
  async quarantinedIds(): Promise<string[]> {
    const rows = await selectRows<{ runner_id: string }>(
      this.q,
      `SELECT runner_id FROM runner_state WHERE quarantined`,
    );
    return rows.map((r) => r.runner_id);
  }

  /** Active runners quarantined for a failure streak: what E2EPOOL_QUARANTINE_MAX_PERCENT caps. */
  async countStreakQuarantined(): Promise<number> {
    const [row] = await selectRows<{ n: number }>(
      this.q,
      `SELECT count(*)::int AS n FROM runner_state s
        WHERE quarantined AND quarantine_source = 'failure_streak' AND ${ACTIVE}`,
    );
    return row?.n ?? 0;
  }

  /** Active runners quarantined for any reason (e2epool_runners_quarantined). */
  async countQuarantined(): Promise<number> {
    const [row] = await selectRows<{ n: number }>(
      this.q,
      `SELECT count(*)::int AS n FROM runner_state s WHERE quarantined AND ${ACTIVE}`,
    );
    return row?.n ?? 0;
  }

  /**
   * The end states of the runner's last `n` checkpoints whose reset or
   * cleanup ended, newest first, leaving out `except` (a checkpoint about to end).
   */
  async lastEndStates(runnerId: string, n: number, except?: number): Promise<string[]> {
    const rows = await selectRows<{ state: string }>(
      this.q,
      `SELECT state FROM checkpoints
        WHERE runner_id = $1 AND state = ANY($2) AND id <> $4
        ORDER BY ended_at DESC NULLS LAST, id DESC
        LIMIT $3`,
      [runnerId, ENDED_AFTER_RESET, n, except ?? -1],
    );
    return rows.map((r) => r.state);
  }

  /**
   * Holds the streak-cap lock until the transaction ends: two runners whose
   * streaks end at once must not both fit under a cap that has room for one.
   * Only in a transaction.
   */
  async lockStreakCap(): Promise<void> {
    await this.q.query(`SELECT pg_advisory_xact_lock($1)`, [STREAK_CAP_LOCK]);
  }
}
