import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * One ordered log per checkpoint (see docs/protocol.md#checkpoint-logs): its step events and the output
 * lines of its commands, numbered by `seq` (1, 2, …; a reader resumes after
 * the last one it saw). The checkpoint row keeps the last seq handed out and
 * how many output lines were kept, so appends number and cap under the row's
 * lock. An agent command remembers its checkpoint, so its output lands there.
 */
export class CheckpointLogs1795651200000 implements MigrationInterface {
  name = 'CheckpointLogs1795651200000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE checkpoint_logs (
        checkpoint_id integer     NOT NULL,
        seq           integer     NOT NULL,
        at            timestamptz NOT NULL DEFAULT now(),
        kind          varchar(8)  NOT NULL,
        step          varchar(64),
        result        varchar(16),
        duration_ms   integer,
        text          text,
        CONSTRAINT pk_checkpoint_logs PRIMARY KEY (checkpoint_id, seq),
        CONSTRAINT fk_checkpoint_logs_checkpoint FOREIGN KEY (checkpoint_id)
          REFERENCES checkpoints (id) ON DELETE CASCADE,
        CONSTRAINT ck_checkpoint_logs_kind CHECK (kind IN ('step', 'stdout', 'stderr'))
      )`);
    await q.query(
      `ALTER TABLE checkpoints ADD COLUMN log_seq integer NOT NULL DEFAULT 0,
                               ADD COLUMN log_lines integer NOT NULL DEFAULT 0`,
    );
    await q.query(`ALTER TABLE agent_commands ADD COLUMN checkpoint_id integer`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE agent_commands DROP COLUMN checkpoint_id`);
    await q.query(`ALTER TABLE checkpoints DROP COLUMN log_seq, DROP COLUMN log_lines`);
    await q.query(`DROP TABLE checkpoint_logs`);
  }
}
