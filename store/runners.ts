import { selectRows, changeRows, type Queryable } from './queryable';

/** A runner's non-secret fields that have columns of their own (the runner object of docs/protocol.md#runner-registry). */
export const RUNNER_COLUMNS = [
  'backend',
  'proxmox_host',
  'proxmox_user',
  'proxmox_token_name',
  'proxmox_node',
  'proxmox_vmid',
  'reset_cmd',
  'cleanup_cmd',
  'readiness_cmd',
  'gitlab_runner_id',
  'tags',
] as const;

/** Newer optional inventory fields, kept together in the `options` column. */
export const RUNNER_OPTIONS = [
  'reset_on_success',
  'hold_on_failure_seconds',
  'proxmox_verify_tls',
  'proxmox_ca_file',
  'proxmox_fingerprint',
  'ci_adapter',
  'github_repo',
  'github_org',
  'github_runner_id',
  'github_pause_labels',
  'baseline_snapshot',
  'verify_reset',
  'canary_path',
  'verify_cmd',
] as const;

/** A runner's non-secret config fields (no runner_id, token or Proxmox token value). */
export type RunnerFields = Record<string, unknown> & { backend: string };

/** A row of `runners`. */
export interface StoredRunner {
  runnerId: string;
  fields: RunnerFields;
  /** SHA-256 of the runner's token. */
  tokenHash: Buffer;
  /** SHA-256 of the runner's agent token; null: its agent uses the REST token. */
  agentTokenHash: Buffer | null;
  /** The Proxmox token value sealed by SecretBox (`v1:...`), or null. */
  sealedProxmoxToken: string | null;
  isActive: boolean;
  draining: boolean;
  createdAt: Date;
  updatedAt: Date;
}

// A runner's quarantine and current baseline live in `runner_state` (store/runner-state.ts),
// for inventory-file runners too; the old columns of `runners` only mirror them for 1.1.0.
export type { Quarantine, QuarantineSource } from '../config/runner-state';

export interface RunnerRow {
  runner_id: string;
  token_hash: Buffer;
  agent_token_hash: Buffer | null;
  proxmox_token_value: string | null;
  options: Record<string, unknown>;
  is_active: boolean;
  draining: boolean;
  created_at: Date;
  updated_at: Date;
  [column: string]: unknown;
}

