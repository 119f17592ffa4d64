import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import type { Logger } from './logger';

/** Raised for an unreadable or invalid inventory; the message names runner and field. */
export class InventoryError extends Error {
  override name = 'InventoryError';
}

/**
 * A runner_id is stored in varchar(255) columns (checkpoints, operation_logs,
 * agent_sessions, agent_commands) and is part of the Temporal workflow id
 * `e2epool-runner-<id>`: at most 255 characters, no control characters or NUL
 * (Postgres refuses NUL in text), and ASCII word characters only.
 */
const RUNNER_ID_MAX = 255;
const ID_RE = /^[\w.-]+$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
const FINGERPRINT_RE = /^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$/;

/** owner/name of a GitHub repository (GitHub allows letters, digits, `-`, `_` and `.`). */
const GITHUB_REPO_RE = /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/;
const GITHUB_ORG_RE = /^[A-Za-z0-9_.-]+$/;
/**
 * The labels every self-hosted runner gets at registration (`self-hosted`,
 * its OS and its architecture): read-only, GitHub does not let them go.
 */
export const GITHUB_DEFAULT_LABELS = [
  'self-hosted',
  'linux',
  'windows',
  'macos',
  'x64',
  'arm',
  'arm64',
];

/** Longest hold for debugging a runner may ask for (seconds). */
export const HOLD_ON_FAILURE_MAX = 7 * 24 * 3600;

const nonEmpty = z.string({ error: 'expected a string' }).trim().min(1, 'must not be empty');
const optionalCmd = nonEmpty.optional();

const common = {
  runner_id: z
    .string({ error: 'expected a string' })
    .refine((id) => !CONTROL_RE.test(id), 'must not contain control characters or NUL')
    .max(
      RUNNER_ID_MAX,
      `at most ${RUNNER_ID_MAX} characters (the length of the database's runner_id columns)`,
    )
    .regex(ID_RE, 'expected 1-255 of letters, digits, _ . -'),
  token: z
    .string({ error: 'expected a string' })
    .min(1, 'must not be empty')
    .refine((t) => !/\s/.test(t), 'must not contain white space'),
  /**
   * New: the agent's own WebSocket credential. With it, /ws/agent accepts only
   * this, not `token`: a CI job holding the REST token cannot stand in for the
   * agent. A secret, like `token`: never logged.
   */
  agent_token: z
    .string({ error: 'expected a string' })
    .min(1, 'must not be empty')
    .refine((t) => !/\s/.test(t), 'must not contain white space')
    .optional(),
  reset_cmd: optionalCmd,
  cleanup_cmd: optionalCmd,
  readiness_cmd: optionalCmd,
  gitlab_runner_id: z
    .number({ error: 'expected an integer' })
    .int('expected an integer')
    .positive('must be positive')
    .optional(),
  /** New: the CI system whose jobs run here: GitLab CI (the default) or GitHub Actions. */
  ci_adapter: z
    .enum(['gitlab', 'github'], { error: "expected 'gitlab' or 'github'" })
    .default('gitlab'),
  /** GitHub: the repository a repository-level runner is registered in. */
  github_repo: z
    .string({ error: 'expected owner/name' })
    .regex(GITHUB_REPO_RE, 'expected owner/name (letters, digits, _ . -)')
    .refine(
      (v) => v.split('/').every((p) => p !== '.' && p !== '..'),
      "expected owner/name, not '.' or '..'",
    )
    .optional(),
  /** GitHub: the organization an organization-level runner is registered in. */
  github_org: z
    .string({ error: 'expected an organization name' })
    .regex(GITHUB_ORG_RE, 'expected an organization name (letters, digits, _ . -)')
    .refine((v) => v !== '.' && v !== '..', "expected an organization name, not '.' or '..'")
    .optional(),
  /** GitHub: the self-hosted runner's id (`GET .../actions/runners` lists it). */
  github_runner_id: z
    .number({ error: 'expected an integer' })
    .int('expected an integer')
    .positive('must be positive')
    .optional(),
  /**
   * GitHub: the custom labels the e2e jobs select this runner by (`runs-on`);
   * e2epool removes them during a reset and puts them back after.
   */
  github_pause_labels: z
    .array(
      z
        .string({ error: 'expected a list of label names' })
        .min(1, 'a label must not be empty')
        .max(100, 'a label has at most 100 characters')
        .refine((l) => !/[\s,]/.test(l) && !CONTROL_RE.test(l), 'a label has no spaces or commas')
        .refine((l) => !GITHUB_DEFAULT_LABELS.includes(l.toLowerCase()), {
          error: (iss) =>
            `'${String(iss.input)}' is a default label of self-hosted runners: GitHub does not let it be removed`,
        }),
      { error: 'expected a list of label names' },
    )
    .optional(),
  tags: z
    .array(z.string({ error: 'expected a list of strings' }), {
      error: 'expected a list of strings',
    })
    .default([]),
  /** New: take the reset path on success too (e.g. runners whose jobs dirty the disk). */
  reset_on_success: z.boolean({ error: 'expected true or false' }).default(false),
  /**
   * New: after a failed job, keep the runner paused and un-reset this long so
   * someone can log in and look. Capped: a longer hold is a forgotten runner.
   */
  hold_on_failure_seconds: z
    .number({ error: 'expected a whole number of seconds' })
    .int('expected a whole number of seconds')
    .min(0, 'must be 0 (no hold) or more')
    .max(HOLD_ON_FAILURE_MAX, `at most ${HOLD_ON_FAILURE_MAX} (7 days)`)
    .default(0),
};

