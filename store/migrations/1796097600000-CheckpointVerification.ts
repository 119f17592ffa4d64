import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Proof of reset (docs/operators.md, "Proof of reset"): whether a checkpoint's reset was
 * verified, and the SHA-256 of the canary nonce written into a Proxmox guest
 * at its create.
 *
 * - `verified`: true (verified), false (the check failed: the machine may not
 *   be clean), NULL (not verified: the reset has not run yet, verification is
 *   off, or it could not be done, e.g. no guest agent; `verify_detail` says which).
 * - `canary_sha256`: hex SHA-256 of the nonce, never the nonce itself: the
 *   check after the rollback only compares, and rows are read by the API,
 *   the fleet page and backups, none of which needs the value.
 *
 * - `verify_round`: the reset round whose answer `verified` is (an operator's
 *   `retry` starts a new round): the answer of a round is counted once in
 *   e2epool_resets_total however often its activity is retried.
 *
 * Only adds nullable columns: rows of earlier versions read as "not verified".
 */
export class CheckpointVerification1796097600000 implements MigrationInterface {
  name = 'CheckpointVerification1796097600000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE checkpoints
        ADD COLUMN verified boolean,
        ADD COLUMN verify_detail text,
        ADD COLUMN verify_round integer,
        ADD COLUMN canary_sha256 char(64),
        ADD CONSTRAINT ck_checkpoints_canary_sha256 CHECK (canary_sha256 ~ '^[0-9a-f]{64}$')`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE checkpoints
        DROP CONSTRAINT ck_checkpoints_canary_sha256,
        DROP COLUMN canary_sha256,
        DROP COLUMN verify_round,
        DROP COLUMN verify_detail,
        DROP COLUMN verified`);
  }
}