export function runnerFromRow(r: RunnerRow): StoredRunner {
  const fields: RunnerFields = { backend: String(r.backend) };
  for (const c of RUNNER_COLUMNS) {
    const v = r[c];
    if (c === 'backend' || v === null || v === undefined) continue;
    // bigint comes back as a string from pg
    fields[c] = c === 'gitlab_runner_id' ? Number(v) : v;
  }
  for (const o of RUNNER_OPTIONS) if (r.options?.[o] !== undefined) fields[o] = r.options[o];
  return {
    runnerId: r.runner_id,
    fields,
    tokenHash: r.token_hash,
    agentTokenHash: r.agent_token_hash ?? null,
    sealedProxmoxToken: r.proxmox_token_value,
    isActive: r.is_active,
    draining: r.draining,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

/** Column values of `fields`, in RUNNER_COLUMNS order, then the options object. */
function columnValues(fields: RunnerFields): unknown[] {
  const values: unknown[] = RUNNER_COLUMNS.map((c) =>
    c === 'tags' ? JSON.stringify(fields.tags ?? []) : (fields[c] ?? null),
  );
  const options = Object.fromEntries(
    RUNNER_OPTIONS.filter((o) => fields[o] !== undefined).map((o) => [o, fields[o]]),
  );
  values.push(JSON.stringify(options));
  return values;
}

const SET_COLUMNS = [...RUNNER_COLUMNS, 'options'].map((c, i) => `${c} = $${i + 2}`).join(', ');

/** One column `RunnerStore.set` changes. */
export type RunnerChange =
  | { isActive: boolean }
  | { draining: boolean }
  | { tokenHash: Buffer }
  | { agentTokenHash: Buffer };

/** The runner registry's table. Runners are deactivated, never deleted. */
export class RunnerStore {
  constructor(private readonly q: Queryable) {}

  /** Every runner (or only the active ones), ordered by runner_id. */
  async list(includeInactive = true): Promise<StoredRunner[]> {
    const rows = await selectRows<RunnerRow>(
      this.q,
      `SELECT * FROM runners ${includeInactive ? '' : 'WHERE is_active'} ORDER BY runner_id`,
    );
    return rows.map(runnerFromRow);
  }

  async get(runnerId: string): Promise<StoredRunner | null> {
    const [row] = await selectRows<RunnerRow>(
      this.q,
      `SELECT * FROM runners WHERE runner_id = $1`,
      [runnerId],
    );
    return row ? runnerFromRow(row) : null;
  }

  /** Adds a runner; null when its id is taken. */
  async insert(r: {
    runnerId: string;
    fields: RunnerFields;
    tokenHash: Buffer;
    agentTokenHash: Buffer | null;
    sealedProxmoxToken: string | null;
  }): Promise<StoredRunner | null> {
    const cols = [...RUNNER_COLUMNS, 'options'];
    const n = cols.length;
    const rows = await selectRows<RunnerRow>(
      this.q,
      `INSERT INTO runners (runner_id, ${cols.join(', ')}, token_hash, agent_token_hash, proxmox_token_value)
       VALUES ($1, ${cols.map((_, i) => `$${i + 2}`).join(', ')}, $${n + 2}, $${n + 3}, $${n + 4})
       ON CONFLICT (runner_id) DO NOTHING
       RETURNING *`,
      [r.runnerId, ...columnValues(r.fields), r.tokenHash, r.agentTokenHash, r.sealedProxmoxToken],
    );
    return rows[0] ? runnerFromRow(rows[0]) : null;
  }

  /** Replaces a runner's config fields and sealed Proxmox token. */
  async update(
    runnerId: string,
    fields: RunnerFields,
    sealedProxmoxToken: string | null,
    isActive: boolean,
  ): Promise<StoredRunner | null> {
    const n = RUNNER_COLUMNS.length + 2;
    // A new baseline_snapshot's effect on the current baseline: RunnerStateStore.settleBaseline.
    const { rows } = await changeRows<RunnerRow>(
      this.q,
      `UPDATE runners SET ${SET_COLUMNS}, proxmox_token_value = $${n + 1}, is_active = $${n + 2},
              updated_at = now()
        WHERE runner_id = $1 RETURNING *`,
      [runnerId, ...columnValues(fields), sealedProxmoxToken, isActive],
    );
    return rows[0] ? runnerFromRow(rows[0]) : null;
  }

  /** Sets one flag or a token hash; null when there is no such runner. */
  async set(runnerId: string, change: RunnerChange): Promise<StoredRunner | null> {
    const [column, value] =
      'isActive' in change
        ? ['is_active', change.isActive]
        : 'draining' in change
          ? ['draining', change.draining]
          : 'tokenHash' in change
            ? ['token_hash', change.tokenHash]
            : ['agent_token_hash', change.agentTokenHash];
    const { rows } = await changeRows<RunnerRow>(
      this.q,
      `UPDATE runners SET ${column} = $2, updated_at = now() WHERE runner_id = $1 RETURNING *`,
      [runnerId, value],
    );
    return rows[0] ? runnerFromRow(rows[0]) : null;
  }
}

/** One row of `admin_audit`. `detail` names what changed, never a secret's value. */
export interface AuditEntry {
  action: string;
  runnerId: string;
  detail?: Record<string, unknown>;
  actor?: string;
}

/** Who changed which runner when (the admin API, import-inventory). */
export class AdminAuditStore {
  constructor(private readonly q: Queryable) {}

  async record(e: AuditEntry): Promise<void> {
    await this.q.query(
      `INSERT INTO admin_audit (actor, action, runner_id, detail) VALUES ($1, $2, $3, $4)`,
      [e.actor ?? 'admin', e.action, e.runnerId, JSON.stringify(e.detail ?? {})],
    );
  }
}
