import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { z } from 'zod';
import {
  AGENT_WS_PATH,
  CLOSE_CODES,
  MAX_MESSAGE_BYTES,
  REQUEST_TYPES,
  type AgentRequest,
  type ExecReply,
  type Reply,
  type RequestType,
} from '../common/agent-protocol';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
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

const statusPayload = z.object({ checkpoint_name: checkpointNameParam });

const ok = (id: string, data: unknown): Reply => ({ id, status: 'ok', data, error: null });
const fail = (id: string, code: number, detail: string): Reply => ({
  id,
  status: 'error',
  data: null,
  error: { code, detail },
});

/** A validation error as one line, e.g. `job_id: Field required`. */
function oneLine(err: z.ZodError, input: unknown): string {
  return validationDetail(err, 'payload', input)
    .map((d) => `${d.loc.slice(1).join('.') || 'payload'}: ${d.msg}`)
    .join('; ');
}

export interface GatewayDeps {
  inventory: InventoryStore;
  checkpoints: CheckpointService;
  hub: AgentHub;
  settings: Settings;
  log: Logger;
}

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
 * go to the AgentHub. A bad frame gets an error reply and never drops the
 * connection.
 */
export function attachAgentGateway(server: Server, d: GatewayDeps): { close(): void } {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 4 * MAX_MESSAGE_BYTES });

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path !== AGENT_WS_PATH) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    socket.on('error', () => undefined); // a client that vanishes mid-handshake is not our error
    wss.handleUpgrade(req, socket, head, (ws) => {
      const { runnerId, token } = credentials(req);
      const owner = token ? d.inventory.inventory.runnerIdForToken(token) : undefined;
      // Accept, then close with 4401, so clients see why (the old server's HTTP 403 hid it).
      if (!runnerId || !owner || owner !== runnerId) {
        d.log.warn({ runnerId: runnerId ?? null }, 'agent connection refused: invalid credentials');
        ws.close(CLOSE_CODES.invalidCredentials, 'Invalid credentials');
        return;
      }
      void serve(ws, runnerId);
    });
  };
  server.on('upgrade', onUpgrade);

  async function serve(ws: WebSocket, runnerId: string): Promise<void> {
    let lastSeen = Date.now();
    let sessionId: string | null = null;
    const heartbeat = setInterval(() => {
      if (Date.now() - lastSeen > d.settings.wsHeartbeatTimeoutSeconds * 1000) {
        d.log.warn({ runnerId }, 'agent heartbeat timed out; closing the connection');
        ws.terminate();
        return;
      }
      ws.ping();
      if (sessionId) {
        const sid = sessionId;
        void d.hub.touch(runnerId, sid).then(
          (current) => {
            if (!current) ws.close(CLOSE_CODES.replaced, 'Replaced by a newer connection');
          },
          () => undefined,
        );
      }
    }, d.settings.wsHeartbeatIntervalSeconds * 1000);
    heartbeat.unref();

    const ready = d.hub.register(runnerId, ws).then((sid) => (sessionId = sid));
    // Unregistered, this connection could not be reached: make the agent reconnect.
    ready.catch((err: unknown) => {
      d.log.error({ runnerId, err: (err as Error).message }, 'cannot register the agent session');
      ws.close(CLOSE_CODES.serverError, 'Server error, reconnect later');
    });
    ws.on('pong', () => (lastSeen = Date.now()));
    ws.on('error', (err) => d.log.warn({ runnerId, err: err.message }, 'agent connection error'));
    ws.on('close', (code) => {
      clearInterval(heartbeat);
      void ready
        .then((sid) => d.hub.unregister(runnerId, sid, `closed with ${code}`))
        .catch(() => undefined);
    });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      lastSeen = Date.now();
      void ready
        .then((sid) => onMessage(ws, runnerId, sid, data, isBinary))
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

    const env = requestEnvelope.safeParse(obj);
    if (!env.success)
      return send(ws, fail(id, 400, `Malformed request: ${oneLine(env.error, obj)}`));
    const { type, payload } = env.data;
    try {
      send(ws, ok(id, await handlers[type](runnerId, payload)));
    } catch (err) {
      if (err instanceof HttpError) {
        const detail = typeof err.detail === 'string' ? err.detail : JSON.stringify(err.detail);
        return send(ws, fail(id, err.status, detail));
      }
      d.log.error({ runnerId, type, err }, 'agent request failed');
      send(ws, fail(id, 500, 'Internal server error'));
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
  };

  return {
    close() {
      server.off('upgrade', onUpgrade);
      for (const ws of wss.clients) ws.close(CLOSE_CODES.goingAway, 'server shutting down');
      wss.close();
    },
  };
}
