import { readFileSync } from 'node:fs';
import { AGENT_WS_PATH } from '../common/agent-protocol';

/**
 * Agent configuration: YAML at `--config`, else $E2EPOOL_AGENT_CONFIG,
 * else /etc/e2epool/agent.yml; every key overridable by E2EPOOL_<KEY>.
 *
 * The CLI commands (`create`, `finalize`, `status`) load this module in every CI
 * job, so it uses Node builtins only; the `yaml` package is required lazily and
 * only for files the small flat-mapping reader below cannot read.
 */

export const DEFAULT_CONFIG_PATH = '/etc/e2epool/agent.yml';
const CONFIG_PATH_ENV = 'E2EPOOL_AGENT_CONFIG';

/** Validated agent settings. Durations are seconds. */
export interface AgentConfig {
  /** WebSocket URL of the controller's agent gateway (ws:// or wss://). */
  controllerUrl: string;
  runnerId: string;
  /** The runner's REST token; opens the WebSocket when `agentToken` is empty. */
  token: string;
  /**
   * The runner's agent token: when set, the WebSocket uses it instead of
   * `token` (a controller that knows it refuses the REST token there).
   */
  agentToken: string;
  /** Allows ws:// to a controller that is not on this host (tokens in clear text). */
  allowInsecureWs: boolean;
  /** The IPC socket the CLI talks to. */
  socketPath: string;
  /** Upper bound of the reconnect backoff, which starts at 1 s. */
  reconnectMaxDelay: number;
  /** Seconds between pings; 3 silent intervals end the connection. */
  heartbeatInterval: number;
  /** Group (name or gid) that owns the socket, so the CI user can connect; null keeps ours. */
  socketGroup: string | number | null;
  /** Exact command strings the controller may run; null allows any. */
  allowedCommands: string[] | null;
  /** How long a forwarded CLI request waits for the controller's reply. */
  requestTimeout: number;
}

/** An invalid agent setting; `message` is one line naming the key. */
export class AgentConfigError extends Error {
  override name = 'AgentConfigError';
}

type Parser<T> = (v: unknown) => T;

/** Thrown by parsers; the caller adds the key and where the value came from. */
class Invalid extends Error {}

const str: Parser<string> = (v) => {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  throw new Invalid('expected a string');
};

const nonEmpty: Parser<string> = (v) => {
  const s = str(v);
  if (!s) throw new Invalid('must not be empty');
  return s;
};

const positiveSeconds: Parser<number> = (v) => {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) {
    throw new Invalid('expected a positive number of seconds');
  }
  return n;
};

const wsUrl: Parser<string> = (v) => {
  const s = nonEmpty(v);
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new Invalid('expected a ws:// or wss:// URL');
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new Invalid('expected a ws:// or wss:// URL');
  }
  return s;
};

const bool: Parser<boolean> = (v) => {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new Invalid('expected true or false');
};

const group: Parser<string | number | null> = (v) => {
  if (v === null || v === undefined || v === '') return null;
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) throw new Invalid('expected a group name or gid');
    return v;
  }
  if (typeof v !== 'string') throw new Invalid('expected a group name or gid');
  if (/^\d+$/.test(v)) return Number(v);
  if (!/^[\w.][\w.-]*\$?$/.test(v)) throw new Invalid('expected a group name or gid');
  return v;
};

/** A list of non-empty strings. */
const commandList: Parser<string[] | null> = (v) => {
  if (v === null || v === undefined) return null;
  if (!Array.isArray(v) || !v.every((c) => typeof c === 'string' && c !== '')) {
    throw new Invalid('expected a list of non-empty command strings');
  }
  return v as string[];
};

/** The list form of E2EPOOL_ALLOWED_COMMANDS: a JSON array, or one command per line. */
const commandListFromEnv = (v: string): unknown => {
  if (!v.trim().startsWith('[')) return v.split('\n').filter((l) => l.trim() !== '');
  try {
    return JSON.parse(v);
  } catch {
    throw new Invalid('expected a JSON array of strings or one command per line');
  }
};