/** A Proxmox runner's fields (shared by inventory.yml and the admin API). */
export const proxmoxSchema = z.object({
  ...common,
  backend: z.literal('proxmox'),
  proxmox_host: nonEmpty,
  proxmox_user: z
    .string({ error: 'expected a string' })
    .regex(/^[^\s:/@]+@[A-Za-z][A-Za-z0-9.\-_]+$/, 'expected user@realm'),
  proxmox_token_name: z
    .string({ error: 'expected a string' })
    .regex(
      /^[A-Za-z][A-Za-z0-9.\-_]+$/,
      'expected a Proxmox token id (letter, then letters, digits, . - _)',
    ),
  proxmox_token_value: nonEmpty,
  proxmox_node: nonEmpty,
  proxmox_vmid: z
    .number({ error: 'expected an integer' })
    .int('expected an integer')
    .min(100, 'expected a VMID between 100 and 999999999')
    .max(999999999, 'expected a VMID between 100 and 999999999'),
  /** New: TLS verification is on unless explicitly disabled (fix of the old verify_ssl=False). */
  proxmox_verify_tls: z.boolean({ error: 'expected true or false' }).default(true),
  proxmox_ca_file: nonEmpty.optional(),
  proxmox_fingerprint: z
    .string()
    .regex(FINGERPRINT_RE, 'expected a SHA-256 fingerprint AB:CD:... (32 pairs)')
    .optional(),
});

/** A bare-metal runner's fields (shared by inventory.yml and the admin API). */
export const bareMetalSchema = z.object({
  ...common,
  backend: z.literal('bare_metal'),
  reset_cmd: nonEmpty,
});

export type ProxmoxRunner = z.infer<typeof proxmoxSchema>;
export type BareMetalRunner = z.infer<typeof bareMetalSchema>;
export type RunnerConfig = ProxmoxRunner | BareMetalRunner;

const KNOWN_KEYS = new Set([
  ...Object.keys(proxmoxSchema.shape),
  ...Object.keys(bareMetalSchema.shape),
]);

function fieldPath(path: PropertyKey[]): string {
  return path.map((p) => String(p)).join('.') || '(runner)';
}

