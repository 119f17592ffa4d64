import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { z } from 'zod';
import {
  AGENT_VERSION_HEADER,
  AGENT_WS_PATH,
  CLOSE_CODES,
  CONTROLLER_VERSION_HEADER,
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
import { buildInfo, peerVersion } from '../common/build-info';
import type { Inventory, InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { CheckpointLogs } from '../api/checkpoint-logs';
import type { CheckpointService } from '../api/checkpoint-service';
import { HttpError } from '../api/errors';
import { checkpointNameParam, createBody, finalizeBody, validationDetail } from '../api/schemas';
import type { Settings } from '../config/settings';
import type { AgentHub } from './agent-hub';

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

const ok = (id: string, data: unknown): Reply => ({ id, status: 'ok', data, error: null });
/** An error reply; `retryAfter` (seconds, a cooldown's 429) adds `error.retry_after`. */
const fail = (id: string, code: number, detail: string, retryAfter?: number): Reply => ({
  id,
  status: 'error',
  data: null,
  error: retryAfter === undefined ? { code, detail } : { code, detail, retry_after: retryAfter },
});

/** A validation error as one line, e.g. `job_id: Field required`. */
function oneLine(err: z.ZodError, input: unknown): string {
  return validationDetail(err, 'payload', input)
    .map((d) => `${d.loc.slice(1).join('.') || 'payload'}: ${d.msg}`)
    .join('; ');
}

/**
 * At most this many sockets may be unauthenticated at once: an upgrade in
 * progress, or a connection refused with 4401 whose close has not completed.
 * Over it, an upgrade with bad credentials is refused with HTTP 503 and
 * `Too many unauthenticated connections` (one with valid credentials is served).
 */
export const MAX_UNAUTHENTICATED_SOCKETS = 100;

/**
 * A socket closed for its credentials (4401) is dropped this long after the
 * close frame if the client has not completed the close by then.
 */
export const AUTH_CLOSE_GRACE_MS = 1000;

/**
 * A session's last_seen_at is written at most this often (and at most four
 * times per heartbeat timeout), however many pongs and frames arrive.
 */
export const TOUCH_EVERY_MS = 5000;

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

export interface GatewayDeps {
  inventory: InventoryStore;
  checkpoints: CheckpointService;
  /** Checkpoint logs, for the `logs` request (a runner reads only its own). */
  logs: Pick<CheckpointLogs, 'pageByName'>;
  hub: AgentHub;
  settings: Settings;
  log: Logger;
  /** Defaults to MAX_UNAUTHENTICATED_SOCKETS. */
  maxUnauthenticatedSockets?: number;
  /** Defaults to AUTH_CLOSE_GRACE_MS. */
  authCloseGraceMs?: number;
}

/** An authenticated connection, re-checked whenever the inventory changes. */
interface LiveAgent {
  runnerId: string;
  /** Kept only to re-check it against a changed inventory; never logged. */
  token: string;
}

const TOO_MANY =
  'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\n' +
  'Connection: close\r\n\r\nToo many unauthenticated connections\r\n';

/** Credentials from the query (`runner_id`, `token`) or an `Authorization: Bearer` header. */
function credentials(req: IncomingMessage): { runnerId: string | null; token: string | null } {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const header = req.headers.authorization;
  const bearer = header?.startsWith('Bearer ') ? header.slice('Bearer '.length) : null;
  return {
    runnerId: url.searchParams.get('runner_id'),
    token: bearer ?? url.searchParams.get('token'),
  };
}

/**
 * The agent WebSocket gateway on the API's own HTTP server. Each
 * agent request goes through the same CheckpointService as REST; exec replies
 * and live output (exec_output) go to the AgentHub. A bad frame gets an error
 * reply and never drops the connection.
 */
export function attachAgentGateway(server: Server, d: GatewayDeps): { close(): void } {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 4 * MAX_MESSAGE_BYTES });
  const maxUnauthenticated = d.maxUnauthenticatedSockets ?? MAX_UNAUTHENTICATED_SOCKETS;
  const graceMs = d.authCloseGraceMs ?? AUTH_CLOSE_GRACE_MS;
  /** Sockets from the upgrade request until they are authenticated or gone. */
  const unauthenticated = new Set<Duplex>();
  const live = new Map<WebSocket, LiveAgent>();
  /** Upgrades with valid credentials: only they learn this controller's version. */
  const authenticatedUpgrades = new WeakSet<IncomingMessage>();
  wss.on('headers', (headers: string[], req: IncomingMessage) => {
    if (authenticatedUpgrades.has(req))
      headers.push(`${CONTROLLER_VERSION_HEADER}: ${buildInfo().version}`);
  });

  /** Writes an HTTP answer and drops the socket once it is written, whatever the client does. */
  const refuse = (socket: Duplex, response: string) => {
    socket.end(response, () => socket.destroy());
  };

  /** Closes for bad credentials; a client that does not complete the close is dropped soon after. */
  const closeInvalid = (ws: WebSocket) => {
    const timer = setTimeout(() => ws.terminate(), graceMs);
    timer.unref();
    ws.once('close', () => clearTimeout(timer));
    ws.close(CLOSE_CODES.invalidCredentials, 'Invalid credentials');
  };

  /**
   * A runner with an agent token accepts only that: its REST token is held by
   * its CI jobs, which must not stand in for the agent and answer its exec.
   */
  const credential = (inventory: Inventory, runnerId: string | null, token: string | null) =>
    runnerId && token ? inventory.agentCredential(runnerId, token) : 'invalid';
  const authentic = (inventory: Inventory, runnerId: string | null, token: string | null) =>
    credential(inventory, runnerId, token) === 'ok';

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path !== AGENT_WS_PATH) {
      refuse(socket, 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    socket.on('error', () => undefined); // a client that vanishes mid-handshake is not our error
    const { runnerId, token } = credentials(req);
    const checked = credential(d.inventory.inventory, runnerId, token);
    const valid = checked === 'ok';
    if (!valid && unauthenticated.size >= maxUnauthenticated) {
      d.log.warn(
        { runnerId: runnerId ?? null, unauthenticated: unauthenticated.size },
        'agent connection refused: too many unauthenticated connections',
      );
      refuse(socket, TOO_MANY);
      return;
    }
    unauthenticated.add(socket);
    socket.once('close', () => unauthenticated.delete(socket));
    if (valid) authenticatedUpgrades.add(req);
    wss.handleUpgrade(req, socket, head, (ws) => {
      // Accept, then close with 4401, so clients see why (the old server's HTTP 403 hid it).
      if (!valid || !runnerId || !token) {
        d.log.warn(
          { runnerId: runnerId ?? null },
          checked === 'rest-token'
            ? "agent connection refused: the runner's REST token, but this runner's agent must use its agent token (a CI job trying to stand in for the agent, or an agent config without agent_token)"
            : 'agent connection refused: invalid credentials',
        );
        closeInvalid(ws);
        return;
      }
      unauthenticated.delete(socket);
      live.set(ws, { runnerId, token });
      ws.once('close', () => live.delete(ws));
      // Null: an agent older than the version handshake, or a malformed header.
      void serve(ws, runnerId, peerVersion(req.headers[AGENT_VERSION_HEADER]));
    });
  };
  server.on('upgrade', onUpgrade);

  /** A changed inventory: connections whose token no longer names their runner are closed 4401. */
  const stopWatching = d.inventory.onChange((inventory) => {
    for (const [ws, a] of live) {
      if (authentic(inventory, a.runnerId, a.token)) continue;
      live.delete(ws);
      d.log.warn(
        { runnerId: a.runnerId },
        'agent connection closed: its credentials are no longer in the inventory',
      );
      closeInvalid(ws);
    }
  });

  /**
   * An agent's liveness is what it sends: pongs and frames. last_seen_at is
   * written at most this often per session (well within the heartbeat timeout).
   */
  const touchEveryMs = Math.min(TOUCH_EVERY_MS, (d.settings.wsHeartbeatTimeoutSeconds * 1000) / 4);

  async function serve(
    ws: WebSocket,
    runnerId: string,
    agentVersion: string | null,
  ): Promise<void> {
    let lastSeen = Date.now();
    let lastTouched = lastSeen; // registering sets last_seen_at
    let touching = false;
    let timedOut = false;
    let sessionId: string | null = null;
    /** The agent answered or sent something: it is alive (recorded, throttled). */
    const seen = () => {
      lastSeen = Date.now();
      if (!sessionId || touching || lastSeen - lastTouched < touchEveryMs) return;
      touching = true;
      lastTouched = lastSeen;
      d.hub
        .touch(runnerId, sessionId)
        .then(
          (current) => {
            if (!current) ws.close(CLOSE_CODES.replaced, 'Replaced by a newer connection');
          },
          (err: unknown) =>
            d.log.warn({ runnerId, err: (err as Error).message }, 'cannot record agent liveness'),
        )
        .finally(() => (touching = false));
    };
    const heartbeat = setInterval(() => {
      if (Date.now() - lastSeen > d.settings.wsHeartbeatTimeoutSeconds * 1000) {
        d.log.warn({ runnerId }, 'agent heartbeat timed out; closing the connection');
        timedOut = true;
        ws.terminate();
        return;
      }
      ws.ping();
    }, d.settings.wsHeartbeatIntervalSeconds * 1000);
    heartbeat.unref();

    const ready = d.hub.register(runnerId, ws, agentVersion).then((sid) => (sessionId = sid));
    // Unregistered, this connection could not be reached: make the agent reconnect.
    ready.catch((err: unknown) => {
      d.log.error({ runnerId, err: (err as Error).message }, 'cannot register the agent session');
      ws.close(CLOSE_CODES.serverError, 'Server error, reconnect later');
    });
    ws.on('pong', seen);
    ws.on('error', (err) => d.log.warn({ runnerId, err: err.message }, 'agent connection error'));
    ws.on('close', (code) => {
      clearInterval(heartbeat);
      void ready
        .then((sid) =>
          timedOut
            ? d.hub.unregister(runnerId, sid, 'heartbeat timed out', { keepSession: true })
            : d.hub.unregister(runnerId, sid, `closed with ${code}`, {
                forget: code === CLOSE_CODES.invalidCredentials,
              }),
        )
        .catch(() => undefined);
    });
    const limits: ConnectionLimits = {
      frames: new FrameRate(EXEC_OUTPUT_FRAMES_PER_CONNECTION),
      dropped: 0,
      lastDropWarning: 0,
      inflight: 0,
    };
    ws.on('message', (data: RawData, isBinary: boolean) => {
      seen();
      void ready
        .then((sid) => onMessage(ws, runnerId, sid, limits, data, isBinary))
        .catch((err: unknown) => d.log.error({ runnerId, err }, 'agent message handling failed'));
    });
  }

  const send = (ws: WebSocket, reply: Reply) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(reply));
  };

  async function onMessage(
    ws: WebSocket,
    runnerId: string,
    sessionId: string,
    limits: ConnectionLimits,
    data: RawData,
    isBinary: boolean,
  ): Promise<void> {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (isBinary)
      return send(ws, fail('', 400, 'Malformed message: binary frames are not supported'));
    if (bytes.length > MAX_MESSAGE_BYTES)
      return send(ws, fail('', 400, 'Malformed message: larger than 1 MiB'));
    let msg: unknown;
    try {
      msg = JSON.parse(bytes.toString('utf8'));
    } catch {
      return send(ws, fail('', 400, 'Malformed message: not valid JSON'));
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      return send(ws, fail('', 400, 'Malformed message: expected a JSON object'));
    }
    const obj = msg as Record<string, unknown>;
    const id = typeof obj.id === 'string' ? obj.id : '';

    // A frame with a top-level `status` is the reply to one of our exec commands.
    if ('status' in obj) {
      const r = execReply.safeParse(obj);
      if (r.success) await d.hub.handleReply(runnerId, sessionId, r.data.id, r.data.data);
      else if (id)
        await d.hub.handleReply(
          runnerId,
          sessionId,
          id,
          null,
          `malformed exec reply: ${oneLine(r.error, obj)}`,
        );
      else d.log.warn({ runnerId }, 'ignoring a malformed exec reply without an id');
      return;
    }

    // Live output of a running exec: passed on and not answered, unless malformed.
    if (obj.type === 'exec_output') {
      const o = execOutput.safeParse(obj);
      if (!o.success)
        return send(ws, fail(id, 400, `Malformed exec_output: ${oneLine(o.error, obj)}`));
      if (!limits.frames.take()) {
        limits.dropped++;
        const now = Date.now();
        if (now - limits.lastDropWarning >= DROP_WARN_EVERY_MS) {
          limits.lastDropWarning = now;
          d.log.warn(
            { runnerId, dropped: limits.dropped, perSecond: EXEC_OUTPUT_FRAMES_PER_CONNECTION },
            'dropping exec_output frames sent faster than the cap',
          );
        }
        return;
      }
      d.hub.handleOutput(runnerId, sessionId, o.data.id, o.data.payload);
      return;
    }

    const env = requestEnvelope.safeParse(obj);
    if (!env.success)
      return send(ws, fail(id, 400, `Malformed request: ${oneLine(env.error, obj)}`));
    const { type, payload } = env.data;
    if (limits.inflight >= MAX_INFLIGHT_REQUESTS)
      return send(
        ws,
        fail(
          id,
          429,
          `Too many requests in flight on this connection (at most ${MAX_INFLIGHT_REQUESTS})`,
        ),
      );
    limits.inflight++;
    try {
      send(ws, ok(id, await handlers[type](runnerId, payload)));
    } catch (err) {
      if (err instanceof HttpError) {
        const detail = typeof err.detail === 'string' ? err.detail : JSON.stringify(err.detail);
        return send(ws, fail(id, err.status, detail, err.retryAfterSeconds));
      }
      d.log.error({ runnerId, type, err }, 'agent request failed');
      send(ws, fail(id, 500, 'Internal server error'));
    } finally {
      limits.inflight--;
    }
  }

  /** Every request type, its payload validated exactly like its REST counterpart. */
  const handlers: Record<
    RequestType,
    (runnerId: string, payload: Record<string, unknown>) => Promise<unknown>
  > = {
    ping: async () => ({ pong: true }),
    create: async (runnerId, payload) => {
      const input = { ...payload, runner_id: runnerId };
      const body = createBody.safeParse(input);
      if (!body.success) throw new HttpError(422, oneLine(body.error, input));
      return d.checkpoints.create(runnerId, body.data);
    },
    finalize: async (runnerId, payload) => {
      const input = { source: 'agent', ...payload };
      const body = finalizeBody.safeParse(input);
      if (!body.success) throw new HttpError(422, oneLine(body.error, input));
      return d.checkpoints.finalize(runnerId, body.data);
    },
    status: async (runnerId, payload) => {
      const body = statusPayload.safeParse(payload);
      if (!body.success) throw new HttpError(422, oneLine(body.error, payload));
      return d.checkpoints.status(runnerId, body.data.checkpoint_name);
    },
    logs: async (runnerId, payload): Promise<LogsData> => {
      const body = logsPayload.safeParse(payload);
      if (!body.success) throw new HttpError(422, oneLine(body.error, payload));
      const { checkpoint_name: name, after = 0 } = body.data;
      return fitLogsPage(await d.logs.pageByName(runnerId, name, after));
    },
  };

  return {
    close() {
      stopWatching();
      server.off('upgrade', onUpgrade);
      for (const ws of wss.clients) ws.close(CLOSE_CODES.goingAway, 'server shutting down');
      wss.close();
    },
  };
}
