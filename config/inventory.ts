import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { Logger } from './logger';
import { currentBaselineOf, type RunnerState } from './runner-state';
import { InventoryError, parseRunner, proxmoxBaseUrl, type RunnerConfig } from './runner-schema';

/** Where a runner is defined: `inventory.yml`, or the runner registry (the admin API). */
export type RunnerSource = 'inventory' | 'api';

/**
 * A runner of the registry as the inventory needs it: its config (whose
 * `token` is empty: only the token's SHA-256 is stored), the token digest, and
 * its flags.
 */
export interface RegistryRunner {
  config: RunnerConfig;
  tokenDigest: Buffer;
  /** SHA-256 of the runner's agent token; null: the agent uses `token` (shared credential). */
  agentTokenDigest: Buffer | null;
  isActive: boolean;
  draining: boolean;
}

/**
 * A validated inventory: the file's runners plus the registry's, and the
 * run-time state of both (`runner_state`: quarantine, current baseline, a
 * refresh's drain). Lookups by id; token lookups compare in constant time.
 * Inactive registry runners are not runners for auth, listing or creates, but
 * `forReset` still finds them: a deactivated runner's open checkpoint must
 * still be reset.
 */
export class Inventory {
  /** The active runners: the file's, then the registry's. */
  readonly runners: readonly RunnerConfig[];
  /** How many active runners take GitLab jobs (whose job-status polls share the GitLab budget). */
  readonly gitlabRunnerCount: number;
  private readonly byId: Map<string, RunnerConfig>;
  private readonly inactive: Map<string, RunnerConfig>;
  private readonly drainingIds: Set<string>;
  private readonly quarantinedIds: Set<string>;
  private readonly apiIds: Set<string>;
  private readonly baselines: Map<string, string>;
  private readonly tokenDigests: Array<{ digest: Buffer; runnerId: string }>;
  /** Active runners' agent token digests; a runner without one shares `token` with its jobs. */
  private readonly agentDigests: Map<string, Buffer>;

  /** Throws InventoryError when an active registry runner has the id of a file runner. */
  constructor(
    readonly fileRunners: readonly RunnerConfig[],
    readonly registry: readonly RegistryRunner[] = [],
    readonly states: readonly RunnerState[] = [],
  ) {
    const fileIds = new Set(fileRunners.map((r) => r.runner_id));
    const active = registry.filter((e) => e.isActive);
    const clash = active.find((e) => fileIds.has(e.config.runner_id));
    if (clash) {
      throw new InventoryError(
        `runner '${clash.config.runner_id}' is defined both in the inventory file and in the runner registry: remove it from one of them`,
      );
    }
    this.runners = [...fileRunners, ...active.map((e) => e.config)];
    this.gitlabRunnerCount = this.runners.filter((r) => r.ci_adapter !== 'github').length;
    this.byId = new Map(this.runners.map((r) => [r.runner_id, r]));
    this.inactive = new Map(
      registry.filter((e) => !e.isActive).map((e) => [e.config.runner_id, e.config]),
    );
    const state = new Map(states.map((st) => [st.runnerId, st]));
    // A registry runner's drain is its own column; a refresh drains a file runner in runner_state.
    this.drainingIds = new Set([
      ...active.filter((e) => e.draining).map((e) => e.config.runner_id),
      ...fileRunners.filter((r) => state.get(r.runner_id)?.draining).map((r) => r.runner_id),
    ]);
    this.quarantinedIds = new Set(
      this.runners.filter((r) => state.get(r.runner_id)?.quarantine).map((r) => r.runner_id),
    );
    this.apiIds = new Set(active.map((e) => e.config.runner_id));
    this.baselines = new Map(
      [...this.runners, ...this.inactive.values()].flatMap((r) => {
        if (r.backend !== 'proxmox') return [];
        const current = currentBaselineOf(state.get(r.runner_id), r.baseline_snapshot);
        return current ? [[r.runner_id, current] as const] : [];
      }),
    );
    this.tokenDigests = [
      ...fileRunners.map((r) => ({ digest: sha256(r.token), runnerId: r.runner_id })),
      ...active.map((e) => ({ digest: e.tokenDigest, runnerId: e.config.runner_id })),
    ];
    this.agentDigests = new Map([
      ...fileRunners.flatMap((r) =>
        r.agent_token === undefined ? [] : [[r.runner_id, sha256(r.agent_token)] as const],
      ),
      ...active.flatMap((e) =>
        e.agentTokenDigest ? [[e.config.runner_id, e.agentTokenDigest] as const] : [],
      ),
    ]);
  }

