import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The runner registry (see docs/protocol.md#runner-registry): runners added through the admin API, next to
 * those of inventory.yml. A runner's token is stored only as its SHA-256
 * digest; its Proxmox token value only sealed with AES-256-GCM under
 * E2EPOOL_SECRET_KEY. Runners are deactivated, never deleted: checkpoints keep
 * naming them. Every change NOTIFYs `e2epool_runners` (payload: the runner
 * id), so API instances and workers reload at once. `admin_audit` records
 * who changed what, never a secret.
 */
export class RunnerRegistry1795824000000 implements MigrationInterface {
  name = 'RunnerRegistry1795824000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE runners (
        runner_id             varchar(255) NOT NULL,
        backend               varchar(16)  NOT NULL,
        token_hash            bytea        NOT NULL,
        proxmox_host          text,
        proxmox_user          text,
        proxmox_token_name    text,
        proxmox_token_value   text,
        proxmox_node          text,
        proxmox_vmid          integer,
        reset_cmd             text,
        cleanup_cmd           text,
        readiness_cmd         text,
        gitlab_runner_id      bigint,
        tags                  jsonb        NOT NULL DEFAULT '[]',
        options               jsonb        NOT NULL DEFAULT '{}',
        is_active             boolean      NOT NULL DEFAULT true,
        draining              boolean      NOT NULL DEFAULT false,
        created_at            timestamptz  NOT NULL DEFAULT now(),
        updated_at            timestamptz  NOT NULL DEFAULT now(),
        CONSTRAINT pk_runners PRIMARY KEY (runner_id),
        CONSTRAINT uq_runners_token_hash UNIQUE (token_hash),
        CONSTRAINT ck_runners_backend CHECK (backend IN ('proxmox', 'bare_metal')),
        CONSTRAINT ck_runners_token_hash CHECK (octet_length(token_hash) = 32),
        CONSTRAINT ck_runners_token_sealed CHECK (
          proxmox_token_value IS NULL OR proxmox_token_value LIKE 'v1:%')
      )`);
    await q.query(`
      CREATE FUNCTION e2epool_runners_notify() RETURNS trigger AS $$
      BEGIN
        PERFORM pg_notify('e2epool_runners', COALESCE(NEW.runner_id, OLD.runner_id));
        RETURN NULL;
      END $$ LANGUAGE plpgsql`);
    await q.query(`
      CREATE TRIGGER tr_runners_notify AFTER INSERT OR UPDATE OR DELETE ON runners
        FOR EACH ROW EXECUTE FUNCTION e2epool_runners_notify()`);
    await q.query(`
      CREATE TABLE admin_audit (
        id         bigserial    NOT NULL,
        at         timestamptz  NOT NULL DEFAULT now(),
        actor      varchar(64)  NOT NULL DEFAULT 'admin',
        action     varchar(32)  NOT NULL,
        runner_id  varchar(255) NOT NULL,
        detail     jsonb        NOT NULL DEFAULT '{}',
        CONSTRAINT pk_admin_audit PRIMARY KEY (id)
      )`);
    await q.query(`CREATE INDEX ix_admin_audit_runner_at ON admin_audit (runner_id, at)`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE admin_audit`);
    await q.query(`DROP TABLE runners`);
    await q.query(`DROP FUNCTION e2epool_runners_notify()`);
  }
}
