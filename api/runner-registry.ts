import { randomBytes } from 'node:crypto';
import { sha256, type InventoryStore, type RunnerSource } from '../config/inventory';
import type { RunnerConfig } from '../config/runner-schema';
import type { Logger } from '../config/logger';
import {
  currentBaselineOf,
  noState,
  type Quarantine,
  type QuarantineSource,
  type RunnerState,
} from '../config/runner-state';
import type { SecretBox } from '../config/secret-box';
import type { Stores, Store } from '../store';
import {
  RUNNER_COLUMNS,
  RUNNER_OPTIONS,
  type RunnerChange,
  type RunnerFields,
  type StoredRunner,
} from '../store/runners';
import { HttpError } from './errors';
import { validateRunner } from './runner-validation';

/** The runner object of the admin API (see docs/protocol.md#runner-registry): never a token or a Proxmox token value. */
export interface RunnerView {
  runner_id: string;
  backend: string;
  proxmox_host: string | null;
  proxmox_user: string | null;
  proxmox_token_name: string | null;
  proxmox_node: string | null;
  proxmox_vmid: number | null;
  reset_cmd: string | null;
  cleanup_cmd: string | null;
  readiness_cmd: string | null;
  gitlab_runner_id: number | null;
  tags: string[];
  is_active: boolean;
  draining: boolean;
  /** Quarantined (see docs/protocol.md#runner-registry): creates get 423, the runner stays paused. */
  quarantined: boolean;
  quarantine_reason: string | null;
  /** Who quarantined it: `verification`, `failure_streak`, `operator` or `refresh`; null when not quarantined. */
  quarantine_source: QuarantineSource | null;
  quarantined_at: string | null;
  /** The snapshot its resets roll back to now (a refresh's, else `baseline_snapshot`); null: none. */
  current_baseline: string | null;
  /**
   * Whether the runner's agent has a credential of its own; false: its agent
   * uses the REST token, which its CI jobs hold too (shared credential).
   */
  has_agent_token: boolean;
  source: RunnerSource;
  /** null for inventory.yml runners (the file has no such times). */
  created_at: string | null;
  updated_at: string | null;
  [option: string]: unknown;
}

/** Where the stored Proxmox token goes and whose it is: changing one needs the token again. */
const PROXMOX_IDENTITY = ['proxmox_host', 'proxmox_user', 'proxmox_token_name'] as const;

/** Fields a PATCH may send. */
const PATCHABLE = new Set<string>([
  ...RUNNER_COLUMNS,
  ...RUNNER_OPTIONS,
  'proxmox_token_value',
  'is_active',
]);

const NO_SECRET_KEY =
  'Cannot store proxmox_token_value: E2EPOOL_SECRET_KEY is not set on this controller';

/** The non-secret fields of a validated config, as stored. */
export function fieldsOf(c: RunnerConfig): RunnerFields {
  const all = c as unknown as Record<string, unknown>;
  const fields: RunnerFields = { backend: c.backend };
  for (const k of [...RUNNER_COLUMNS, ...RUNNER_OPTIONS]) {
    if (k !== 'backend' && all[k] !== undefined) fields[k] = all[k];
  }
  return fields;
}

