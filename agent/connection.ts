import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { WebSocket, type RawData } from 'ws';
import {
  AGENT_VERSION_HEADER,
  CLOSE_CODES,
  CONTROLLER_VERSION_HEADER,
  type Reply,
  type RequestType,
} from '../common/agent-protocol';
import { buildInfo, majorDiffers, peerVersion } from '../common/build-info';
import type { Logger } from '../config/logger';
import {
  classifyControllerFrame,
  errorReply,
  normalizeReply,
  type ControllerFrame,
  type IncomingExec,
} from './messages';

const INITIAL_RECONNECT_DELAY_MS = 1000;
/** A controller silent for this many heartbeat intervals is presumed gone. */
const SILENT_INTERVALS = 3;
const MAX_INCOMING_BYTES = 4 * 1024 * 1024;
/**
 * A droppable frame (live output) is not sent while more than this is waiting
 * to go out: on a stalled connection (until the heartbeat notices, minutes)
 * ws would otherwise keep every frame in memory.
 */
const MAX_BUFFERED_FOR_DROPPABLE = 1024 * 1024;

export interface ConnectionOptions {
  url: string;
  runnerId: string;
  token: string;
  /** Seconds. */
  reconnectMaxDelay: number;
  /** Seconds. */
  heartbeatInterval: number;
  log: Logger;
  /** Called for every `exec` command; the handler replies with `send`. */
  onExec: (command: IncomingExec) => void;
  /** This agent's version, sent on the handshake; defaults to the build's. */
  version?: string;
}

export interface RequestOptions {
  /** How long to wait for the reply once the request is sent. */
  timeoutMs: number;
  /** How long to wait for a connection when there is none. */
  connectWaitMs: number;
}

/** The controller URL as it may appear in a log: no token, no user info. */
export function loggableUrl(url: URL | string): string {
  const u = new URL(url.toString());
  u.searchParams.delete('token');
  u.username = '';
  u.password = '';
  return u.toString();
}

interface Pending {
  settle: (reply: Reply) => void;
}

/**
 * The agent's WebSocket to the controller: connects, authenticates,
 * reconnects with backoff, heartbeats, and matches replies to requests.
 *
 * Authentication sends the token in an `Authorization: Bearer` header, so it
 * stays out of proxies' access logs. The old Python controller reads it only
 * from the query string and answers its absence with an HTTP 403 handshake
 * rejection; after such a 403 the token goes in the query from then on.
 */
export class ControllerConnection {
  private ws: WebSocket | null = null;
  private isOpen = false;
  private stopped = false;
  private tokenInQuery = false;
  private delayMs = INITIAL_RECONNECT_DELAY_MS;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private lastSeen = 0;
  private readonly pending = new Map<string, Pending>();
  private readonly pingIds = new Set<string>();
  private readonly openWaiters = new Set<(open: boolean) => void>();
  private closedWaiters: Array<() => void> = [];
  private readonly maxDelayMs: number;
  private readonly heartbeatMs: number;

  constructor(private readonly o: ConnectionOptions) {
    this.maxDelayMs = Math.max(o.reconnectMaxDelay * 1000, INITIAL_RECONNECT_DELAY_MS);
    this.heartbeatMs = o.heartbeatInterval * 1000;
  }

  get connected(): boolean {
    return this.isOpen;
  }

  start(): void {
    this.connect();
  }

