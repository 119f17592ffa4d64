import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Quarantine (see docs/protocol.md#runner-registry): a quarantined runner takes
 * no checkpoint and stays paused in its CI system until an operator ends it.
 * `quarantine_source` says who put it there: `verification` (a reset that
 * could not be proven), `failure_streak` (E2EPOOL_QUARANTINE_AFTER resets in
 * a row failed; only these count against E2EPOOL_QUARANTINE_MAX_PERCENT) or
 * `operator`. A checkpoint's pause that its unpause left in place because the
 * runner is quarantined is `kept_for_quarantine`: still e2epool's (`owned`),
 * undone by the reconciler once the runner is unquarantined.
 */
export class RunnerQuarantine1796083200000 implements MigrationInterface {
  name = 'RunnerQuarantine1796083200000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      ALTER TABLE runners
        ADD COLUMN quarantined       boolean     NOT NULL DEFAULT false,
        ADD COLUMN quarantine_reason text,
        ADD COLUMN quarantine_source varchar(16),
        ADD COLUMN quarantined_at    timestamptz,
        ADD CONSTRAINT ck_runners_quarantine_source CHECK (
          quarantine_source IN ('verification', 'failure_streak', 'operator')),
        ADD CONSTRAINT ck_runners_quarantine CHECK (
          quarantined = (quarantine_source IS NOT NULL AND quarantined_at IS NOT NULL
                         AND quarantine_reason IS NOT NULL))`);
    await setPauseStates(q, ['sent', 'paused', 'kept_for_drain', 'kept_for_quarantine']);
  }

  async down(q: QueryRunner): Promise<void> {
    // A pause kept for a quarantine is a pause kept: the code before this
    // migration keeps it for a drain, and the reconciler undoes it at once.
    await q.query(
      `UPDATE runner_pauses SET state = 'kept_for_drain' WHERE state = 'kept_for_quarantine'`,
    );
    await setPauseStates(q, ['sent', 'paused', 'kept_for_drain']);
    await q.query(`
      ALTER TABLE runners
        DROP COLUMN quarantined,
        DROP COLUMN quarantine_reason,
        DROP COLUMN quarantine_source,
        DROP COLUMN quarantined_at`);
  }
}

/**
 * Redefines the open pause states: the CHECKs and the generated `owned`
 * column, which Postgres cannot alter in place (it is dropped and added back,
 * computed anew for every row).
 */
async function setPauseStates(q: QueryRunner, open: string[]): Promise<void> {
  const list = open.map((s) => `'${s}'`).join(', ');
  const all = [...open, 'unpaused', 'left_paused', 'unpaused_elsewhere']
    .map((s) => `'${s}'`)
    .join(', ');
  await q.query(`
    ALTER TABLE runner_pauses
      DROP CONSTRAINT ck_runner_pauses_state,
      DROP CONSTRAINT ck_runner_pauses_unpaused_at,
      DROP COLUMN owned`);
  await q.query(`
    ALTER TABLE runner_pauses
      ADD COLUMN owned boolean GENERATED ALWAYS AS (state IN (${list})) STORED,
      ADD CONSTRAINT ck_runner_pauses_state CHECK (state IN (${all})),
      ADD CONSTRAINT ck_runner_pauses_unpaused_at CHECK ((unpaused_at IS NULL) = (state IN (${list})))`);
}
