import { z } from 'zod';

/** Raised for an invalid setting; `message` is the single line printed at exit. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const seconds = (def: number, opts: { min?: number } = {}) =>
  z.coerce
    .number({ error: 'expected a number of seconds' })
    .refine((n) => Number.isFinite(n), 'expected a finite number of seconds')
    .refine((n) => n >= (opts.min ?? 0), `must be >= ${opts.min ?? 0}`)
    .default(def);

const positiveSeconds = (def: number) =>
  z.coerce
    .number({ error: 'expected a number of seconds' })
    .refine((n) => Number.isFinite(n) && n > 0, 'must be a positive number of seconds')
    .default(def);

const integer = (def: number, min: number, max: number) =>
  z.coerce
    .number({ error: 'expected an integer' })
    .int(`expected an integer between ${min} and ${max}`)
    .min(min, `expected an integer between ${min} and ${max}`)
    .max(max, `expected an integer between ${min} and ${max}`)
    .default(def);

/** A positive rate (requests per second, or per `per`), fractions allowed. */
const positiveRate = (def: number, per = 'second') =>
  z.coerce
    .number({ error: `expected a number of requests per ${per}` })
    .refine((n) => Number.isFinite(n) && n > 0, `must be a positive number of requests per ${per}`)
    .default(def);

/** A share strictly between 0 and 1. */
const share = (def: number) =>
  z.coerce
    .number({ error: 'expected a number between 0 and 1' })
    .refine(
      (n) => Number.isFinite(n) && n > 0 && n < 1,
      'must be a number between 0 and 1 (exclusive)',
    )
    .default(def);

