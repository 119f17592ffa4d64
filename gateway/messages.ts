import type { RawData, WebSocket } from 'ws';
import { z } from 'zod';
import {
  EXEC_OUTPUT_FRAME_BYTES,
  EXEC_OUTPUT_FRAMES_PER_SECOND,
  EXEC_OUTPUT_STREAMS,
  LOGS_PAGE_BYTES,
  LOGS_PAGE_ENTRIES,
  MAX_MESSAGE_BYTES,
  REQUEST_TYPES,
  type AgentRequest,
  type ExecOutput,
  type ExecReply,
  type LogsData,
  type LogsPayload,
  type Reply,
  type RequestType,
} from '../common/agent-protocol';
import type { Logger } from '../config/logger';
import type { CheckpointLogs } from '../service/checkpoint-logs';
import type { CheckpointService } from '../service/checkpoint-service';
import { DomainError, InvalidInput } from '../service/errors';
import { checkpointNameParam, createBody, finalizeBody } from '../service/schemas';
import type { AgentHub } from './agent-hub';
import { domainErrorReply, fail, ok, oneLine } from './replies';

const requestEnvelope = z.object({
  id: z.string({ error: 'Input should be a valid string' }).max(200),
  type: z.enum(REQUEST_TYPES),
  payload: z.record(z.string(), z.unknown()).default({}),
}) satisfies z.ZodType<AgentRequest>;

const execReply = z.object({
  id: z.string().max(200),
  status: z.enum(['ok', 'error']),
  data: z.object({ exit_code: z.number().int(), stdout: z.string(), stderr: z.string() }),
}) satisfies z.ZodType<ExecReply>;

const execOutput = z.object({
  id: z.string().max(200),
  type: z.literal('exec_output'),
  payload: z.object({
    stream: z.enum(EXEC_OUTPUT_STREAMS),
    seq: z.number().int().min(1),
    // The length check first: no byte count of a string that is too long anyway.
    data: z
      .string()
      .max(EXEC_OUTPUT_FRAME_BYTES)
      .refine((s) => Buffer.byteLength(s) <= EXEC_OUTPUT_FRAME_BYTES, {
        error: `Too big: expected at most ${EXEC_OUTPUT_FRAME_BYTES} bytes`,
      }),
  }),
}) satisfies z.ZodType<ExecOutput>;

const statusPayload = z.object({ checkpoint_name: checkpointNameParam });

/** Log seqs are Postgres `integer`s: a larger `after` would fail in the query, not be a 422. */
const MAX_SEQ = 2_147_483_647;
const AFTER_MESSAGE = `after must be an integer from 0 to ${MAX_SEQ}`;

const logsPayload = z.object({
  checkpoint_name: checkpointNameParam,
  after: z
    .number({ error: AFTER_MESSAGE })
    .int(AFTER_MESSAGE)
    .min(0, AFTER_MESSAGE)
    .max(MAX_SEQ, AFTER_MESSAGE)
    .optional(),
}) satisfies z.ZodType<LogsPayload>;

/**
 * Cuts a log page to what one `logs` reply may carry (LOGS_PAGE_ENTRIES
 * entries, LOGS_PAGE_BYTES of their JSON; the first entry always), so that
 * the agent can hand it to the CLI in one IPC frame. A cut page is not done
 * and its `next` is its last entry: the reader pages on from there.
 */
export function fitLogsPage(
  page: LogsData,
  limits: { entries: number; bytes: number } = {
    entries: LOGS_PAGE_ENTRIES,
    bytes: LOGS_PAGE_BYTES,
  },
): LogsData {
  let bytes = 0;
  let n = 0;
  for (const e of page.entries) {
    if (n >= limits.entries) break;
    const size = Buffer.byteLength(JSON.stringify(e)) + 1; // and its comma
    if (n > 0 && bytes + size > limits.bytes) break;
    bytes += size;
    n++;
  }
  if (n === page.entries.length) return page;
  const entries = page.entries.slice(0, n);
  return { entries, next: entries[n - 1]!.seq, done: false };
}

