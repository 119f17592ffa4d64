import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * A runner's agent token, stored only as its SHA-256 digest, like the REST
 * token. NULL: the runner's agent authenticates with its REST token (the old
 * single-token behaviour, which a CI job holding that token can impersonate).
 * Existing runners keep NULL until an operator rotates one in.
 */
export class AgentTokens1795910400000 implements MigrationInterface {
  name = 'AgentTokens1795910400000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE runners ADD COLUMN agent_token_hash bytea`);
    await q.query(`
      ALTER TABLE runners
        ADD CONSTRAINT ck_runners_agent_token_hash
          CHECK (agent_token_hash IS NULL OR octet_length(agent_token_hash) = 32),
        ADD CONSTRAINT uq_runners_agent_token_hash UNIQUE (agent_token_hash)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE runners DROP COLUMN agent_token_hash`);
  }
}
