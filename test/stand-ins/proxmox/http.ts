/**
 * The HTTP and schema layer of the Proxmox VE stand-in (test/stand-ins/proxmox.ts): PVE's
 * parameter checks with their exact messages, pveproxy's body decoding, and the route shape.
 */

export type TaskType =
  'qmsnapshot' | 'qmdelsnapshot' | 'qmrollback' | 'qmstart' | 'qmstop' | 'qmshutdown';

export const MAX_POST_BYTES = 64 * 1024;
export const CONFIGID_RE = /^[a-z][a-z0-9_-]+$/i;
export const VMID_RE = /^[1-9][0-9]{2,8}$/;
export const NODE_RE = /^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$/;
export const UPID_RE =
  /^UPID:([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$/;
export const TOKEN_ID_RE = /^([^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+)!([A-Za-z][A-Za-z0-9.\-_]+)$/;

/** A JSON object or array where PVE expects a scalar: reported by its Perl ref type. */
export class JsonRef {
  constructor(readonly kind: 'HASH' | 'ARRAY') {}
}
/** Parameter values as the PVE schema checker sees them; `boolean` only comes from JSON bodies. */
export type ParamValue = string | boolean | JsonRef;
export type Params = Record<string, ParamValue>;

/** A `die` or `raise` inside a handler. `bare` errors come from the HTTP layer and have no body. */
export class PveError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors?: Record<string, string>,
    readonly bare = false,
  ) {
    super(message);
    this.name = 'PveError';
  }
}

/** A failure inside a worker: it ends up in the task's exitstatus, never in the HTTP status. */
export class TaskFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TaskFailure';
  }
}

export const die = (msg: string): PveError => new PveError(500, `${msg}\n`);
export const paramExc = (errors: Record<string, string>): PveError =>
  new PveError(400, 'Parameter verification failed.\n', errors);

export interface ParamSchema {
  type: 'string' | 'boolean' | 'integer';
  format?: 'pve-node' | 'pve-vmid' | 'pve-configid';
  optional?: boolean;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
}

export const NODE: ParamSchema = { type: 'string', format: 'pve-node' };
export const VMID: ParamSchema = {
  type: 'integer',
  format: 'pve-vmid',
  minimum: 100,
  maximum: 999_999_999,
};
export const SNAPNAME: ParamSchema = { type: 'string', format: 'pve-configid', maxLength: 40 };
export const OPT_BOOL: ParamSchema = { type: 'boolean', optional: true };
export const OPT_TIMEOUT: ParamSchema = { type: 'integer', minimum: 0, optional: true };
export const VM_PATH = { node: NODE, vmid: VMID };

export function checkType(schema: ParamSchema, value: ParamValue): string | undefined {
  const { type } = schema;
  if (value instanceof JsonRef) return `type check ('${type}') failed - got ${value.kind}`;
  if (typeof value === 'boolean') {
    return type === 'boolean' ? undefined : `type check ('${type}') failed - got JSON::PP::Boolean`;
  }
  if (type === 'boolean' && value !== '1' && value !== '0') {
    return `type check ('boolean') failed - got '${value}'`;
  }
  if (type === 'integer' && !/^[+-]?\d+$/.test(value)) {
    return `type check ('integer') failed - got '${value}'`;
  }
  return undefined;
}

export function checkFormat(format: ParamSchema['format'], value: string): string | undefined {
  switch (format) {
    case 'pve-configid':
      return CONFIGID_RE.test(value) ? undefined : `invalid configuration ID '${value}'\n`;
    case 'pve-vmid':
      return VMID_RE.test(value) ? undefined : 'value does not look like a valid VM ID\n';
    case 'pve-node':
      return NODE_RE.test(value) ? undefined : 'value does not look like a valid node name\n';
    default:
      return undefined;
  }
}