/**
 * Agent requests one connection may have in flight (each may hold a database
 * connection); one past it is answered with an error of code 429 and the
 * connection is kept. Our agent sends one per CLI call.
 */
export const MAX_INFLIGHT_REQUESTS = 16;

/**
 * exec_output frames one connection may send per second, over any number of
 * its commands, and in one burst: twice what an agent sends for one command
 * (EXEC_OUTPUT_FRAMES_PER_SECOND), so two commands at once, or frames bunched
 * up in transit, pass.
 */
export const EXEC_OUTPUT_FRAMES_PER_CONNECTION = 2 * EXEC_OUTPUT_FRAMES_PER_SECOND;

/** Warnings about dropped exec_output frames: at most one per connection this often. */
const DROP_WARN_EVERY_MS = 60_000;

/**
 * The controller's own cap on a connection's exec_output frames (a token
 * bucket): the agent limits itself, a hostile client may not. Frames past it
 * are dropped, not coalesced (coalescing would hold their data here, which is
 * what the cap bounds) and not answered; the next frame that passes shows a
 * gap in `seq`, which the checkpoint log marks as output lost in transit.
 */
class FrameRate {
  private tokens: number;
  private last = Date.now();
  constructor(private readonly perSecond: number) {
    this.tokens = perSecond;
  }
  /** Whether one more frame may pass now. */
  take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(
      this.perSecond,
      this.tokens + ((now - this.last) / 1000) * this.perSecond,
    );
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** What one connection may still do: its exec_output rate and its requests in flight. */
interface ConnectionLimits {
  frames: FrameRate;
  dropped: number;
  lastDropWarning: number;
  inflight: number;
}

export interface MessageDeps {
  checkpoints: CheckpointService;
  /** Checkpoint logs, for the `logs` request (a runner reads only its own). */
  logs: Pick<CheckpointLogs, 'pageByName'>;
  hub: AgentHub;
  log: Logger;
}

/** One authenticated connection, as its messages see it. */
export interface Peer {
  ws: WebSocket;
  runnerId: string;
  sessionId: string;
  limits: ConnectionLimits;
}

export function connectionLimits(): ConnectionLimits {
  return {
    frames: new FrameRate(EXEC_OUTPUT_FRAMES_PER_CONNECTION),
    dropped: 0,
    lastDropWarning: 0,
    inflight: 0,
  };
}

type Handler = (runnerId: string, payload: Record<string, unknown>) => Promise<unknown>;

/** Every request type, its payload validated exactly like its REST counterpart. */
function requestHandlers(d: MessageDeps): Record<RequestType, Handler> {
  return {
    ping: async () => ({ pong: true }),
    create: async (runnerId, payload) => {
      const input = { ...payload, runner_id: runnerId };
      const body = createBody.safeParse(input);
      if (!body.success) throw new InvalidInput(oneLine(body.error, input));
      return d.checkpoints.create(runnerId, body.data);
    },
    finalize: async (runnerId, payload) => {
      const input = { source: 'agent', ...payload };
      const body = finalizeBody.safeParse(input);
      if (!body.success) throw new InvalidInput(oneLine(body.error, input));
      return d.checkpoints.finalize(runnerId, body.data);
    },
    status: async (runnerId, payload) => {
      const body = statusPayload.safeParse(payload);
      if (!body.success) throw new InvalidInput(oneLine(body.error, payload));
      return d.checkpoints.status(runnerId, body.data.checkpoint_name);
    },
    logs: async (runnerId, payload): Promise<LogsData> => {
      const body = logsPayload.safeParse(payload);
      if (!body.success) throw new InvalidInput(oneLine(body.error, payload));
      const { checkpoint_name: name, after = 0 } = body.data;
      return fitLogsPage(await d.logs.pageByName(runnerId, name, after));
    },
  };
}

const send = (ws: WebSocket, reply: Reply) => {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(reply));
};