function view(
  fields: Record<string, unknown>,
  extra: {
    runnerId: string;
    isActive: boolean;
    draining: boolean;
    quarantine: Quarantine | null;
    currentBaseline: string | null;
    hasAgentToken: boolean;
    source: RunnerSource;
    createdAt: Date | null;
    updatedAt: Date | null;
  },
): RunnerView {
  const get = <T>(k: string): T | null => (fields[k] === undefined ? null : (fields[k] as T));
  const options = Object.fromEntries(
    RUNNER_OPTIONS.filter((o) => fields[o] !== undefined).map((o) => [o, fields[o]]),
  );
  return {
    runner_id: extra.runnerId,
    backend: String(fields.backend),
    proxmox_host: get('proxmox_host'),
    proxmox_user: get('proxmox_user'),
    proxmox_token_name: get('proxmox_token_name'),
    proxmox_node: get('proxmox_node'),
    proxmox_vmid: get('proxmox_vmid'),
    reset_cmd: get('reset_cmd'),
    cleanup_cmd: get('cleanup_cmd'),
    readiness_cmd: get('readiness_cmd'),
    gitlab_runner_id: get('gitlab_runner_id'),
    tags: (fields.tags as string[] | undefined) ?? [],
    ...options,
    is_active: extra.isActive,
    draining: extra.draining,
    quarantined: extra.quarantine !== null,
    quarantine_reason: extra.quarantine?.reason ?? null,
    quarantine_source: extra.quarantine?.source ?? null,
    quarantined_at: extra.quarantine ? extra.quarantine.at.toISOString() : null,
    current_baseline: extra.currentBaseline,
    has_agent_token: extra.hasAgentToken,
    source: extra.source,
    created_at: extra.createdAt ? extra.createdAt.toISOString() : null,
    updated_at: extra.updatedAt ? extra.updatedAt.toISOString() : null,
  };
}

/** The configured baseline_snapshot of a runner's fields, if any. */
function configuredBaseline(fields: Record<string, unknown>): string | null {
  return typeof fields.baseline_snapshot === 'string' ? fields.baseline_snapshot : null;
}

function storedView(r: StoredRunner, state: RunnerState): RunnerView {
  return view(r.fields, {
    ...r,
    quarantine: state.quarantine,
    currentBaseline: currentBaselineOf(state, configuredBaseline(r.fields)),
    hasAgentToken: r.agentTokenHash !== null,
    source: 'api',
  });
}

function inventoryView(c: RunnerConfig, state: RunnerState): RunnerView {
  return view(fieldsOf(c), {
    runnerId: c.runner_id,
    isActive: true,
    // The file holds no drain: only a baseline refresh drains a file runner (runner_state).
    draining: state.draining,
    quarantine: state.quarantine,
    currentBaseline:
      c.backend === 'proxmox' ? currentBaselineOf(state, c.baseline_snapshot ?? null) : null,
    hasAgentToken: c.agent_token !== undefined,
    source: 'inventory',
    createdAt: null,
    updatedAt: null,
  });
}

/** A new runner token: 256 random bits, URL-safe. */
export function newRunnerToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * The runner registry's operations (see docs/protocol.md#runner-registry), shared by the admin API and
 * `e2epool import-inventory`. Every change is audited in the same
 * transaction, then this process re-reads the registry at once (others on the
 * NOTIFY the change sends).
 */
export class RunnerRegistry {
  constructor(
    private readonly d: {
      store: Store;
      inventory: InventoryStore;
      /** null: E2EPOOL_SECRET_KEY unset, Proxmox token values cannot be stored. */
      secrets: SecretBox | null;
      log: Logger;
      actor?: string;
      /**
       * Called after an undrain or unquarantine, to unpause the runner without
       * waiting for the reconciler's next pass; its failure is logged, not answered.
       */
      undrained?: (runnerId: string) => Promise<void>;
      /**
       * Called after a quarantine, to pause the runner in its CI system when
       * no checkpoint will (runnerQuarantineWorkflow); its failure is logged, not answered.
       */
      quarantined?: (runnerId: string) => Promise<void>;
      /**
       * Called after each change this instance made, before it is answered:
       * drops what this instance caches of the runners (the fleet page's
       * snapshot), so the operator's next page load shows the change.
       */
      changed?: () => void;
    },
  ) {}

  private get actor(): string {
    return this.d.actor ?? 'admin';
  }

  private seal(value: string): string {
    if (!this.d.secrets) throw new HttpError(422, NO_SECRET_KEY);
    return this.d.secrets.seal(value);
  }