const FIELDS = {
  controller_url: {
    prop: 'controllerUrl',
    parse: wsUrl,
    def: `ws://localhost:8080${AGENT_WS_PATH}`,
  },
  runner_id: { prop: 'runnerId', parse: str, def: '' },
  token: { prop: 'token', parse: str, def: '' },
  agent_token: { prop: 'agentToken', parse: str, def: '' },
  allow_insecure_ws: { prop: 'allowInsecureWs', parse: bool, def: false },
  socket_path: { prop: 'socketPath', parse: nonEmpty, def: '/var/run/e2epool-agent.sock' },
  reconnect_max_delay: { prop: 'reconnectMaxDelay', parse: positiveSeconds, def: 60 },
  heartbeat_interval: { prop: 'heartbeatInterval', parse: positiveSeconds, def: 30 },
  socket_group: { prop: 'socketGroup', parse: group, def: null },
  allowed_commands: {
    prop: 'allowedCommands',
    parse: commandList,
    def: null,
    fromEnv: commandListFromEnv,
  },
  request_timeout: { prop: 'requestTimeout', parse: positiveSeconds, def: 30 },
} as const satisfies Record<
  string,
  {
    prop: keyof AgentConfig;
    parse: Parser<unknown>;
    def: unknown;
    /** Turns the environment variable's text into the value `parse` expects. */
    fromEnv?: (v: string) => unknown;
  }
>;

type Key = keyof typeof FIELDS;
type Values = Map<Key, { value: unknown; from: string; env?: boolean }>;
const KEYS = Object.keys(FIELDS) as Key[];
const SECRET: ReadonlySet<Key> = new Set<Key>(['token', 'agent_token']);

/** Each key's variable and its default (undefined: unset), for docs/reference.md's settings table. */
export function agentSettingDefaults(): Record<string, unknown> {
  return Object.fromEntries(KEYS.map((k) => [envName(k), FIELDS[k].def ?? undefined]));
}

/** The environment variable overriding a key, e.g. E2EPOOL_SOCKET_PATH. */
function envName(key: string): string {
  return `E2EPOOL_${key.toUpperCase()}`;
}

function shown(key: Key, v: unknown): string {
  if (SECRET.has(key)) return '';
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  if (s === undefined) return '';
  return ` (got ${JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s)})`;
}

/** Whether a URL's host is this machine: 127.0.0.0/8, ::1 or localhost. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname
    .toLowerCase()
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (/^::ffff:127\./.test(h)) return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Whether the config sends its token unencrypted over a network (ws:// to another host). */
export function insecureRemoteWs(config: Pick<AgentConfig, 'controllerUrl'>): boolean {
  const u = new URL(config.controllerUrl);
  return u.protocol === 'ws:' && !isLoopbackHost(u.hostname);
}

/** Config built from values, each labelled with where it came from. */
function build(values: Values): AgentConfig {
  const config = buildFields(values);
  if (insecureRemoteWs(config) && !config.allowInsecureWs) {
    const from = values.get('controller_url')?.from ?? 'default';
    throw new AgentConfigError(
      `invalid agent setting controller_url (${from}): ws:// to ${new URL(config.controllerUrl).host}, ` +
        'which is not this host, would send the token unencrypted; use wss:// ' +
        '(or set allow_insecure_ws: true on a network you trust)',
    );
  }
  return config;
}

function buildFields(values: Values): AgentConfig {
  const out: Record<string, unknown> = {};
  for (const key of KEYS) {
    const f = FIELDS[key];
    const v = values.get(key);
    if (!v) {
      out[f.prop] = f.def;
      continue;
    }
    try {
      const value =
        v.env && 'fromEnv' in f && typeof v.value === 'string' ? f.fromEnv(v.value) : v.value;
      out[f.prop] = f.parse(value);
    } catch (err) {
      if (!(err instanceof Invalid)) throw err;
      throw new AgentConfigError(
        `invalid agent setting ${key} (${v.from}): ${err.message}${shown(key, v.value)}`,
      );
    }
  }
  return out as unknown as AgentConfig;
}