  /** This inventory's file runners with another registry and runner states (throws InventoryError on a clash). */
  withRegistry(
    registry: readonly RegistryRunner[],
    states: readonly RunnerState[] = this.states,
  ): Inventory {
    return new Inventory(this.fileRunners, registry, states);
  }

  /** An active runner. */
  get(runnerId: string): RunnerConfig | undefined {
    return this.byId.get(runnerId);
  }

  /** An active runner, or a deactivated registry runner (whose open checkpoint is still reset). */
  forReset(runnerId: string): RunnerConfig | undefined {
    return this.byId.get(runnerId) ?? this.inactive.get(runnerId);
  }

  /**
   * The snapshot the runner's resets roll back to now: a refresh's while the
   * configured `baseline_snapshot` is the one it replaced, else the configured
   * one (config/runner-state.ts); undefined: none.
   */
  currentBaseline(runnerId: string): string | undefined {
    return this.baselines.get(runnerId);
  }

  /** Where an active runner is defined. */
  sourceOf(runnerId: string): RunnerSource | undefined {
    if (!this.byId.has(runnerId)) return undefined;
    return this.apiIds.has(runnerId) ? 'api' : 'inventory';
  }

  /** Whether the runner is draining (a registry drain, or a refresh's): it takes no new checkpoints. */
  isDraining(runnerId: string): boolean {
    return this.drainingIds.has(runnerId);
  }

  /**
   * Whether the runner is quarantined: it takes no new checkpoints and stays
   * paused. A copy refreshed on the registry's NOTIFY: code that must not act
   * on a stale answer (the unpause) reads store/quarantine.ts instead.
   */
  isQuarantined(runnerId: string): boolean {
    return this.quarantinedIds.has(runnerId);
  }

  /** How many active runners are quarantined. */
  get quarantinedCount(): number {
    return this.quarantinedIds.size;
  }

  /** Whether the file defines this runner id. */
  inFile(runnerId: string): boolean {
    return this.fileRunners.some((r) => r.runner_id === runnerId);
  }

  /**
   * The runner a bearer token belongs to. Every entry is compared, in constant
   * time over equal-length digests, so timing does not reveal a prefix match.
   */
  runnerIdForToken(token: string): string | undefined {
    const probe = sha256(token);
    let found: string | undefined;
    for (const entry of this.tokenDigests) {
      if (timingSafeEqual(entry.digest, probe) && found === undefined) found = entry.runnerId;
    }
    return found;
  }

  /**
   * Whether `token` may open `/ws/agent` for `runnerId`: its agent token when
   * it has one (the REST token is then refused), else its REST token (the
   * old single-token behaviour). Constant time over equal-length digests.
   */
  agentCredential(runnerId: string, token: string): 'ok' | 'rest-token' | 'invalid' {
    if (!this.byId.has(runnerId)) return 'invalid';
    const agentDigest = this.agentDigests.get(runnerId);
    const rest = this.runnerIdForToken(token) === runnerId;
    if (!agentDigest) return rest ? 'ok' : 'invalid';
    if (timingSafeEqual(agentDigest, sha256(token))) return 'ok';
    return rest ? 'rest-token' : 'invalid';
  }

  /** Whether the active runner's agent has a credential of its own. */
  hasAgentToken(runnerId: string): boolean {
    return this.agentDigests.has(runnerId);
  }

  /** Active runners whose agent uses the REST token, which their CI jobs hold too. */
  sharedCredentialRunners(): string[] {
    return this.runners.map((r) => r.runner_id).filter((id) => !this.agentDigests.has(id));
  }

  get size(): number {
    return this.runners.length;
  }
}

