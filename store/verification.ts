import { changeRows, selectRows, type Queryable } from './queryable';

/**
 * The proof of reset on `checkpoints` (docs/operators.md, "Proof of reset"): the canary
 * nonce's SHA-256 written at the create, and the answer of each reset round.
 * The nonce itself is never stored.
 */
export class VerificationStore {
  constructor(private readonly q: Queryable) {}

  /** Records the canary's SHA-256 (hex); null: no canary is in the guest (recorded as unverifiable). */
  async setCanary(
    checkpointId: number,
    sha256: string | null,
    detail: string | null,
  ): Promise<void> {
    await changeRows(
      this.q,
      `UPDATE checkpoints SET canary_sha256 = $2, verify_detail = $3 WHERE id = $1`,
      [checkpointId, sha256, detail],
    );
  }

  /** The canary's SHA-256 recorded at the create; null when none was written. */
  async canaryOf(checkpointId: number): Promise<string | null> {
    const [row] = await selectRows<{ sha: string | null }>(
      this.q,
      `SELECT canary_sha256 AS sha FROM checkpoints WHERE id = $1`,
      [checkpointId],
    );
    return row?.sha ?? null;
  }

  /**
   * Records a round's answer. True when it is the first answer of that round
   * (the caller counts it once); a retried attempt of the same round
   * overwrites the answer and gets false.
   */
  async record(
    checkpointId: number,
    round: number,
    verified: boolean | null,
    detail: string | null,
  ): Promise<boolean> {
    const { rows } = await changeRows<{ first: boolean }>(
      this.q,
      `UPDATE checkpoints c SET verified = $3, verify_detail = $4, verify_round = $2
         FROM (SELECT id, verify_round FROM checkpoints WHERE id = $1 FOR UPDATE) old
        WHERE c.id = old.id
      RETURNING old.verify_round IS DISTINCT FROM $2 AS first`,
      [checkpointId, round, verified, detail],
    );
    return rows[0]?.first ?? false;
  }
}