const bool = (def: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'], { error: 'expected true or false' })
    .transform((v) => v === 'true' || v === '1' || v === 'yes')
    .default(def);

/** The admin token opens every runner's secrets and the fleet: too short to guess offline is too short. */
export const ADMIN_TOKEN_MIN_LENGTH = 32;

const httpUrl = z
  .url({ protocol: /^https?$/, error: 'expected an http(s) URL' })
  .transform((u) => u.replace(/\/+$/, ''));

/**
 * Every controller setting, keyed by its environment variable. Settings the
 * Python implementation had keep its defaults.
 */
const schema = z.object({
  E2EPOOL_DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'expected a postgres:// or postgresql:// URL')
    .default('postgresql://e2epool:e2epool@localhost:5432/e2epool'),
  E2EPOOL_INVENTORY_PATH: z.string().min(1, 'must not be empty').default('inventory.yml'),
  E2EPOOL_CHECKPOINT_TTL_SECONDS: positiveSeconds(1800),
  E2EPOOL_POLLER_ENABLED: bool(true),
  E2EPOOL_POLLER_INTERVAL_SECONDS: positiveSeconds(20),
  E2EPOOL_POLLER_MIN_AGE_SECONDS: seconds(120),
  E2EPOOL_FINALIZE_COOLDOWN_SECONDS: seconds(5),
  E2EPOOL_READINESS_TIMEOUT_SECONDS: positiveSeconds(120),
  E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: positiveSeconds(5),
  E2EPOOL_DB_POOL_SIZE: integer(10, 1, 1000),
  E2EPOOL_HTTP_TIMEOUT: positiveSeconds(30),
  E2EPOOL_WS_HEARTBEAT_INTERVAL: positiveSeconds(30),
  E2EPOOL_WS_HEARTBEAT_TIMEOUT: positiveSeconds(90),
  E2EPOOL_GITLAB_URL: httpUrl.optional(),
  E2EPOOL_TEMPORAL_UI_URL: httpUrl.optional(),
  E2EPOOL_GITLAB_TOKEN: z.string().min(1, 'must not be empty when set').optional(),
  E2EPOOL_GITLAB_WEBHOOK_SECRET: z.string().min(1, 'must not be empty when set').optional(),
  E2EPOOL_GITHUB_WEBHOOK_SECRET: z.string().min(1, 'must not be empty when set').optional(),
  E2EPOOL_GITLAB_MAX_RPS: positiveRate(10),
  E2EPOOL_GITLAB_POLL_SHARE: share(0.35),
  E2EPOOL_ADMIN_TOKEN: z
    .string()
    .refine((t) => !/\s/.test(t), 'must not contain white space')
    // The example env file's placeholder would otherwise be a token anyone who read it knows.
    .refine(
      (t) => !/change-?me/i.test(t),
      'is the example placeholder (CHANGE-ME); set a random token, e.g. openssl rand -hex 32',
    )
    .refine(
      (t) => t.length >= ADMIN_TOKEN_MIN_LENGTH,
      `must be at least ${ADMIN_TOKEN_MIN_LENGTH} characters (e.g. openssl rand -hex 32)`,
    )
    .optional(),
  E2EPOOL_AUTH_FAILURE_BURST: integer(10, 1, 1_000_000),
  E2EPOOL_AUTH_FAILURE_PER_MINUTE: positiveRate(6, 'minute'),
  E2EPOOL_READINESS_BURST: integer(5, 1, 1_000_000),
  E2EPOOL_READINESS_PER_SECOND: positiveRate(1),
  E2EPOOL_METRICS_TOKEN: z
    .string()
    .refine((t) => !/\s/.test(t), 'must not contain white space')
    .refine((t) => t.length >= 16, 'must be at least 16 characters when set')
    .optional(),
  E2EPOOL_METRICS_CACHE_SECONDS: seconds(5),
  E2EPOOL_METRICS_FINDINGS_SECONDS: seconds(60),
  E2EPOOL_SECRET_KEY: z.string().min(16, 'must be at least 16 characters when set').optional(),
  E2EPOOL_REGISTRY_RELOAD_SECONDS: positiveSeconds(2),
  // GitHub Enterprise Server: https://<host>/api/v3.
  E2EPOOL_GITHUB_URL: httpUrl.default('https://api.github.com'),
  E2EPOOL_GITHUB_TOKEN: z.string().min(1, 'must not be empty when set').optional(),
  E2EPOOL_RESET_MAX_ATTEMPTS: integer(5, 1, 100),
  E2EPOOL_FINALIZE_ACK_SECONDS: seconds(10),
  E2EPOOL_CREATE_TIMEOUT_SECONDS: positiveSeconds(25),
  E2EPOOL_UNPAUSE_RETRY_SECONDS: positiveSeconds(300),
  E2EPOOL_RECONCILE_INTERVAL_SECONDS: positiveSeconds(60),
  E2EPOOL_RECONCILE_REPAIR: bool(true),
  E2EPOOL_RECONCILE_MIN_AGE_SECONDS: seconds(30),
  E2EPOOL_QUARANTINE_AFTER: integer(3, 1, 1000),
  E2EPOOL_QUARANTINE_MAX_PERCENT: integer(20, 0, 100),
  E2EPOOL_RETENTION_DAYS: integer(30, 1, 3650),
  E2EPOOL_LOG_MAX_LINES: integer(10_000, 1, 10_000_000),
  E2EPOOL_LOG_STREAMS_PER_RUNNER: integer(8, 1, 10_000),
  E2EPOOL_LOG_STREAMS_MAX: integer(500, 1, 100_000),
  E2EPOOL_LOG_STREAM_STALL_SECONDS: positiveSeconds(60),
  E2EPOOL_COMMAND_TIMEOUT_SECONDS: positiveSeconds(600),
  E2EPOOL_PROXMOX_TASK_POLL_SECONDS: positiveSeconds(1),
  E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS: positiveSeconds(600),
  E2EPOOL_HOST: z.string().min(1).default('0.0.0.0'),
  E2EPOOL_PORT: integer(8080, 0, 65535),
  E2EPOOL_WORKER_METRICS_PORT: integer(9464, 0, 65535),
  E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS: integer(250, 2, 100_000),
  E2EPOOL_TASK_QUEUE: z
    .string()
    .regex(/^[\w.-]{1,200}$/, 'expected 1-200 characters of letters, digits, _ . -')
    .default('e2epool'),
  E2EPOOL_LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
      error: 'expected one of fatal, error, warn, info, debug, trace, silent',
    })
    .default('info'),
});