/** Builds a validated config from overrides of the defaults (for tests and embedding). */
export function agentConfig(overrides: Partial<AgentConfig> = {}): AgentConfig {
  const values: Values = new Map();
  for (const key of KEYS) {
    const v = overrides[FIELDS[key].prop];
    if (v !== undefined) values.set(key, { value: v, from: FIELDS[key].prop });
  }
  return build(values);
}

/** Where the config file is, and whether the user named it explicitly. */
function configFilePath(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): { path: string; explicit: boolean } {
  if (explicit) return { path: explicit, explicit: true };
  const fromEnv = env[CONFIG_PATH_ENV];
  if (fromEnv) return { path: fromEnv, explicit: true };
  return { path: DEFAULT_CONFIG_PATH, explicit: false };
}

type Scalar = string | number | boolean | null;

const YAML_NUMBER = /^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/;
const YAML_SPECIAL = /^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|0x[0-9a-fA-F]+|0o[0-7]+)$/;

/** One plain (unquoted) YAML scalar as YAML 1.2's core schema reads it; undefined = unsure. */
function plainScalar(s: string): Scalar | undefined {
  if (s === '' || /^(?:null|Null|NULL|~)$/.test(s)) return null;
  if (/^(?:true|True|TRUE)$/.test(s)) return true;
  if (/^(?:false|False|FALSE)$/.test(s)) return false;
  if (YAML_NUMBER.test(s)) return Number(s);
  if (YAML_SPECIAL.test(s)) return undefined;
  if (/^[-?:,[\]{}#&*!|>'"%@`]/.test(s) || s.includes(': ') || s.endsWith(':')) return undefined;
  return s;
}

/**
 * Reads a YAML file that is a flat mapping of scalars (what agent.yml is) without
 * the `yaml` package. Returns undefined for anything it is not sure about, and
 * the caller then uses the real parser.
 */
export function readFlatYaml(text: string): Record<string, Scalar> | undefined {
  const out: Record<string, Scalar> = {};
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#') || line === '---') continue;
    if (/^\s/.test(line) || line.includes('\t')) return undefined;
    const m = /^([A-Za-z_][\w-]*)[ ]*:(?:[ ]+(.*))?$/.exec(line);
    if (!m) return undefined;
    const key = m[1]!;
    const rest = (m[2] ?? '').trim();
    if (Object.prototype.hasOwnProperty.call(out, key)) return undefined;
    let value: Scalar | undefined;
    const dq = /^"([^"\\]*)"(?:[ ]+#.*)?$/.exec(rest);
    const sq = /^'((?:[^']|'')*)'(?:[ ]+#.*)?$/.exec(rest);
    if (dq) value = dq[1]!;
    else if (sq) value = sq[1]!.replace(/''/g, "'");
    else if (rest.startsWith('"') || rest.startsWith("'")) return undefined;
    else value = plainScalar(rest.replace(/[ ]+#.*$/, ''));
    if (value === undefined) return undefined;
    out[key] = value;
  }
  return out;
}