  /** Resolves true once connected, false after `timeoutMs` or on stop. */
  waitConnected(timeoutMs: number): Promise<boolean> {
    if (this.isOpen) return Promise.resolve(true);
    if (this.stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter = (open: boolean) => {
        clearTimeout(timer);
        this.openWaiters.delete(waiter);
        resolve(open);
      };
      const timer = setTimeout(() => waiter(false), timeoutMs);
      timer.unref();
      this.openWaiters.add(waiter);
    });
  }

  /**
   * Sends a frame if connected; false if it could not be sent. A `droppable`
   * frame is also refused while the connection has a backlog.
   */
  send(frame: unknown, o: { droppable?: boolean } = {}): boolean {
    const ws = this.ws;
    if (!ws || !this.isOpen || ws.readyState !== WebSocket.OPEN) return false;
    if (o.droppable && ws.bufferedAmount > MAX_BUFFERED_FOR_DROPPABLE) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch (err) {
      this.o.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'send failed');
      return false;
    }
  }

  /**
   * Sends a request under a fresh id and resolves with the controller's reply
   * (under that id). Never rejects: failures are error replies (503, 504).
   */
  async request(
    type: RequestType,
    payload: Record<string, unknown>,
    o: RequestOptions,
  ): Promise<Reply> {
    if (!this.isOpen && !(await this.waitConnected(o.connectWaitMs))) {
      return errorReply('', 503, 'Not connected to controller');
    }
    const ws = this.ws;
    if (!ws || !this.isOpen) return errorReply('', 503, 'Connection lost');
    const id = randomUUID();
    return new Promise<Reply>((resolve) => {
      const settle = (reply: Reply) => {
        if (!this.pending.delete(id)) return;
        clearTimeout(timer);
        resolve(reply);
      };
      const timer = setTimeout(
        () => settle(errorReply(id, 504, 'Controller did not respond in time')),
        o.timeoutMs,
      );
      timer.unref();
      this.pending.set(id, { settle });
      try {
        ws.send(JSON.stringify({ id, type, payload }), (err) => {
          if (err) settle(errorReply(id, 503, 'Connection lost'));
        });
      } catch {
        settle(errorReply(id, 503, 'Connection lost'));
      }
    });
  }

  /** Closes the connection with 1000 and stops reconnecting. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    for (const w of [...this.openWaiters]) w(false);
    const ws = this.ws;
    if (!ws) return;
    const closed = new Promise<void>((resolve) => this.closedWaiters.push(resolve));
    if (ws.readyState === WebSocket.OPEN) {
      ws.close(CLOSE_CODES.normal, 'agent shutting down');
      const t = setTimeout(() => ws.terminate(), 3000);
      t.unref();
    } else {
      ws.terminate();
    }
    await closed;
  }

  /** Removes the token from text that might echo a URL (error messages). */
  private scrub(text: string): string {
    return this.o.token ? text.split(this.o.token).join('[redacted]') : text;
  }

  private connect(): void {
    if (this.stopped) return;
    const { log } = this.o;
    const url = new URL(this.o.url);
    url.searchParams.set('runner_id', this.o.runnerId);
    const version = this.o.version ?? buildInfo().version;
    const headers: Record<string, string> = { [AGENT_VERSION_HEADER]: version };
    if (this.tokenInQuery) url.searchParams.set('token', this.o.token);
    else headers.Authorization = `Bearer ${this.o.token}`;
    log.info(
      { url: loggableUrl(url), tokenIn: this.tokenInQuery ? 'query' : 'header' },
      'connecting to controller',
    );

    let ws: WebSocket;
    try {
      ws = new WebSocket(url, {
        headers,
        handshakeTimeout: 10_000,
        maxPayload: MAX_INCOMING_BYTES,
        followRedirects: false,
      });
    } catch (err) {
      log.error(
        { err: this.scrub(err instanceof Error ? err.message : String(err)) },
        'cannot connect',
      );
      this.scheduleReconnect(this.delayMs);
      return;
    }
    this.ws = ws;
    let handshakeStatus: number | undefined;
    let opened = false;
    /** Null: a controller that does not say (older than the version handshake). */
    let controllerVersion: string | null = null;

    ws.on('unexpected-response', (_req, res: IncomingMessage) => {
      handshakeStatus = res.statusCode;
      res.resume();
      ws.terminate();
    });
    ws.on('upgrade', (res: IncomingMessage) => {
      controllerVersion = peerVersion(res.headers[CONTROLLER_VERSION_HEADER]);
    });
    ws.on('open', () => {
      opened = true;
      this.isOpen = true;
      this.delayMs = INITIAL_RECONNECT_DELAY_MS;
      this.lastSeen = Date.now();
      this.startHeartbeat(ws);
      log.info(
        { runnerId: this.o.runnerId, agentVersion: version, controllerVersion },
        'connected to controller',
      );
      if (controllerVersion && majorDiffers(version, controllerVersion)) {
        log.warn(
          { agentVersion: version, controllerVersion },
          `the controller's major version differs from this agent's (controller ${controllerVersion}, ` +
            `agent ${version}); upgrade the older side`,
        );
      }
      for (const w of [...this.openWaiters]) w(true);
    });
    ws.on('message', (data: RawData) => {
      this.lastSeen = Date.now();
      this.onMessage(data);
    });
    ws.on('ping', () => (this.lastSeen = Date.now()));
    ws.on('pong', () => (this.lastSeen = Date.now()));
    ws.on('error', (err) => {
      if (handshakeStatus !== undefined) return; // reported on close
      log.warn({ err: this.scrub(err.message) }, 'controller connection error');
    });
    ws.on('close', (code: number, reason: Buffer) => {
      this.onClose(ws, { opened, code, reason: reason.toString('utf8'), handshakeStatus });
    });
  }

  private onClose(
    ws: WebSocket,
    c: { opened: boolean; code: number; reason: string; handshakeStatus: number | undefined },
  ): void {
    const { log } = this.o;
    if (this.ws !== ws) return; // only the current connection may change our state
    clearInterval(this.heartbeatTimer);
    this.ws = null;
    this.isOpen = false;
    this.pingIds.clear();
    for (const p of [...this.pending.values()]) p.settle(errorReply('', 503, 'Connection lost'));
    if (this.stopped) {
      const waiters = this.closedWaiters;
      this.closedWaiters = [];
      waiters.forEach((w) => w());
      return;
    }

    const badCredentials =
      c.code === CLOSE_CODES.invalidCredentials ||
      (this.tokenInQuery && (c.handshakeStatus === 401 || c.handshakeStatus === 403));
    if (c.handshakeStatus === 403 && !this.tokenInQuery) {
      this.tokenInQuery = true;
      log.warn(
        { runnerId: this.o.runnerId },
        'controller rejected the Authorization header (HTTP 403), as the old controller does; ' +
          'sending the token in the query string from now on',
      );
      this.scheduleReconnect(0);
      return;
    }
    if (badCredentials) {
      log.error(
        { runnerId: this.o.runnerId, code: c.code, httpStatus: c.handshakeStatus ?? null },
        `controller rejected the credentials of runner '${this.o.runnerId}' (Invalid credentials); ` +
          `check runner_id and token in the agent config; retrying in ${this.maxDelayMs / 1000}s`,
      );
      this.scheduleReconnect(this.maxDelayMs);
      return;
    }
    if (c.handshakeStatus !== undefined) {
      log.warn({ httpStatus: c.handshakeStatus }, 'controller refused the WebSocket handshake');
    } else if (c.opened) {
      log.warn({ code: c.code, reason: c.reason }, 'connection to controller closed');
    }
    this.scheduleReconnect(this.delayMs);
  }

  /** Waits `baseMs` plus up to 10% jitter, and doubles the next delay up to the maximum. */
  private scheduleReconnect(baseMs: number): void {
    const wait = baseMs + Math.random() * 0.1 * baseMs;
    this.delayMs = Math.min(Math.max(baseMs, INITIAL_RECONNECT_DELAY_MS) * 2, this.maxDelayMs);
    if (baseMs > 0) this.o.log.info({ delayMs: Math.round(wait) }, 'reconnecting to controller');
    this.reconnectTimer = setTimeout(() => this.connect(), wait);
    this.reconnectTimer.unref();
  }

  private startHeartbeat(ws: WebSocket): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => {
      const silentMs = Date.now() - this.lastSeen;
      if (silentMs > SILENT_INTERVALS * this.heartbeatMs) {
        this.o.log.warn({ silentMs }, 'no message from the controller; reconnecting');
        ws.terminate();
        return;
      }
      const id = randomUUID();
      if (this.pingIds.size > 16) this.pingIds.clear(); // an old controller may never answer
      this.pingIds.add(id);
      this.send({ id, type: 'ping', payload: {} });
    }, this.heartbeatMs);
    this.heartbeatTimer.unref();
  }

  private readonly frameHandlers: {
    [K in ControllerFrame['kind']]: (f: Extract<ControllerFrame, { kind: K }>) => void;
  } = {
    reply: (f) => {
      const p = this.pending.get(f.id);
      if (p) p.settle(normalizeReply(f.frame, f.id));
      else if (!this.pingIds.delete(f.id))
        this.o.log.debug({ id: f.id }, 'ignoring a reply to an unknown request');
    },
    exec: (f) => this.o.onExec(f.command),
    malformed: (f) =>
      this.o.log.warn({ id: f.id ?? null, problem: f.detail }, 'ignoring a malformed frame'),
  };

  private onMessage(data: RawData): void {
    const bytes = Buffer.isBuffer(data)
      ? data
      : Array.isArray(data)
        ? Buffer.concat(data)
        : Buffer.from(data);
    let value: unknown;
    try {
      value = JSON.parse(bytes.toString('utf8'));
    } catch {
      this.o.log.warn({ bytes: bytes.length }, 'ignoring a frame that is not JSON');
      return;
    }
    const frame = classifyControllerFrame(value);
    try {
      (this.frameHandlers[frame.kind] as (f: ControllerFrame) => void)(frame);
    } catch (err) {
      this.o.log.error({ err }, 'handling a controller frame failed');
    }
  }
}