type Raw = z.infer<typeof schema>;

/** The environment variable of each controller setting. */
export type ControllerSettingName = keyof typeof schema.shape;

/** Each controller setting's default (undefined: unset), as the schema applies it (docs/reference.md's table). */
export function controllerSettingDefaults(): Partial<Record<ControllerSettingName, unknown>> {
  return schema.parse({});
}

/** Validated controller settings with friendly names. */
export interface Settings {
  databaseUrl: string;
  inventoryPath: string;
  checkpointTtlSeconds: number;
  pollerEnabled: boolean;
  pollerIntervalSeconds: number;
  pollerMinAgeSeconds: number;
  finalizeCooldownSeconds: number;
  readinessTimeoutSeconds: number;
  readinessPollIntervalSeconds: number;
  dbPoolSize: number;
  httpTimeoutSeconds: number;
  wsHeartbeatIntervalSeconds: number;
  wsHeartbeatTimeoutSeconds: number;
  gitlabUrl: string | undefined;
  gitlabToken: string | undefined;
  /** The Temporal Web UI's base URL: the fleet page links refresh workflows to it; unset: no links. */
  temporalUiUrl: string | undefined;
  /** `X-Gitlab-Token` of GitLab's job webhook; unset: the webhook answers 503. */
  gitlabWebhookSecret: string | undefined;
  /**
   * GitLab requests per second of the whole fleet (every worker together):
   * the rate limit of the GitLab task queues, see common/gitlab-budget.ts.
   */
  gitlabMaxRps: number;
  /** The share of gitlabMaxRps that job-status polls get; pauses and unpauses get the rest. */
  gitlabPollShare: number;
  /** HMAC key of GitHub's `workflow_job` webhook; unset: the webhook answers 503. */
  githubWebhookSecret: string | undefined;
  /**
   * The admin bearer token (see docs/protocol.md#runner-registry): the fleet page's login and admin reads
   * of checkpoint logs. Unset: admin calls answer 503 and the fleet page
   * cannot be logged into.
   */
  adminToken: string | undefined;
  /** Wrong admin tokens (bearer or fleet-page login) a client may send at once before it gets 429. */
  authFailureBurst: number;
  /** How many more wrong admin tokens a client may send per minute once its burst is spent. */
  authFailurePerMinute: number;
  /** `GET /runner/readiness` calls a runner may make at once (each starts a workflow) before it gets 429. */
  readinessBurst: number;
  /** Sustained `GET /runner/readiness` calls per second per runner. */
  readinessPerSecond: number;
  /** Bearer token `GET /metrics` requires; unset: /metrics is open. */
  metricsToken: string | undefined;
  /** One collection of `GET /metrics` serves every scrape for this long (concurrent scrapes always share one). */
  metricsCacheSeconds: number;
  /** The reconciler findings (a count over operation_logs) are re-read at most this often. */
  metricsFindingsSeconds: number;
  /**
   * Encrypts the Proxmox token values of registry runners at rest (AES-256-GCM,
   * key derived with HKDF). Unset: the admin API refuses to store one.
   */
  secretKey: string | undefined;
  /** How often the runner registry is re-read besides its NOTIFY (the fallback when a notice is missed). */
  registryReloadSeconds: number;
  /** GitHub's REST API (api.github.com, or GitHub Enterprise Server's /api/v3). */
  githubUrl: string;
  /**
   * Token for the GitHub REST API (job status; runner labels, which need admin
   * rights on the repository or organization); unset: GitHub runners are
   * neither polled nor "paused". A secret: never logged, never in a workflow.
   */
  githubToken: string | undefined;
  /** Attempts of each reset step before a checkpoint needs an operator. */
  resetMaxAttempts: number;
  /** How long a hook finalize waits for the GitLab pause before answering 202 anyway. */
  finalizeAckSeconds: number;
  /**
   * How long a create may take before its caller gets 504 and the checkpoint
   * is compensated: under the agent CLI's 30 s, so nobody waits on a create
   * that would later hold the runner.
   */
  createTimeoutSeconds: number;
  /** How often a checkpoint whose unpause GitLab refused tries again (an operator's `retry` tries at once). */
  unpauseRetrySeconds: number;
  /** How often the reconciler compares Postgres with Temporal and repairs what differs. */
  reconcileIntervalSeconds: number;
  /** false: the reconciler reports what it finds without repairing it. */
  reconcileRepair: boolean;
  /** The reconciler leaves checkpoints, pauses and snapshots younger than this alone (they may be mid-step). */
  reconcileMinAgeSeconds: number;
  /** A runner whose last this many checkpoints ended `reset_failed` is quarantined (a failure streak). */
  quarantineAfter: number;
  /**
   * At most this percentage of the active runners (at least one runner) is
   * quarantined for failure streaks: a fleet-wide outage must not empty the pool.
   */
  quarantineMaxPercent: number;
  /** Finished agent commands and the logs of ended checkpoints older than this many days are pruned. */
  retentionDays: number;
  /** Output lines kept in one checkpoint's log; the cut is marked. */
  logMaxLines: number;
  /** Live log streams (SSE) open at once on one API instance for one runner's checkpoints; more get 429. */
  logStreamsPerRunner: number;
  /** Live log streams (SSE) open at once on one API instance in all; more get 429. */
  logStreamsMax: number;
  /** A live log stream whose client reads nothing for this long is dropped (it resumes with Last-Event-ID). */
  logStreamStallSeconds: number;
  /** Timeout of reset_cmd / cleanup_cmd on the agent. */
  commandTimeoutSeconds: number;
  proxmoxTaskPollSeconds: number;
  proxmoxTaskTimeoutSeconds: number;
  host: string;
  port: number;
  /** Port of the worker's `GET /metrics` (on `host`); 0: a free one, logged at start. */
  workerMetricsPort: number;
  /**
   * Workflow runs a worker keeps in memory between their workflow tasks
   * (Temporal's sticky cache, `maxCachedWorkflows`); a run evicted from it is
   * replayed from its history at its next task. Each cached checkpoint costs
   * roughly 0.5-0.8 MB (docs/operators.md, "Sizing and upgrades"), so this bounds the
   * worker's memory however many checkpoints wait.
   */
  workerMaxCachedWorkflows: number;
  taskQueue: string;
  logLevel: Raw['E2EPOOL_LOG_LEVEL'];
}