/** Parses YAML text into a mapping; throws a one-line AgentConfigError. */
function parseYaml(text: string, path: string): Record<string, unknown> {
  const flat = readFlatYaml(text);
  if (flat) return flat;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const yaml = require('yaml') as typeof import('yaml'); // eslint-disable-line @typescript-eslint/consistent-type-imports
  let doc: unknown;
  try {
    doc = yaml.parse(text);
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new AgentConfigError(`cannot parse agent config ${path}: ${msg}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new AgentConfigError(`cannot parse agent config ${path}: expected a mapping of settings`);
  }
  return doc as Record<string, unknown>;
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err
    ? String((err as { code: unknown }).code)
    : undefined;
}

/** Reads the file; `missing`/`unreadable` instead of throwing for those two cases. */
function readConfigText(
  path: string,
): { text: string } | { missing: true } | { unreadable: string } {
  try {
    return { text: readFileSync(path, 'utf8') };
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') return { missing: true };
    if (code === 'EACCES' || code === 'EPERM') return { unreadable: 'permission denied' };
    if (code === 'EISDIR') return { unreadable: 'is a directory' };
    return { unreadable: err instanceof Error ? err.message : String(err) };
  }
}

function envValues(env: NodeJS.ProcessEnv, values: Values): void {
  for (const key of KEYS) {
    const v = env[envName(key)];
    // An empty variable means "unset", as in most shells' `VAR= cmd`.
    if (v !== undefined && v !== '')
      values.set(key, { value: v, from: `from ${envName(key)}`, env: true });
  }
}

export interface ConfigSource {
  /** `--config`; else $E2EPOOL_AGENT_CONFIG; else /etc/e2epool/agent.yml. */
  configPath?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

/**
 * The daemon's config, strictly validated: a file named explicitly must exist,
 * unknown keys and bad values are errors (one line naming the key).
 */
export function loadAgentConfig(src: ConfigSource = {}): AgentConfig {
  const env = src.env ?? process.env;
  const { path, explicit } = configFilePath(src.configPath, env);
  const values: Values = new Map();
  const read = readConfigText(path);
  if ('text' in read) {
    const doc = parseYaml(read.text, path);
    for (const [k, v] of Object.entries(doc)) {
      if (!(k in FIELDS)) throw new AgentConfigError(`unknown agent setting ${k} in ${path}`);
      values.set(k as Key, { value: v, from: `in ${path}` });
    }
  } else if ('unreadable' in read) {
    throw new AgentConfigError(`cannot read agent config ${path}: ${read.unreadable}`);
  } else if (explicit) {
    throw new AgentConfigError(`agent config not found: ${path}`);
  }
  envValues(env, values);
  return build(values);
}

/** What the CLI commands need to reach the agent. */
export interface CliConnectSettings {
  socketPath: string;
  requestTimeout: number;
  /** Why the config file was not used, to explain a "not running" error. */
  configNote: string | undefined;
}

/**
 * The CLI's view of the config: lenient, never throws. A missing, unreadable
 * (agent.yml is typically root-only) or invalid file falls back to the
 * environment and defaults; `--socket` wins over everything.
 */
export function cliConnectSettings(
  src: ConfigSource & { socket?: string | undefined },
): CliConnectSettings {
  const env = src.env ?? process.env;
  const values: Values = new Map();
  let configNote: string | undefined;
  const { path } = configFilePath(src.configPath, env);
  const read = readConfigText(path);
  if ('text' in read) {
    try {
      const doc = parseYaml(read.text, path);
      for (const key of ['socket_path', 'request_timeout'] as const) {
        if (doc[key] !== undefined) values.set(key, { value: doc[key], from: `in ${path}` });
      }
    } catch (err) {
      configNote = err instanceof Error ? err.message : String(err);
    }
  } else if ('unreadable' in read) {
    configNote = `could not read ${path}: ${read.unreadable}`;
  }
  envValues(env, values);
  const pick = <T>(key: Key, parse: Parser<T>, def: T): T => {
    const v = values.get(key);
    if (!v) return def;
    try {
      return parse(v.value);
    } catch {
      return def;
    }
  };
  const socketPath = src.socket || pick('socket_path', nonEmpty, FIELDS.socket_path.def);
  const fromDefault = !src.socket && !values.has('socket_path');
  return {
    socketPath,
    requestTimeout: pick('request_timeout', positiveSeconds, FIELDS.request_timeout.def),
    configNote: fromDefault ? configNote : undefined,
  };
}