/** A runner_id as shown in a message: one line, control characters escaped, shortened. */
function printableId(id: string): string {
  const escaped = JSON.stringify(id)
    .slice(1, -1)
    .replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return escaped.length > 64 ? `${escaped.slice(0, 64)}…` : escaped;
}

const GITHUB_FIELDS = [
  'github_repo',
  'github_org',
  'github_runner_id',
  'github_pause_labels',
] as const;

/**
 * What is wrong with the runner's CI fields taken together (`field: why`),
 * or undefined. Each adapter has its own way to keep jobs off the runner
 * during a reset, and a GitHub runner's labels are only ever removed when
 * e2epool knows where the runner lives and which labels the jobs select.
 */
export function ciAdapterProblem(r: RunnerConfig): string | undefined {
  if (r.ci_adapter === 'gitlab') {
    const f = GITHUB_FIELDS.find((k) => r[k] !== undefined);
    return f ? `${f}: only for ci_adapter: github` : undefined;
  }
  if (r.gitlab_runner_id !== undefined)
    return 'gitlab_runner_id: only for ci_adapter: gitlab (a GitHub runner has github_runner_id)';
  if (r.github_repo !== undefined && r.github_org !== undefined)
    return "github_org: set github_repo (a repository's runner) or github_org (an organization's runner), not both";
  const labels = r.github_pause_labels;
  if (labels !== undefined && r.github_runner_id === undefined)
    return 'github_pause_labels: needs github_runner_id (the runner whose labels they are)';
  if (r.github_runner_id === undefined) return undefined;
  if (r.github_repo === undefined && r.github_org === undefined)
    return 'github_runner_id: needs github_repo or github_org (where the runner is registered)';
  if (!labels?.length)
    return 'github_pause_labels: required with github_runner_id: the labels the e2e jobs select (runs-on), removed during a reset';
  const seen = new Set<string>();
  for (const l of labels) {
    // GitHub matches labels without regard to case.
    if (seen.has(l.toLowerCase())) return `github_pause_labels: '${l}' is listed twice`;
    seen.add(l.toLowerCase());
  }
  return undefined;
}

/** Validates one runner entry; throws InventoryError naming the runner and field. */
export function parseRunner(
  raw: unknown,
  index: number,
  file: string,
): { runner: RunnerConfig; unknownKeys: string[] } {
  const where = `${file}: runners[${index}]`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InventoryError(`${where}: expected a mapping of runner fields`);
  }
  const obj = raw as Record<string, unknown>;
  const id = typeof obj.runner_id === 'string' ? obj.runner_id : undefined;
  const who = id ? `${file}: runner '${printableId(id)}'` : where;
  if (obj.runner_id === undefined) throw new InventoryError(`${where}: runner_id: required`);
  const backend = obj.backend;
  let result;
  if (backend === 'proxmox') result = proxmoxSchema.safeParse(obj);
  else if (backend === 'bare_metal') result = bareMetalSchema.safeParse(obj);
  else {
    const got = backend === undefined ? 'missing' : `'${String(backend)}'`;
    throw new InventoryError(`${who}: backend: must be 'proxmox' or 'bare_metal' (got ${got})`);
  }
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = fieldPath(issue.path);
    const missing = issue.code === 'invalid_type' && obj[String(issue.path[0])] === undefined;
    const msg = missing ? `required for backend ${String(backend)}` : issue.message;
    throw new InventoryError(`${who}: ${field}: ${msg}`);
  }
  const runner = result.data as RunnerConfig;
  if (runner.agent_token !== undefined && runner.agent_token === runner.token) {
    // A job holds `token`: an agent token equal to it protects nothing.
    throw new InventoryError(`${who}: agent_token: must differ from token`);
  }
  const ci = ciAdapterProblem(runner);
  if (ci) throw new InventoryError(`${who}: ${ci}`);
  if (runner.backend === 'proxmox') {
    try {
      proxmoxBaseUrl(runner);
    } catch (err) {
      throw new InventoryError(`${who}: proxmox_host: ${(err as Error).message}`);
    }
  }
  return { runner, unknownKeys: Object.keys(obj).filter((k) => !KNOWN_KEYS.has(k)) };
}

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
 * A validated inventory: the file's runners plus the registry's. Lookups by
 * id; token lookups compare in constant time. Inactive registry runners are
 * not runners for auth, listing or creates, but `forReset` still finds them:
 * a deactivated runner's open checkpoint must still be reset.
 */