/**
 * Settings of the Python implementation that have no meaning here, with the
 * Temporal counterpart docs/reference.md maps them to. Setting one only warns.
 */
const OBSOLETE_SETTINGS: Record<string, string> = {
  E2EPOOL_REDIS_URL: 'Temporal replaces Celery and Redis; set TEMPORAL_ADDRESS instead',
  E2EPOOL_GC_INTERVAL_SECONDS: 'each checkpoint has its own durable TTL timer',
  E2EPOOL_TASK_SOFT_TIME_LIMIT: 'activity timeouts are set per activity',
  E2EPOOL_TASK_HARD_TIME_LIMIT: 'activity timeouts are set per activity',
  E2EPOOL_POLLER_SOFT_TIME_LIMIT: 'activity timeouts are set per activity',
  E2EPOOL_POLLER_HARD_TIME_LIMIT: 'activity timeouts are set per activity',
  E2EPOOL_API_BASE_URL:
    "workers reach agents through Postgres (agent_commands, claimed by the API instance holding the agent's WebSocket), not an internal HTTP API",
  E2EPOOL_CI_PROVIDER:
    "each runner's ci_adapter (gitlab or github) in the inventory says; E2EPOOL_GITLAB_URL and E2EPOOL_GITHUB_TOKEN configure them",
  E2EPOOL_QUERY_BATCH_SIZE: 'no batch sweeps: one workflow per checkpoint',
  E2EPOOL_DB_MAX_OVERFLOW: 'use E2EPOOL_DB_POOL_SIZE',
  E2EPOOL_DB_POOL_RECYCLE: 'pg recycles idle connections itself',
};