  private refuseFileRunner(runnerId: string): void {
    if (this.d.inventory.inventory.inFile(runnerId)) {
      throw new HttpError(409, `Runner '${runnerId}' is defined in the inventory file`);
    }
  }

  /**
   * Read your writes: this instance's inventory copy (normally refreshed by
   * NOTIFY, a moment later) re-reads the change, and its caches are dropped,
   * before the change is answered.
   */
  private async applied<T>(result: T): Promise<T> {
    await this.d.inventory.refreshRegistry();
    this.d.changed?.();
    return result;
  }

  /** The registry's runners and the file's, ordered by runner_id. */
  async list(includeInactive: boolean): Promise<RunnerView[]> {
    const [stored, states] = await Promise.all([
      this.d.store.runners.list(includeInactive),
      this.d.store.runnerState.all(),
    ]);
    const byId = new Map(states.map((st) => [st.runnerId, st]));
    const stateOf = (id: string) => byId.get(id) ?? noState(id);
    const all = [
      ...stored.map((r) => storedView(r, stateOf(r.runnerId))),
      ...this.d.inventory.inventory.fileRunners.map((c) => inventoryView(c, stateOf(c.runner_id))),
    ];
    return all.sort((a, b) => (a.runner_id < b.runner_id ? -1 : a.runner_id > b.runner_id ? 1 : 0));
  }

  async get(runnerId: string): Promise<RunnerView> {
    return this.viewIn(this.d.store, runnerId);
  }

  /** The runner's view as `tx` reads it: the file's runner, else the registry's; 404 for neither. */
  private async viewIn(tx: Stores, runnerId: string): Promise<RunnerView> {
    const fileRunner = this.d.inventory.inventory.fileRunners.find((r) => r.runner_id === runnerId);
    const state = await tx.runnerState.get(runnerId);
    if (fileRunner) return inventoryView(fileRunner, state);
    const r = await tx.runners.get(runnerId);
    if (!r) throw new HttpError(404, 'Runner not found');
    return storedView(r, state);
  }

  /** Adds a runner; its token and agent token are generated and returned once. */
  async create(
    body: Record<string, unknown>,
  ): Promise<RunnerView & { token: string; agent_token: string }> {
    const config = validateRunner(body);
    const runnerId = config.runner_id;
    if (this.d.inventory.inventory.inFile(runnerId)) {
      throw new HttpError(409, `Runner '${runnerId}' already exists`);
    }
    const sealed = config.backend === 'proxmox' ? this.seal(config.proxmox_token_value) : null;
    const token = newRunnerToken();
    const agentToken = newRunnerToken();
    const fields = fieldsOf(config);
    const stored = await this.d.store.transaction(async (tx) => {
      const row = await tx.runners.insert({
        runnerId,
        fields,
        tokenHash: sha256(token),
        agentTokenHash: sha256(agentToken),
        sealedProxmoxToken: sealed,
      });
      if (!row) return null;
      await tx.audit.record({
        actor: this.actor,
        action: 'create',
        runnerId,
        detail: { backend: config.backend, fields: Object.keys(fields).sort() },
      });
      return row;
    });
    if (!stored) throw new HttpError(409, `Runner '${runnerId}' already exists`);
    this.d.log.info({ runnerId, actor: this.actor }, 'registry runner created');
    // A runner moved from the file (import-inventory) keeps its state: it is keyed by runner id.
    const state = await this.d.store.runnerState.get(runnerId);
    return this.applied({ ...storedView(stored, state), token, agent_token: agentToken });
  }