export class Inventory {
  /** The active runners: the file's, then the registry's. */
  readonly runners: readonly RunnerConfig[];
  /** How many active runners take GitLab jobs (whose job-status polls share the GitLab budget). */
  readonly gitlabRunnerCount: number;
  private readonly byId: Map<string, RunnerConfig>;
  private readonly inactive: Map<string, RunnerConfig>;
  private readonly drainingIds: Set<string>;
  private readonly apiIds: Set<string>;
  private readonly tokenDigests: Array<{ digest: Buffer; runnerId: string }>;
  /** Active runners' agent token digests; a runner without one shares `token` with its jobs. */
  private readonly agentDigests: Map<string, Buffer>;

  /** Throws InventoryError when an active registry runner has the id of a file runner. */
  constructor(
    readonly fileRunners: readonly RunnerConfig[],
    readonly registry: readonly RegistryRunner[] = [],
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
    this.drainingIds = new Set(active.filter((e) => e.draining).map((e) => e.config.runner_id));
    this.apiIds = new Set(active.map((e) => e.config.runner_id));
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

  /** This inventory's file runners with another registry (throws InventoryError on a clash). */
  withRegistry(registry: readonly RegistryRunner[]): Inventory {
    return new Inventory(this.fileRunners, registry);
  }

  /** An active runner. */
  get(runnerId: string): RunnerConfig | undefined {
    return this.byId.get(runnerId);
  }

  /** An active runner, or a deactivated registry runner (whose open checkpoint is still reset). */
  forReset(runnerId: string): RunnerConfig | undefined {
    return this.byId.get(runnerId) ?? this.inactive.get(runnerId);
  }

  /** Where an active runner is defined. */
  sourceOf(runnerId: string): RunnerSource | undefined {
    if (!this.byId.has(runnerId)) return undefined;
    return this.apiIds.has(runnerId) ? 'api' : 'inventory';
  }

  /** Whether the runner is draining: it takes no new checkpoints. */
  isDraining(runnerId: string): boolean {
    return this.drainingIds.has(runnerId);
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

/** The Proxmox API base URL of a runner: `proxmox_host` may be host, host:port or a URL. */
export function proxmoxBaseUrl(r: Pick<ProxmoxRunner, 'proxmox_host'>): string {
  const host = r.proxmox_host.trim();
  const withScheme = /^[a-z]+:\/\//i.test(host) ? host : `https://${host}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new Error(
      `expected a host name, host:port or https:// URL (got ${JSON.stringify(host)})`,
    );
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new Error('expected an https:// URL');
  if (!url.port && !/^[a-z]+:\/\//i.test(host)) url.port = '8006';
  return `${url.protocol}//${url.host}`;
}

/** Where the runner registry is read from (Postgres, in the controller). */
export interface RegistrySource {
  /** Every registry runner, active or not. */
  load(): Promise<RegistryRunner[]>;
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
      const inventory = file.withRegistry(this.current.registry);
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
    const entries = await source.load();
    const inventory = this.current.withRegistry(entries);
    this.registry = source;
    this.registryFingerprint = registryFingerprint(entries);
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
        const entries = await source.load();
        const fp = registryFingerprint(entries);
        if (fp === this.registryFingerprint) return false;
        this.registryFingerprint = fp;
        const inventory = this.current.withRegistry(entries);
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
function registryFingerprint(entries: readonly RegistryRunner[]): string {
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
  return h.digest('hex');
}

function fileFingerprint(path: string): string {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch {
    return 'missing';
  }
}