/** SHA-256 of a token: what the registry stores and what lookups compare. */
export function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Parses inventory YAML text. `file` is only used in messages. */
export function parseInventory(
  text: string,
  file = 'inventory.yml',
): { inventory: Inventory; warnings: string[] } {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    const first = (err as Error).message.split('\n')[0];
    throw new InventoryError(`${file}: not valid YAML: ${first}`);
  }
  if (doc === null || doc === undefined) return { inventory: new Inventory([]), warnings: [] };
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new InventoryError(`${file}: expected a mapping with a 'runners' list`);
  }
  const list = (doc as Record<string, unknown>).runners;
  if (list === undefined || list === null) return { inventory: new Inventory([]), warnings: [] };
  if (!Array.isArray(list)) throw new InventoryError(`${file}: runners: expected a list`);
  const runners: RunnerConfig[] = [];
  const warnings: string[] = [];
  /** Every token and agent token of the file: each must identify one runner in one role. */
  const seenTokens = new Map<string, { runnerId: string; field: string }>();
  const seenVms = new Map<string, string>();
  list.forEach((raw, i) => {
    const { runner, unknownKeys } = parseRunner(raw, i, file);
    if (runners.some((r) => r.runner_id === runner.runner_id)) {
      throw new InventoryError(`${file}: runner '${runner.runner_id}': runner_id: duplicate`);
    }
    const secrets: Array<[string, string]> = [['token', runner.token]];
    if (runner.agent_token !== undefined) secrets.push(['agent_token', runner.agent_token]);
    for (const [field, value] of secrets) {
      const other = seenTokens.get(value);
      if (!other) continue;
      const same =
        field === 'token' && other.field === 'token'
          ? `same token as runner '${other.runnerId}'`
          : `same value as the ${other.field} of runner '${other.runnerId}'`;
      throw new InventoryError(
        `${file}: runner '${runner.runner_id}': ${field}: ${same} (a token must identify one runner)`,
      );
    }
    for (const [field, value] of secrets)
      seenTokens.set(value, { runnerId: runner.runner_id, field });
    if (runner.backend === 'proxmox') {
      // Two runners resetting one VM would roll back each other's jobs.
      const vm = `${proxmoxBaseUrl(runner)}, node ${runner.proxmox_node}, VMID ${runner.proxmox_vmid}`;
      const owner = seenVms.get(vm);
      if (owner) {
        throw new InventoryError(
          `${file}: runner '${runner.runner_id}': proxmox_vmid: same VM as runner '${owner}' (${vm})`,
        );
      }
      seenVms.set(vm, runner.runner_id);
    }
    if (unknownKeys.length) {
      warnings.push(
        `${file}: runner '${runner.runner_id}': ignoring unknown fields: ${unknownKeys.join(', ')}`,
      );
    }
    runners.push(runner);
  });
  return { inventory: new Inventory(runners), warnings };
}

/** Reads and validates an inventory file. */
export function loadInventoryFile(path: string): { inventory: Inventory; warnings: string[] } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'file not found'
        : code === 'EACCES'
          ? 'permission denied'
          : (err as Error).message;
    throw new InventoryError(`inventory ${path}: ${why}`);
  }
  return parseInventory(text, path);
}

/** Where the runner registry is read from (Postgres, in the controller). */
export interface RegistrySource {
  /** Every registry runner, active or not. */
  load(): Promise<RegistryRunner[]>;
  /** The run-time state of every runner that has one, file or registry. */
  loadStates(): Promise<RunnerState[]>;
}

/**
 * Holds the current inventory: the file's runners, reloaded when the file
 * changes, plus the runner registry's once `attachRegistry` is called. An
 * invalid change (a bad file, a runner id in both) is refused with a log line
 * and the previous inventory stays in force.
 */
export class InventoryStore {
  private current: Inventory;
  private lastFingerprint: string;
  private registryFingerprint = '';
  private timer: NodeJS.Timeout | undefined;
  private registryTimer: NodeJS.Timeout | undefined;
  private registry: RegistrySource | undefined;
  /** Registry reads run one at a time, so an older read never lands after a newer one. */
  private registryChain: Promise<boolean> = Promise.resolve(false);
  private readonly listeners = new Set<(inventory: Inventory) => void>();
  readonly path: string;

  private constructor(
    path: string,
    initial: Inventory,
    fingerprint: string,
    private readonly log: Logger,
  ) {
    this.path = path;
    this.current = initial;
    this.lastFingerprint = fingerprint;
  }

  /** Loads the file once (throws InventoryError when invalid) and logs warnings. */
  static load(path: string, log: Logger): InventoryStore {
    const abs = resolve(path);
    const { inventory, warnings } = loadInventoryFile(abs);
    for (const w of warnings) log.warn({ inventory: abs }, w);
    log.info({ inventory: abs, runners: inventory.size }, 'inventory loaded');
    return new InventoryStore(abs, inventory, fileFingerprint(abs), log);
  }

