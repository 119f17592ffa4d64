/**
 * A runner entry: its zod schemas (shared by inventory.yml and the admin API),
 * the checks across its fields, and the one validation both use.
 */
import { z } from 'zod';
import { VERIFY_MODES } from '../common/verify-mode';

export {
  canaryPathOf,
  DEFAULT_CANARY_PATH,
  VERIFY_MODES,
  verifyModeOf,
  type VerifyFields,
  type VerifyMode,
} from '../common/verify-mode';

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

/**
 * Proxmox's `pve-configid` (what a snapshot name must match), at most 40
 * characters; `current` and `pending` are reserved by Proxmox.
 */
const SNAPSHOT_NAME_RE = /^[a-z][a-z0-9_-]+$/i;
const RESERVED_SNAPSHOT_NAMES = ['current', 'pending'];

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
  /**
   * New: how a reset is proven (see verifyModeOf for the default, which
   * depends on the backend). Left unset here so that an unset value keeps
   * following the backend's default if that ever changes.
   */
  verify_reset: z
    .enum(VERIFY_MODES, { error: "expected 'canary', 'required' or 'off'" })
    .optional(),
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
  /**
   * New: the snapshot every reset rolls back to (a golden baseline); without
   * it, each checkpoint takes and rolls back to a snapshot of its own.
   */
  baseline_snapshot: z
    .string({ error: 'expected a Proxmox snapshot name' })
    .regex(
      SNAPSHOT_NAME_RE,
      'expected a Proxmox snapshot name (a letter, then letters, digits, _ or -; at least 2 characters)',
    )
    .max(40, 'a Proxmox snapshot name has at most 40 characters')
    .refine((v) => !RESERVED_SNAPSHOT_NAMES.includes(v.toLowerCase()), {
      error: (iss) => `'${String(iss.input)}' is reserved by Proxmox`,
    })
    .optional(),
  /** New: the guest file the canary nonce is written to (through the QEMU guest agent). */
  canary_path: z
    .string({ error: 'expected an absolute path' })
    .max(4096, 'at most 4096 characters')
    .refine((v) => !CONTROL_RE.test(v), 'must not contain control characters or NUL')
    .refine(
      (v) => v.startsWith('/') && !v.endsWith('/'),
      'expected an absolute path to a file (starting with /)',
    )
    .refine((v) => !v.split('/').includes('..'), "must not contain '..'")
    .optional(),
});

/** A bare-metal runner's fields (shared by inventory.yml and the admin API). */
export const bareMetalSchema = z.object({
  ...common,
  backend: z.literal('bare_metal'),
  reset_cmd: nonEmpty,
  /** New: run through the agent after reset_cmd; exit 0 proves the reset. */
  verify_cmd: optionalCmd,
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

/** Fields that belong to one backend only, and why (a field of the other backend is refused). */
const BACKEND_ONLY: Record<string, { backend: string; why: string }> = {
  baseline_snapshot: {
    backend: 'proxmox',
    why: 'a bare-metal runner is reset by its reset_cmd, not to a snapshot',
  },
  canary_path: {
    backend: 'proxmox',
    why: 'the canary is written through the Proxmox guest agent; a bare-metal runner verifies with verify_cmd',
  },
  verify_cmd: {
    backend: 'bare_metal',
    why: 'a Proxmox runner proves its reset with the canary (verify_reset, canary_path)',
  },
};

/**
 * What is wrong with the runner's reset-proof fields (`field: why`), or
 * undefined. Reads the raw entry: the schemas drop a field of the other
 * backend silently, which would turn a misplaced `baseline_snapshot` into
 * a runner that is quietly never reset to it.
 */
export function verifyFieldsProblem(raw: Record<string, unknown>): string | undefined {
  const backend = raw.backend;
  for (const [field, only] of Object.entries(BACKEND_ONLY)) {
    if (raw[field] !== undefined && raw[field] !== null && backend !== only.backend)
      return `${field}: only for backend ${only.backend} (${only.why})`;
  }
  if (backend !== 'bare_metal') return undefined;
  if (raw.verify_reset === 'canary')
    return "verify_reset: 'canary' needs the Proxmox guest agent; a bare-metal runner verifies with verify_cmd (use required or off)";
  if (raw.verify_reset === 'required' && (raw.verify_cmd === undefined || raw.verify_cmd === null))
    return 'verify_reset: required needs verify_cmd (the command that proves the reset)';
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
  const misplaced = verifyFieldsProblem(obj);
  if (misplaced) throw new InventoryError(`${who}: ${misplaced}`);
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