/** PVE::JSONSchema::check_prop for the scalar subset used here, with its exact messages and order. */
export function validateParams(params: Params, schema: Record<string, ParamSchema>): void {
  const errors: Record<string, string> = {};
  for (const [key, prop] of Object.entries(schema)) {
    const value = params[key];
    if (value === undefined) {
      if (!prop.optional) errors[key] = 'property is missing and it is not optional';
      continue;
    }
    const typeErr = checkType(prop, value);
    if (typeErr) {
      errors[key] = typeErr;
      continue;
    }
    if (typeof value !== 'string') continue;
    const formatErr = checkFormat(prop.format, value);
    if (formatErr) {
      errors[key] = `invalid format - ${formatErr}`;
      continue;
    }
    if (prop.maxLength !== undefined && value.length > prop.maxLength) {
      errors[key] = `value may only be ${prop.maxLength} characters long`;
      continue;
    }
    if (prop.type === 'integer') {
      const n = Number(value);
      if (prop.maximum !== undefined && n > prop.maximum) {
        errors[key] = `value must have a maximum value of ${prop.maximum}`;
      } else if (prop.minimum !== undefined && n < prop.minimum) {
        errors[key] = `value must have a minimum value of ${prop.minimum}`;
      }
    }
  }
  for (const key of Object.keys(params)) {
    if (!(key in schema)) {
      errors[key] =
        'property is not defined in schema and the schema does not allow additional properties';
    }
  }
  if (Object.keys(errors).length > 0) throw paramExc(errors);
}

export const isTrue = (v: ParamValue | undefined): boolean => v === true || v === '1';

/** pveproxy's decode_urlencoded: `&` or `;` separated, `+` is a space, repeated keys joined by NUL. */
export function decodeUrlencoded(data: string): Record<string, string> {
  const res: Record<string, string> = {};
  if (!data) return res;
  const unescape = (s: string): string =>
    Buffer.from(
      s
        .replace(/\+/g, ' ')
        .replace(/%([0-9a-fA-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))),
      'latin1',
    ).toString('utf8');
  for (const kv of data.split(/[&;]/)) {
    // Perl's split(/=/) keeps only the first two fields: an unescaped '=' truncates the value.
    const [k, v] = kv.split('=');
    if (k === undefined || v === undefined) continue;
    const key = unescape(k);
    const value = unescape(v);
    res[key] = key in res ? `${res[key]}\0${value}` : value;
  }
  return res;
}

export function jsonToParams(raw: string): Params {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new PveError(
      501,
      `malformed JSON string, neither tag, array, object, number, string or atom, at character offset 0 (before "${raw.slice(0, 20)}")\n`,
      undefined,
      true,
    );
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new PveError(501, 'Not a HASH reference\n', undefined, true);
  }
  const res: Params = {};
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    if (v === null || v === undefined) continue;
    if (typeof v === 'boolean' || typeof v === 'string') res[k] = v;
    else if (typeof v === 'number') res[k] = String(v);
    else res[k] = new JsonRef(Array.isArray(v) ? 'ARRAY' : 'HASH');
  }
  return res;
}

export function paramsForLog(p: Params): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(p)) {
    // JSON::PP::Boolean stringifies to 1/0, which is what the server works with.
    if (typeof v === 'boolean') out[k] = v ? '1' : '0';
    else if (v instanceof JsonRef) out[k] = v.kind === 'HASH' ? '{...}' : '[...]';
    else out[k] = v;
  }
  return out;
}

export function safeUnescape(path: string): string {
  return path.replace(/%([0-9a-fA-F]{2})/g, (_m, h: string) =>
    String.fromCharCode(parseInt(h, 16)),
  );
}

export const hex8 = (n: number): string => n.toString(16).toUpperCase().padStart(8, '0');
export const nowSec = (): number => Math.floor(Date.now() / 1000);

export interface RequestInfo {
  method: string;
  path: string;
  rawPath: string;
  taskType?: TaskType;
}

export interface Ctx {
  params: Params;
  node: string;
  req: RequestInfo;
  /** Set by handlers whose result carries a `total` attribute (the task log). */
  total?: number;
}

export interface PermSpec {
  privs: string[];
  any?: boolean;
}

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string[];
  schema: Record<string, ParamSchema>;
  taskType?: TaskType;
  /**
   * Privileges needed on `/vms/{vmid}`; with `any`, one of them is enough. A function when they
   * depend on the Proxmox VE version the stand-in plays.
   */
  perm?: PermSpec | (() => PermSpec);
  handler: (ctx: Ctx) => unknown;
}
