import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * What e2epool itself sets on a runner at run time, keyed by runner id,
 * wherever the runner is defined (inventory.yml or the registry): its
 * quarantine, the baseline a refresh made current, and a refresh's drain of
 * an inventory-file runner. One table, not one per fact: the inventory and
 * the registry feed read all of it in one query per reload, a runner has at
 * most one row, and one trigger NOTIFYs `e2epool_runners` for every change,
 * as the trigger on `runners` does.
 *
 * - `quarantine_source` gains `refresh`: a baseline refresh whose restore of
 *   the previous baseline failed (before, it was filed as `verification`).
 * - `current_baseline` is the snapshot a refresh made current, and
 *   `baseline_from` the configured `baseline_snapshot` it replaced (null:
 *   none was configured). It is current only while the configured value is
 *   still `baseline_from`: an operator who changes `baseline_snapshot` (PATCH,
 *   or the inventory file) makes that value current again, as a PATCH did.
 * - `draining` is a refresh's drain of an inventory-file runner; a registry
 *   runner's drain stays `runners.draining` (the admin API's).
 *
 * Rolling upgrade: the `quarantine*` and `current_baseline` columns of
 * `runners` are KEPT and kept in step with this table by two triggers, so a
 * 1.1.0 API instance or worker beside 2.0.0 ones reads and writes what they
 * do for registry runners (a 1.1.0 operator quarantine lands here; a 2.0.0
 * verification's quarantine lands there, and its NOTIFY reloads both). A
 * trigger's own mirror write is not mirrored back (pg_trigger_depth), and
 * each writes only values that differ. 2.0.0 code reads and writes only this
 * table; a later release drops the old columns and the triggers.
 *
 * down() copies registry runners' rows back into those columns (a `refresh`
 * quarantine becomes `verification`, which 1.1.0 allows) and drops the table:
 * the quarantines and refreshed baselines of inventory-file runners are lost,
 * since 1.1.0 has no place for them.
 */
export class RunnerState1796270400000 implements MigrationInterface {
  name = 'RunnerState1796270400000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE runner_state (
        runner_id          varchar(255) NOT NULL,
        quarantined        boolean      NOT NULL DEFAULT false,
        quarantine_reason  text,
        quarantine_source  varchar(16),
        quarantined_at     timestamptz,
        current_baseline   text,
        baseline_from      text,
        draining           boolean      NOT NULL DEFAULT false,
        updated_at         timestamptz  NOT NULL DEFAULT now(),
        CONSTRAINT pk_runner_state PRIMARY KEY (runner_id),
        CONSTRAINT ck_runner_state_quarantine_source CHECK (
          quarantine_source IN ('verification', 'failure_streak', 'operator', 'refresh')),
        CONSTRAINT ck_runner_state_quarantine CHECK (
          quarantined = (quarantine_source IS NOT NULL AND quarantined_at IS NOT NULL
                         AND quarantine_reason IS NOT NULL))
      )`);
    await q.query(`
      INSERT INTO runner_state (runner_id, quarantined, quarantine_reason, quarantine_source,
                                quarantined_at, current_baseline, baseline_from)
      SELECT runner_id, quarantined, quarantine_reason, quarantine_source, quarantined_at,
             current_baseline, CASE WHEN current_baseline IS NULL THEN NULL
                                    ELSE options->>'baseline_snapshot' END
        FROM runners WHERE quarantined OR current_baseline IS NOT NULL`);
    // A 1.1.0 reader of `runners` must accept what the mirror writes.
    await q.query(`
      ALTER TABLE runners DROP CONSTRAINT ck_runners_quarantine_source,
        ADD CONSTRAINT ck_runners_quarantine_source CHECK (
          quarantine_source IN ('verification', 'failure_streak', 'operator', 'refresh'))`);
    await q.query(`
      CREATE TRIGGER tr_runner_state_notify AFTER INSERT OR UPDATE OR DELETE ON runner_state
        FOR EACH ROW EXECUTE FUNCTION e2epool_runners_notify()`);
    await q.query(MIRROR_TO_RUNNERS);
    await q.query(`
      CREATE TRIGGER tr_runner_state_mirror AFTER INSERT OR UPDATE ON runner_state
        FOR EACH ROW EXECUTE FUNCTION e2epool_runner_state_to_runners()`);
    await q.query(MIRROR_FROM_RUNNERS);
    await q.query(`
      CREATE TRIGGER tr_runners_state_mirror
        AFTER UPDATE OF quarantined, quarantine_reason, quarantine_source, quarantined_at,
                        current_baseline ON runners
        FOR EACH ROW EXECUTE FUNCTION e2epool_runners_to_runner_state()`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TRIGGER tr_runners_state_mirror ON runners`);
    await q.query(`DROP TRIGGER tr_runner_state_mirror ON runner_state`);
    await q.query(`DROP FUNCTION e2epool_runners_to_runner_state()`);
    await q.query(`DROP FUNCTION e2epool_runner_state_to_runners()`);
    await q.query(`
      UPDATE runners r
         SET quarantined = s.quarantined, quarantine_reason = s.quarantine_reason,
             quarantine_source = CASE s.quarantine_source WHEN 'refresh' THEN 'verification'
                                 ELSE s.quarantine_source END,
             quarantined_at = s.quarantined_at, current_baseline = ${CURRENT_FOR_RUNNERS('s', 'r')}
        FROM runner_state s WHERE s.runner_id = r.runner_id`);
    await q.query(`
      ALTER TABLE runners DROP CONSTRAINT ck_runners_quarantine_source,
        ADD CONSTRAINT ck_runners_quarantine_source CHECK (
          quarantine_source IN ('verification', 'failure_streak', 'operator'))`);
    await q.query(`DROP TABLE runner_state`);
  }
}

