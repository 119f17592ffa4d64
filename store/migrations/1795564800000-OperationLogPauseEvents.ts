import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The reconciler asks, every pass, for each runner's newest pause event
 * (OperationLogStore.latestPauseEvents). A partial index over just those
 * rows keeps that an index scan however long the operation log grows; its
 * list of operations is PAUSE_EVENT_OPERATIONS, spelled out here because a
 * migration must not change when the code does.
 */
export class OperationLogPauseEvents1795564800000 implements MigrationInterface {
  name = 'OperationLogPauseEvents1795564800000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      `CREATE INDEX ix_operation_logs_pause_events ON operation_logs (runner_id, started_at DESC)
        WHERE operation IN ('pause', 'unpause', 'left_paused', 'unpaused_elsewhere', 'reconcile:paused_runner')`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX ix_operation_logs_pause_events`);
  }
}