  get inventory(): Inventory {
    return this.current;
  }

  /** Re-reads the file now; returns whether a new inventory took effect. */
  reload(): boolean {
    const fp = fileFingerprint(this.path);
    if (fp === this.lastFingerprint) return false;
    this.lastFingerprint = fp;
    try {
      const { inventory: file, warnings } = loadInventoryFile(this.path);
      const inventory = file.withRegistry(this.current.registry, this.current.states);
      for (const w of warnings) this.log.warn({ inventory: this.path }, w);
      this.current = inventory;
      this.log.info({ inventory: this.path, runners: inventory.size }, 'inventory reloaded');
      this.notify(inventory);
      return true;
    } catch (err) {
      this.log.error(
        { inventory: this.path, err: (err as Error).message },
        `inventory change refused, keeping the previous inventory: ${(err as Error).message}`,
      );
      return false;
    }
  }

  /**
   * Adds the runner registry: reads it now (throws InventoryError when one of
   * its active runners is also in the file: a startup error naming it), then
   * re-reads it every `intervalMs` and on `refreshRegistry()` (called on each
   * NOTIFY of a change).
   */
  async attachRegistry(source: RegistrySource, intervalMs: number): Promise<void> {
    const [entries, states] = await Promise.all([source.load(), source.loadStates()]);
    const inventory = this.current.withRegistry(entries, states);
    this.registry = source;
    this.registryFingerprint = registryFingerprint(entries, states);
    this.current = inventory;
    this.log.info(
      { inventory: this.path, runners: inventory.size, registry: entries.length },
      'runner registry loaded',
    );
    this.registryTimer = setInterval(() => void this.refreshRegistry(), intervalMs);
    this.registryTimer.unref();
  }

  /** Re-reads the registry now; resolves whether a new inventory took effect. Never rejects. */
  refreshRegistry(): Promise<boolean> {
    const source = this.registry;
    if (!source) return Promise.resolve(false);
    this.registryChain = this.registryChain.then(async () => {
      try {
        const [entries, states] = await Promise.all([source.load(), source.loadStates()]);
        const fp = registryFingerprint(entries, states);
        if (fp === this.registryFingerprint) return false;
        this.registryFingerprint = fp;
        const inventory = this.current.withRegistry(entries, states);
        this.current = inventory;
        this.log.info(
          { runners: inventory.size, registry: entries.length },
          'runner registry reloaded',
        );
        this.notify(inventory);
        return true;
      } catch (err) {
        this.log.error(
          { err: (err as Error).message },
          `runner registry change not applied, keeping the previous inventory: ${(err as Error).message}`,
        );
        return false;
      }
    });
    return this.registryChain;
  }

  /**
   * Calls `listener` with each new inventory once it took effect (not for a
   * refused change). Returns a function that removes the listener.
   */
  onChange(listener: (inventory: Inventory) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(inventory: Inventory): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(inventory);
      } catch (err) {
        this.log.error(
          { inventory: this.path, err: (err as Error).message },
          'inventory change listener failed',
        );
      }
    }
  }

  /**
   * Checks the file's content every `intervalMs`. Polling the content (not
   * fs.watch events or mtimes) survives editors that replace the file and
   * writes within one mtime tick; the file is small.
   */
  watch(intervalMs = 1000): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.reload(), intervalMs);
    this.timer.unref();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.registryTimer) clearInterval(this.registryTimer);
    this.timer = undefined;
    this.registryTimer = undefined;
    this.registry = undefined;
  }
}

/** What a registry read must differ in to count as a change (digests, never tokens). */
function registryFingerprint(
  entries: readonly RegistryRunner[],
  states: readonly RunnerState[],
): string {
  const h = createHash('sha256');
  for (const e of [...entries].sort((a, b) => a.config.runner_id.localeCompare(b.config.runner_id)))
    h.update(
      JSON.stringify([
        e.config,
        e.tokenDigest.toString('hex'),
        e.agentTokenDigest?.toString('hex') ?? null,
        e.isActive,
        e.draining,
      ]),
    ).update('\n');
  for (const st of [...states].sort((a, b) => a.runnerId.localeCompare(b.runnerId)))
    h.update(JSON.stringify(st)).update('\n');
  return h.digest('hex');
}

function fileFingerprint(path: string): string {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch {
    return 'missing';
  }
}
