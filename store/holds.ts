import { changeRows, selectRows, type Queryable } from './queryable';

/**
 * `checkpoints.held_until`: when a hold for debugging under way ends. The
 * run sets it as the hold starts and clears it on `release-hold`; any state
 * change of the checkpoint clears it too (CheckpointStore.transition), and a
 * deadline in the past is over (the run writes nothing when the timer fires).
 */
export class HoldStore {
  constructor(private readonly q: Queryable) {}

  /** Sets (a hold starts) or, with null, clears (it was released) the checkpoint's hold deadline. */
  async set(checkpointId: number, until: Date | null): Promise<void> {
    await changeRows(this.q, `UPDATE checkpoints SET held_until = $2 WHERE id = $1`, [
      checkpointId,
      until,
    ]);
  }

  /** The end of each checkpoint's hold still under way, by checkpoint id (none: not held). */
  async untilOf(checkpointIds: readonly number[]): Promise<Map<number, Date>> {
    if (checkpointIds.length === 0) return new Map();
    const rows = await selectRows<{ id: number; until: Date }>(
      this.q,
      `SELECT id, held_until AS "until" FROM checkpoints
        WHERE id = ANY($1) AND state = 'finalize_queued' AND held_until > now()`,
      [checkpointIds],
    );
    return new Map(rows.map((r) => [r.id, r.until]));
  }
}
