import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Agent connectivity shared by every API instance and worker: which instance
 * holds each runner's agent WebSocket (agent_sessions), and the commands
 * activities send to agents through whichever instance that is (agent_commands).
 */
export class AgentSessions1795392000000 implements MigrationInterface {
  name = 'AgentSessions1795392000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE agent_sessions (
        runner_id    varchar(255) NOT NULL,
        session_id   uuid         NOT NULL,
        instance_id  varchar(64)  NOT NULL,
        connected_at timestamptz  NOT NULL DEFAULT now(),
        last_seen_at timestamptz  NOT NULL DEFAULT now(),
        CONSTRAINT pk_agent_sessions PRIMARY KEY (runner_id)
      )`);
    await q.query(`
      CREATE TABLE agent_commands (
        id              varchar(255) NOT NULL,
        runner_id       varchar(255) NOT NULL,
        cmd             text         NOT NULL,
        timeout_seconds double precision NOT NULL,
        state           varchar(16)  NOT NULL DEFAULT 'pending',
        claimed_by      varchar(64),
        session_id      uuid,
        exit_code       integer,
        stdout          text,
        stderr          text,
        error           text,
        created_at      timestamptz  NOT NULL DEFAULT now(),
        updated_at      timestamptz  NOT NULL DEFAULT now(),
        CONSTRAINT pk_agent_commands PRIMARY KEY (id),
        CONSTRAINT ck_agent_commands_state CHECK (state IN ('pending', 'sent', 'done', 'failed')),
        CONSTRAINT ck_agent_commands_timeout CHECK (timeout_seconds > 0)
      )`);
    await q.query(
      `CREATE INDEX ix_agent_commands_runner_state ON agent_commands (runner_id, state)`,
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE agent_commands`);
    await q.query(`DROP TABLE agent_sessions`);
  }
}