/** A frame as a JSON object, or the error reply a malformed one gets. */
function decode(data: RawData, isBinary: boolean): { frame: Record<string, unknown> } | Reply {
  const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
  if (isBinary) return fail('', 400, 'Malformed message: binary frames are not supported');
  if (bytes.length > MAX_MESSAGE_BYTES)
    return fail('', 400, 'Malformed message: larger than 1 MiB');
  let msg: unknown;
  try {
    msg = JSON.parse(bytes.toString('utf8'));
  } catch {
    return fail('', 400, 'Malformed message: not valid JSON');
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg))
    return fail('', 400, 'Malformed message: expected a JSON object');
  return { frame: msg as Record<string, unknown> };
}

/**
 * Handles one frame of an authenticated agent: an exec reply or its live
 * output goes to the AgentHub, a request to the CheckpointService. A bad
 * frame gets an error reply and never drops the connection.
 */
export class MessageHandler {
  private readonly handlers: Record<RequestType, Handler>;

  constructor(private readonly d: MessageDeps) {
    this.handlers = requestHandlers(d);
  }

  async onMessage(peer: Peer, data: RawData, isBinary: boolean): Promise<void> {
    const decoded = decode(data, isBinary);
    if (!('frame' in decoded)) return send(peer.ws, decoded);
    const obj = decoded.frame;
    // A frame with a top-level `status` is the reply to one of our exec commands.
    if ('status' in obj) return this.onExecReply(peer, obj);
    // Live output of a running exec: passed on and not answered, unless malformed.
    if (obj.type === 'exec_output') return this.onExecOutput(peer, obj);
    return this.onRequest(peer, obj);
  }

  private async onExecReply(peer: Peer, obj: Record<string, unknown>): Promise<void> {
    const { runnerId, sessionId } = peer;
    const id = typeof obj.id === 'string' ? obj.id : '';
    const r = execReply.safeParse(obj);
    if (r.success) await this.d.hub.handleReply(runnerId, sessionId, r.data.id, r.data.data);
    else if (id)
      await this.d.hub.handleReply(
        runnerId,
        sessionId,
        id,
        null,
        `malformed exec reply: ${oneLine(r.error, obj)}`,
      );
    else this.d.log.warn({ runnerId }, 'ignoring a malformed exec reply without an id');
  }

  private onExecOutput(peer: Peer, obj: Record<string, unknown>): void {
    const { limits, runnerId } = peer;
    const o = execOutput.safeParse(obj);
    if (!o.success) {
      const id = typeof obj.id === 'string' ? obj.id : '';
      return send(peer.ws, fail(id, 400, `Malformed exec_output: ${oneLine(o.error, obj)}`));
    }
    if (!limits.frames.take()) {
      limits.dropped++;
      const now = Date.now();
      if (now - limits.lastDropWarning >= DROP_WARN_EVERY_MS) {
        limits.lastDropWarning = now;
        this.d.log.warn(
          { runnerId, dropped: limits.dropped, perSecond: EXEC_OUTPUT_FRAMES_PER_CONNECTION },
          'dropping exec_output frames sent faster than the cap',
        );
      }
      return;
    }
    this.d.hub.handleOutput(runnerId, peer.sessionId, o.data.id, o.data.payload);
  }

  private async onRequest(peer: Peer, obj: Record<string, unknown>): Promise<void> {
    const { ws, runnerId, limits } = peer;
    const id = typeof obj.id === 'string' ? obj.id : '';
    const env = requestEnvelope.safeParse(obj);
    if (!env.success)
      return send(ws, fail(id, 400, `Malformed request: ${oneLine(env.error, obj)}`));
    const { type, payload } = env.data;
    if (limits.inflight >= MAX_INFLIGHT_REQUESTS) {
      const detail = `Too many requests in flight on this connection (at most ${MAX_INFLIGHT_REQUESTS})`;
      return send(ws, fail(id, 429, detail));
    }
    limits.inflight++;
    try {
      send(ws, ok(id, await this.handlers[type](runnerId, payload)));
    } catch (err) {
      if (err instanceof DomainError) return send(ws, domainErrorReply(id, err));
      this.d.log.error({ runnerId, type, err }, 'agent request failed');
      send(ws, fail(id, 500, 'Internal server error'));
    } finally {
      limits.inflight--;
    }
  }
}
