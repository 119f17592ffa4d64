import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A session whose connection closed keeps its row, marked `closed_at`: the
 * runner is no longer connected at once, and once its agent has been silent
 * past the heartbeat timeout it reads as unreachable, like one that went
 * silent with its socket open. A dead agent (SIGKILL, host down) must show in
 * `e2epool_runners_unreachable`, not vanish as "never connected".
 */
export class AgentSessionClosedAt1795737600000 implements MigrationInterface {
  name = 'AgentSessionClosedAt1795737600000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE agent_sessions ADD COLUMN closed_at timestamptz`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DELETE FROM agent_sessions WHERE closed_at IS NOT NULL`);
    await q.query(`ALTER TABLE agent_sessions DROP COLUMN closed_at`);
  }
}
