import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Each agent command gets the instant after which nobody waits for it any
 * more (`expires_at`): an API instance never sends a pending command past it,
 * so a command whose activity gave up (or whose worker died) cannot run on an
 * agent that reconnects later, during another job. Commands queued before this
 * migration get their creation plus a step's longest attempt (15 minutes).
 */
export class AgentCommandExpiry1795478400000 implements MigrationInterface {
  name = 'AgentCommandExpiry1795478400000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE agent_commands ADD COLUMN expires_at timestamptz`);
    await q.query(`UPDATE agent_commands SET expires_at = created_at + interval '15 minutes'`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE agent_commands DROP COLUMN expires_at`);
  }
}