function describeValue(v: unknown): string {
  if (v === undefined) return 'unset';
  const s = String(v);
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s);
}

const SECRET_KEYS = new Set([
  'E2EPOOL_GITLAB_TOKEN',
  'E2EPOOL_DATABASE_URL',
  'E2EPOOL_GITLAB_WEBHOOK_SECRET',
  'E2EPOOL_GITHUB_WEBHOOK_SECRET',
  'E2EPOOL_ADMIN_TOKEN',
  'E2EPOOL_METRICS_TOKEN',
  'E2EPOOL_SECRET_KEY',
  'E2EPOOL_GITHUB_TOKEN',
]);

/**
 * Earlier names still read, each with the setting it stands for; when both
 * are set the current name wins.
 */
const SETTING_ALIASES: Record<string, keyof typeof schema.shape> = {
  // The Python implementation's name, after its HTTP library (httpx).
  E2EPOOL_HTTPX_TIMEOUT: 'E2EPOOL_HTTP_TIMEOUT',
};

/** Every E2EPOOL_* variable a controller process reads (docs/reference.md, "Settings"). */
export const CONTROLLER_SETTING_NAMES: readonly string[] = [
  ...Object.keys(schema.shape),
  ...Object.keys(SETTING_ALIASES),
];

/**
 * The schema's input from an environment, and the variable each setting was
 * read from (an alias, or its own name) for error messages.
 */
function settingsInput(env: NodeJS.ProcessEnv): {
  input: Record<string, string | undefined>;
  readFrom: Record<string, string>;
} {
  // An empty variable means "unset", as in most shells' `VAR= cmd`.
  const value = (name: string) => (env[name] === '' ? undefined : env[name]);
  const input: Record<string, string | undefined> = {};
  const readFrom: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    input[key] = value(key);
    readFrom[key] = key;
  }
  for (const [alias, key] of Object.entries(SETTING_ALIASES)) {
    if (input[key] !== undefined || value(alias) === undefined) continue;
    input[key] = value(alias);
    readFrom[key] = alias;
  }
  return { input, readFrom };
}

/**
 * Parses settings from an environment. Throws ConfigError whose message is one
 * line naming the first invalid variable (secrets are never echoed back).
 */
