import { noState, type RunnerState, type QuarantineSource } from '../config/runner-state';
import { changeRows, selectRows, type Queryable } from './queryable';

/** A row of `runner_state` (store/migrations/1796270400000-RunnerState.ts). */
export interface RunnerStateRow {
  runner_id: string;
  quarantined: boolean;
  quarantine_reason: string | null;
  quarantine_source: QuarantineSource | null;
  quarantined_at: Date | null;
  current_baseline: string | null;
  baseline_from: string | null;
  draining: boolean;
}

/** The state a row holds. */
export function stateFromRow(r: RunnerStateRow): RunnerState {
  return {
    runnerId: r.runner_id,
    quarantine: r.quarantined
      ? { reason: r.quarantine_reason!, source: r.quarantine_source!, at: r.quarantined_at! }
      : null,
    refreshedBaseline: r.current_baseline,
    baselineFrom: r.baseline_from,
    draining: r.draining,
  };
}

/**
 * Sets `values` (column -> SQL expression over the params; $1 is the runner
 * id) on the runner's row, inserting it when the runner has none (a runner
 * without a row has the defaults), unless `unchanged` (a condition on the
 * existing row `s`) holds. One statement, so a concurrent writer waits on the
 * row and then sees the first one's change. Returns the row when it changed.
 * Each change NOTIFYs `e2epool_runners` (trigger), so API instances and
 * workers re-read the inventory.
 */
export async function upsertState(
  q: Queryable,
  values: Record<string, string>,
  unchanged: string,
  params: unknown[],
): Promise<RunnerStateRow | null> {
  const cols = Object.keys(values);
  const [row] = await selectRows<RunnerStateRow>(
    q,
    `INSERT INTO runner_state AS s (runner_id, ${cols.join(', ')})
     VALUES ($1, ${cols.map((c) => values[c]).join(', ')})
     ON CONFLICT (runner_id) DO UPDATE
        SET ${cols.map((c) => `${c} = EXCLUDED.${c}`).join(', ')}, updated_at = now()
      WHERE NOT (${unchanged})
     RETURNING *`,
    params,
  );
  return row ?? null;
}

/**
 * `runner_state`: the quarantine (see store/quarantine.ts), current baseline
 * and refresh drain of every runner, inventory file or registry, keyed by
 * runner id. The store cannot tell whether an id is a runner: callers check.
 */
export class RunnerStateStore {
  constructor(private readonly q: Queryable) {}

  /** The runner's state (the defaults when it has no row). */
  async get(runnerId: string): Promise<RunnerState> {
    const [row] = await selectRows<RunnerStateRow>(
      this.q,
      `SELECT * FROM runner_state WHERE runner_id = $1`,
      [runnerId],
    );
    return row ? stateFromRow(row) : noState(runnerId);
  }

  /** Every row (runners without one have the defaults). */
  async all(): Promise<RunnerState[]> {
    const rows = await selectRows<RunnerStateRow>(
      this.q,
      `SELECT * FROM runner_state ORDER BY runner_id`,
    );
    return rows.map(stateFromRow);
  }

  /**
   * Makes `snapshot` (a refresh's) the runner's baseline while its configured
   * `baseline_snapshot` stays `from`. Returns whether this call changed it.
   */
  async setCurrentBaseline(
    runnerId: string,
    snapshot: string,
    from: string | null,
  ): Promise<boolean> {
    const row = await upsertState(
      this.q,
      { current_baseline: '$2', baseline_from: '$3' },
      `s.current_baseline IS NOT DISTINCT FROM EXCLUDED.current_baseline
       AND s.baseline_from IS NOT DISTINCT FROM EXCLUDED.baseline_from`,
      [runnerId, snapshot, from],
    );
    return row !== null;
  }

  /**
   * Forgets the refresh's baseline when the configured one is no longer the
   * one it replaced: an operator's new `baseline_snapshot` is current again,
   * and stays so should the operator set the old value back (a PATCH's rule).
   */
  async settleBaseline(runnerId: string, configured: string | null): Promise<void> {
    await changeRows(
      this.q,
      `UPDATE runner_state SET current_baseline = NULL, baseline_from = NULL, updated_at = now()
        WHERE runner_id = $1 AND current_baseline IS NOT NULL
          AND baseline_from IS DISTINCT FROM $2`,
      [runnerId, configured],
    );
  }

  /**
   * settleBaseline for many runners in one statement (`configured`: runner
   * id -> its configured baseline_snapshot or null): the inventory file's,
   * after each change of the file.
   */
  async settleBaselines(
    configured: ReadonlyArray<readonly [string, string | null]>,
  ): Promise<void> {
    if (configured.length === 0) return;
    await changeRows(
      this.q,
      `UPDATE runner_state s SET current_baseline = NULL, baseline_from = NULL, updated_at = now()
         FROM unnest($1::text[], $2::text[]) AS f(runner_id, configured)
        WHERE s.runner_id = f.runner_id AND s.current_baseline IS NOT NULL
          AND s.baseline_from IS DISTINCT FROM f.configured`,
      [configured.map(([id]) => id), configured.map(([, c]) => c)],
    );
  }

  /** A refresh's drain of an inventory-file runner. Returns whether this call changed it. */
  async setDraining(runnerId: string, draining: boolean): Promise<boolean> {
    const row = await upsertState(this.q, { draining: '$2' }, 's.draining = EXCLUDED.draining', [
      runnerId,
      draining,
    ]);
    return row !== null;
  }
}