  /** Changes only the fields sent; the result must be a valid runner. */
  async patch(runnerId: string, body: Record<string, unknown>): Promise<RunnerView> {
    this.refuseFileRunner(runnerId);
    const unknown = Object.keys(body).filter((k) => !PATCHABLE.has(k) && k !== 'runner_id');
    if (unknown.length) throw new HttpError(422, `Unknown fields: ${unknown.sort().join(', ')}`);
    if (body.runner_id !== undefined && body.runner_id !== runnerId) {
      throw new HttpError(422, 'runner_id cannot be changed');
    }
    if (body.is_active !== undefined && typeof body.is_active !== 'boolean') {
      throw new HttpError(422, 'is_active: expected true or false');
    }
    return this.d.store
      .transaction(async (tx) => {
        const current = await tx.runners.get(runnerId);
        if (!current) throw new HttpError(404, 'Runner not found');
        const merged: Record<string, unknown> = { ...current.fields, runner_id: runnerId };
        for (const [k, v] of Object.entries(body)) {
          if (k === 'is_active' || k === 'runner_id') continue;
          if (v === null) delete merged[k];
          else merged[k] = v;
        }
        const newTokenValue =
          typeof body.proxmox_token_value === 'string' ? body.proxmox_token_value : undefined;
        // The sealed token was issued for one host and user: it is never sent to another.
        const moved = PROXMOX_IDENTITY.filter(
          (k) => body[k] !== undefined && body[k] !== current.fields[k],
        );
        if (moved.length && newTokenValue === undefined && current.sealedProxmoxToken)
          throw new HttpError(
            422,
            `Changing ${moved.join(', ')} requires proxmox_token_value: the stored Proxmox token is never sent to another host or user`,
          );
        // The stored value stands in for validation; it is only opened by the worker.
        if (
          newTokenValue === undefined &&
          body.proxmox_token_value !== null &&
          current.sealedProxmoxToken
        )
          merged.proxmox_token_value = 'stored';
        const config = validateRunner(merged);
        const sealed =
          config.backend !== 'proxmox'
            ? null
            : newTokenValue !== undefined
              ? this.seal(newTokenValue)
              : current.sealedProxmoxToken;
        const isActive = typeof body.is_active === 'boolean' ? body.is_active : current.isActive;
        const fields = fieldsOf(config);
        const updated = await tx.runners.update(runnerId, fields, sealed, isActive);
        // A new baseline_snapshot is the operator's choice: it replaces what a refresh made current.
        await tx.runnerState.settleBaseline(runnerId, configuredBaseline(fields));
        await tx.audit.record({
          actor: this.actor,
          action: 'update',
          runnerId,
          detail: { fields: Object.keys(body).sort() },
        });
        return storedView(updated!, await tx.runnerState.get(runnerId));
      })
      .then((v) => this.applied(v));
  }

  /** Deactivates a runner: its token stops working, its agent is disconnected. */
  async deactivate(runnerId: string): Promise<{ detail: string }> {
    await this.setFlag(runnerId, 'deactivate', { isActive: false });
    return { detail: `Runner '${runnerId}' deactivated` };
  }

  /**
   * Drains or undrains a runner. A draining runner gets 423 on create and
   * stays paused after its current reset; after `undrain` the reconciler
   * unpauses it (a pass is started at once, see `undrained`).
   */
  async drain(runnerId: string, draining: boolean): Promise<RunnerView> {
    const action = draining ? 'drain' : 'undrain';
    const view = this.d.inventory.inventory.inFile(runnerId)
      ? await this.drainFileRunner(runnerId, action, draining)
      : await this.setFlag(runnerId, action, { draining });
    if (!draining) await this.startUnpause(runnerId, 'undrain');
    return view;
  }

  /**
   * An inventory-file runner's drain: the file holds none, runner_state does
   * (where a baseline refresh drains it too, and may leave it drained).
   */
  private async drainFileRunner(
    runnerId: string,
    action: string,
    draining: boolean,
  ): Promise<RunnerView> {
    const view = await this.d.store.transaction(async (tx) => {
      const changed = await tx.runnerState.setDraining(runnerId, draining);
      await tx.audit.record({ actor: this.actor, action, runnerId, detail: { changed } });
      return this.viewIn(tx, runnerId);
    });
    this.d.log.info({ runnerId, actor: this.actor, action }, 'runner changed');
    return this.applied(view);
  }

