import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Baseline refresh (docs/operators.md, "Baseline refresh"): the snapshot a registry
 * runner's resets roll back to now. It starts as the runner's configured
 * `baseline_snapshot` (copied here for existing rows; NULL means "the
 * configured one", so rows written by earlier versions need nothing) and a
 * successful refresh replaces it with the snapshot it took.
 *
 * Only adds a nullable column: earlier versions ignore it.
 */
export class RunnerCurrentBaseline1796184000000 implements MigrationInterface {
  name = 'RunnerCurrentBaseline1796184000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE runners ADD COLUMN current_baseline text`);
    await q.query(
      `UPDATE runners SET current_baseline = options->>'baseline_snapshot'
        WHERE options ? 'baseline_snapshot'`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE runners DROP COLUMN current_baseline`);
  }
}