/**
 * `runners.current_baseline` as 1.1.0 reads it (NULL: the configured one) from
 * a runner_state row `s` and its runners row `r`.
 */
const CURRENT_FOR_RUNNERS = (s: string, r: string): string =>
  `CASE WHEN ${s}.baseline_from IS NOT DISTINCT FROM ${r}.options->>'baseline_snapshot'
        THEN ${s}.current_baseline END`;

/** runner_state -> runners (registry runners only: an UPDATE of a missing row does nothing). */
const MIRROR_TO_RUNNERS = `
  CREATE FUNCTION e2epool_runner_state_to_runners() RETURNS trigger AS $$
  BEGIN
    IF pg_trigger_depth() > 1 THEN RETURN NULL; END IF;
    UPDATE runners
       SET quarantined = NEW.quarantined, quarantine_reason = NEW.quarantine_reason,
           quarantine_source = NEW.quarantine_source, quarantined_at = NEW.quarantined_at,
           current_baseline = ${CURRENT_FOR_RUNNERS('NEW', 'runners')}, updated_at = now()
     WHERE runner_id = NEW.runner_id
       AND (quarantined, quarantine_reason, quarantine_source, quarantined_at, current_baseline)
           IS DISTINCT FROM (NEW.quarantined, NEW.quarantine_reason, NEW.quarantine_source,
                             NEW.quarantined_at, ${CURRENT_FOR_RUNNERS('NEW', 'runners')});
    RETURN NULL;
  END $$ LANGUAGE plpgsql`;

/**
 * runners -> runner_state: what a 1.1.0 instance wrote. Its current_baseline
 * (NULL: the configured one) derives from the row's baseline_snapshot.
 */
const MIRROR_FROM_RUNNERS = `
  CREATE FUNCTION e2epool_runners_to_runner_state() RETURNS trigger AS $$
  BEGIN
    IF pg_trigger_depth() > 1 THEN RETURN NULL; END IF;
    INSERT INTO runner_state AS s (runner_id, quarantined, quarantine_reason, quarantine_source,
                                   quarantined_at, current_baseline, baseline_from)
    VALUES (NEW.runner_id, NEW.quarantined, NEW.quarantine_reason, NEW.quarantine_source,
            NEW.quarantined_at, NEW.current_baseline,
            CASE WHEN NEW.current_baseline IS NULL THEN NULL
                 ELSE NEW.options->>'baseline_snapshot' END)
    ON CONFLICT (runner_id) DO UPDATE
       SET quarantined = EXCLUDED.quarantined, quarantine_reason = EXCLUDED.quarantine_reason,
           quarantine_source = EXCLUDED.quarantine_source,
           quarantined_at = EXCLUDED.quarantined_at,
           current_baseline = EXCLUDED.current_baseline,
           baseline_from = CASE WHEN s.current_baseline IS NOT DISTINCT FROM EXCLUDED.current_baseline
                                THEN s.baseline_from ELSE EXCLUDED.baseline_from END,
           updated_at = now()
     WHERE (s.quarantined, s.quarantine_reason, s.quarantine_source, s.quarantined_at,
            s.current_baseline)
           IS DISTINCT FROM (EXCLUDED.quarantined, EXCLUDED.quarantine_reason,
                             EXCLUDED.quarantine_source, EXCLUDED.quarantined_at,
                             EXCLUDED.current_baseline);
    RETURN NULL;
  END $$ LANGUAGE plpgsql`;