  /**
   * Quarantines a runner of the inventory file or the registry (see
   * docs/protocol.md#runner-registry): creates get 423 and it stays paused in
   * its CI system after its current checkpoint, or, idle, is paused now (see
   * `quarantined`). A quarantined runner keeps its first reason; every call
   * is audited.
   */
  async quarantine(runnerId: string, reason: string): Promise<RunnerView> {
    const view = await this.quarantineChange(runnerId, 'quarantine', { reason });
    if (this.d.quarantined)
      await this.d
        .quarantined(runnerId)
        .catch((err: unknown) =>
          this.d.log.error(
            { runnerId, err: (err as Error).message },
            'quarantine: cannot start the workflow that pauses the runner in its CI system; quarantine it again to retry',
          ),
        );
    return view;
  }

  /** Ends a runner's quarantine; the reconciler unpauses it (a pass is started at once). */
  async unquarantine(runnerId: string): Promise<RunnerView> {
    const view = await this.quarantineChange(runnerId, 'unquarantine', null);
    await this.startUnpause(runnerId, 'unquarantine');
    return view;
  }

  private async quarantineChange(
    runnerId: string,
    action: 'quarantine' | 'unquarantine',
    q: { reason: string } | null,
  ): Promise<RunnerView> {
    const updated = await this.d.store.transaction(async (tx) => {
      // 404 before any write: the state table takes any id.
      await this.viewIn(tx, runnerId);
      const change = q
        ? await tx.quarantine.quarantine(runnerId, { reason: q.reason, source: 'operator' })
        : await tx.quarantine.unquarantine(runnerId);
      await tx.audit.record({
        actor: this.actor,
        action,
        runnerId,
        detail: { ...(q ? { reason: q.reason } : {}), changed: change.changed },
      });
      return this.viewIn(tx, runnerId);
    });
    this.d.log.info({ runnerId, actor: this.actor, action }, 'runner changed');
    return this.applied(updated);
  }

  /** Starts a reconciler pass to unpause the runner; a failure is only logged. */
  private async startUnpause(runnerId: string, action: string): Promise<void> {
    if (!this.d.undrained) return;
    await this.d
      .undrained(runnerId)
      .catch((err: unknown) =>
        this.d.log.warn(
          { runnerId, err: (err as Error).message },
          `${action}: cannot start a reconciler pass; the runner is unpaused at the reconciler's next pass`,
        ),
      );
  }

  /** A new token; the old one stops working once this returns. */
  async rotateToken(runnerId: string): Promise<RunnerView & { token: string }> {
    const token = newRunnerToken();
    const v = await this.setFlag(runnerId, 'rotate-token', { tokenHash: sha256(token) });
    return { ...v, token };
  }

  /**
   * A new agent token; the old one (or, for a runner that had none, the REST
   * token) stops opening /ws/agent once this returns, and the runner's live
   * agent sockets are closed 4401 (on other API instances when they re-read
   * the registry).
   */
  async rotateAgentToken(runnerId: string): Promise<RunnerView & { agent_token: string }> {
    const agentToken = newRunnerToken();
    const v = await this.setFlag(runnerId, 'rotate-agent-token', {
      agentTokenHash: sha256(agentToken),
    });
    return { ...v, agent_token: agentToken };
  }

  private async setFlag(
    runnerId: string,
    action: string,
    change: RunnerChange,
  ): Promise<RunnerView> {
    this.refuseFileRunner(runnerId);
    const updated = await this.d.store.transaction(async (tx) => {
      const r = await tx.runners.set(runnerId, change);
      if (!r) throw new HttpError(404, 'Runner not found');
      await tx.audit.record({ actor: this.actor, action, runnerId });
      return r;
    });
    this.d.log.info({ runnerId, actor: this.actor, action }, 'registry runner changed');
    return this.applied(storedView(updated, await this.d.store.runnerState.get(runnerId)));
  }
}