export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  const { input, readFrom } = settingsInput(env);
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = String(issue.path[0]);
    const shown = SECRET_KEYS.has(key) ? '' : ` (got ${describeValue(input[key])})`;
    throw new ConfigError(`invalid setting ${readFrom[key] ?? key}: ${issue.message}${shown}`);
  }
  const r = parsed.data;
  if (r.E2EPOOL_GITLAB_TOKEN && !r.E2EPOOL_GITLAB_URL) {
    throw new ConfigError(
      'invalid setting E2EPOOL_GITLAB_URL: required when E2EPOOL_GITLAB_TOKEN is set',
    );
  }
  return {
    databaseUrl: r.E2EPOOL_DATABASE_URL,
    inventoryPath: r.E2EPOOL_INVENTORY_PATH,
    checkpointTtlSeconds: r.E2EPOOL_CHECKPOINT_TTL_SECONDS,
    pollerEnabled: r.E2EPOOL_POLLER_ENABLED,
    pollerIntervalSeconds: r.E2EPOOL_POLLER_INTERVAL_SECONDS,
    pollerMinAgeSeconds: r.E2EPOOL_POLLER_MIN_AGE_SECONDS,
    finalizeCooldownSeconds: r.E2EPOOL_FINALIZE_COOLDOWN_SECONDS,
    readinessTimeoutSeconds: r.E2EPOOL_READINESS_TIMEOUT_SECONDS,
    readinessPollIntervalSeconds: r.E2EPOOL_READINESS_POLL_INTERVAL_SECONDS,
    dbPoolSize: r.E2EPOOL_DB_POOL_SIZE,
    httpTimeoutSeconds: r.E2EPOOL_HTTP_TIMEOUT,
    wsHeartbeatIntervalSeconds: r.E2EPOOL_WS_HEARTBEAT_INTERVAL,
    wsHeartbeatTimeoutSeconds: r.E2EPOOL_WS_HEARTBEAT_TIMEOUT,
    gitlabUrl: r.E2EPOOL_GITLAB_URL,
    gitlabToken: r.E2EPOOL_GITLAB_TOKEN,
    temporalUiUrl: r.E2EPOOL_TEMPORAL_UI_URL,
    gitlabWebhookSecret: r.E2EPOOL_GITLAB_WEBHOOK_SECRET,
    githubWebhookSecret: r.E2EPOOL_GITHUB_WEBHOOK_SECRET,
    gitlabMaxRps: r.E2EPOOL_GITLAB_MAX_RPS,
    gitlabPollShare: r.E2EPOOL_GITLAB_POLL_SHARE,
    adminToken: r.E2EPOOL_ADMIN_TOKEN,
    authFailureBurst: r.E2EPOOL_AUTH_FAILURE_BURST,
    authFailurePerMinute: r.E2EPOOL_AUTH_FAILURE_PER_MINUTE,
    readinessBurst: r.E2EPOOL_READINESS_BURST,
    readinessPerSecond: r.E2EPOOL_READINESS_PER_SECOND,
    metricsToken: r.E2EPOOL_METRICS_TOKEN,
    metricsCacheSeconds: r.E2EPOOL_METRICS_CACHE_SECONDS,
    metricsFindingsSeconds: r.E2EPOOL_METRICS_FINDINGS_SECONDS,
    secretKey: r.E2EPOOL_SECRET_KEY,
    registryReloadSeconds: r.E2EPOOL_REGISTRY_RELOAD_SECONDS,
    githubUrl: r.E2EPOOL_GITHUB_URL,
    githubToken: r.E2EPOOL_GITHUB_TOKEN,
    resetMaxAttempts: r.E2EPOOL_RESET_MAX_ATTEMPTS,
    finalizeAckSeconds: r.E2EPOOL_FINALIZE_ACK_SECONDS,
    createTimeoutSeconds: r.E2EPOOL_CREATE_TIMEOUT_SECONDS,
    unpauseRetrySeconds: r.E2EPOOL_UNPAUSE_RETRY_SECONDS,
    reconcileIntervalSeconds: r.E2EPOOL_RECONCILE_INTERVAL_SECONDS,
    reconcileRepair: r.E2EPOOL_RECONCILE_REPAIR,
    reconcileMinAgeSeconds: r.E2EPOOL_RECONCILE_MIN_AGE_SECONDS,
    quarantineAfter: r.E2EPOOL_QUARANTINE_AFTER,
    quarantineMaxPercent: r.E2EPOOL_QUARANTINE_MAX_PERCENT,
    retentionDays: r.E2EPOOL_RETENTION_DAYS,
    logMaxLines: r.E2EPOOL_LOG_MAX_LINES,
    logStreamsPerRunner: r.E2EPOOL_LOG_STREAMS_PER_RUNNER,
    logStreamsMax: r.E2EPOOL_LOG_STREAMS_MAX,
    logStreamStallSeconds: r.E2EPOOL_LOG_STREAM_STALL_SECONDS,
    commandTimeoutSeconds: r.E2EPOOL_COMMAND_TIMEOUT_SECONDS,
    proxmoxTaskPollSeconds: r.E2EPOOL_PROXMOX_TASK_POLL_SECONDS,
    proxmoxTaskTimeoutSeconds: r.E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS,
    host: r.E2EPOOL_HOST,
    port: r.E2EPOOL_PORT,
    workerMetricsPort: r.E2EPOOL_WORKER_METRICS_PORT,
    workerMaxCachedWorkflows: r.E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS,
    taskQueue: r.E2EPOOL_TASK_QUEUE,
    logLevel: r.E2EPOOL_LOG_LEVEL,
  };
}

/** Names of obsolete settings present in the environment, with their replacement. */
export function obsoleteSettingsIn(env: NodeJS.ProcessEnv = process.env): Array<[string, string]> {
  return Object.entries(OBSOLETE_SETTINGS).filter(([k]) => env[k] !== undefined);
}
