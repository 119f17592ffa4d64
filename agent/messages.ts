import {
  REQUEST_TYPES,
  type AgentRequest,
  type ErrorBody,
  type Reply,
  type RequestType,
} from '../common/agent-protocol';

/**
 * The agent's guards and builders for the protocol's messages (the types are
 * in common/agent-protocol). Every frame that arrives over the WebSocket or
 * the IPC socket is `unknown` until one of these accepts it. No dependencies:
 * the CLI loads this too.
 */

/**
 * An exec command from the controller, after its guard accepted the frame.
 * `cmd` and `timeout` are still unchecked: the command runner answers a bad
 * command with exit code -1 and uses its default for a bad timeout, so the
 * controller always gets a reply.
 */
export interface IncomingExec {
  id: string;
  cmd: unknown;
  timeout: unknown;
}

/** True for a plain JSON object (not null, not an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A success reply. */
export function okReply(id: string, data: unknown): Reply {
  return { id, status: 'ok', data, error: null };
}

/** An error reply; `data` is null. */
export function errorReply(id: string, code: number, detail: string): Reply {
  return { id, status: 'error', data: null, error: { code, detail } };
}

function isRequestType(v: unknown): v is RequestType {
  return typeof v === 'string' && (REQUEST_TYPES as readonly string[]).includes(v);
}

/** The result of checking an IPC request: the request, or what is wrong with it. */
export type ParsedIpcRequest =
  | { ok: true; request: Omit<AgentRequest, 'id'> & { id: string | undefined } }
  | { ok: false; id: string; detail: string };

/** Guard for a request from the CLI (`id` is optional there). */
export function parseIpcRequest(v: unknown): ParsedIpcRequest {
  if (!isRecord(v))
    return { ok: false, id: '', detail: 'Malformed request: expected a JSON object' };
  const id = typeof v.id === 'string' ? v.id : undefined;
  if (v.id !== undefined && v.id !== null && id === undefined) {
    return { ok: false, id: '', detail: 'Malformed request: id must be a string' };
  }
  if (!isRequestType(v.type)) {
    return {
      ok: false,
      id: id ?? '',
      detail: `Malformed request: type must be one of ${REQUEST_TYPES.join(', ')}`,
    };
  }
  const payload = v.payload ?? {};
  if (!isRecord(payload)) {
    return { ok: false, id: id ?? '', detail: 'Malformed request: payload must be an object' };
  }
  return { ok: true, request: { id, type: v.type, payload } };
}

/**
 * What a WebSocket frame from the controller is. A frame with a top-level
 * `status` key is a reply to one of our requests.
 */
export type ControllerFrame =
  | { kind: 'reply'; id: string; frame: Record<string, unknown> }
  | { kind: 'exec'; command: IncomingExec }
  | { kind: 'malformed'; id: string | undefined; detail: string };

/** Guard for a frame from the controller. */
export function classifyControllerFrame(v: unknown): ControllerFrame {
  if (!isRecord(v)) return { kind: 'malformed', id: undefined, detail: 'not a JSON object' };
  const id = typeof v.id === 'string' ? v.id : undefined;
  if ('status' in v) {
    if (id === undefined) return { kind: 'malformed', id, detail: 'reply without a string id' };
    return { kind: 'reply', id, frame: v };
  }
  if (v.type === 'exec') {
    if (id === undefined) return { kind: 'malformed', id, detail: 'exec without a string id' };
    const payload = isRecord(v.payload) ? v.payload : {};
    return { kind: 'exec', command: { id, cmd: payload.cmd, timeout: payload.timeout } };
  }
  return { kind: 'malformed', id, detail: `unknown message type ${JSON.stringify(v.type)}` };
}

/**
 * A controller reply with all four keys, under the given id. Tolerates the old
 * controller's shapes (a 400 without `data`, a string `error`).
 */
export function normalizeReply(frame: Record<string, unknown>, id: string): Reply {
  const status = frame.status === 'ok' ? 'ok' : 'error';
  let error: ErrorBody | null = null;
  const e = frame.error;
  if (isRecord(e)) {
    error = {
      code: typeof e.code === 'number' ? e.code : 500,
      detail: typeof e.detail === 'string' ? e.detail : JSON.stringify(e.detail ?? 'Unknown error'),
    };
    // The cooldown's seconds left, for `e2epool create --wait`.
    const ra = e.retry_after;
    if (typeof ra === 'number' && Number.isFinite(ra) && ra >= 0) error.retry_after = ra;
  } else if (typeof e === 'string') {
    error = { code: 500, detail: e };
  } else if (status === 'error') {
    error = { code: 500, detail: 'Unknown error' };
  }
  return { id, status, data: frame.data ?? null, error };
}
