import type { RawData, WebSocket } from 'ws';
import { CLOSE_CODES } from '../common/agent-protocol';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import type { AgentHub } from './agent-hub';
import { connectionLimits, type MessageHandler } from './messages';

/**
 * A session's last_seen_at is written at most this often (and at most four
 * times per heartbeat timeout), however many pongs and frames arrive.
 */
export const TOUCH_EVERY_MS = 5000;

export interface SessionDeps {
  hub: AgentHub;
  settings: Settings;
  log: Logger;
  messages: MessageHandler;
}

/**
 * Records an agent's liveness: what it sends (pongs and frames). last_seen_at
 * is written at most every `touchEveryMs` (well within the heartbeat
 * timeout); a session that another connection replaced is closed.
 */
class Liveness {
  lastSeen = Date.now();
  private lastTouched = this.lastSeen; // registering sets last_seen_at
  private touching = false;
  sessionId: string | null = null;

  constructor(
    private readonly d: SessionDeps,
    private readonly ws: WebSocket,
    private readonly runnerId: string,
    private readonly touchEveryMs: number,
  ) {}

  /** The agent answered or sent something: it is alive (recorded, throttled). */
  seen(): void {
    this.lastSeen = Date.now();
    if (!this.sessionId || this.touching || this.lastSeen - this.lastTouched < this.touchEveryMs)
      return;
    this.touching = true;
    this.lastTouched = this.lastSeen;
    const { runnerId } = this;
    this.d.hub
      .touch(runnerId, this.sessionId)
      .then(
        (current) => {
          if (!current) this.ws.close(CLOSE_CODES.replaced, 'Replaced by a newer connection');
        },
        (err: unknown) =>
          this.d.log.warn(
            { runnerId, err: (err as Error).message },
            'cannot record agent liveness',
          ),
      )
      .finally(() => (this.touching = false));
  }
}

/**
 * Serves one authenticated agent connection until it closes: registers its
 * session in the AgentHub, pings it and drops it when it falls silent past
 * the heartbeat timeout, and hands its frames to the message handler.
 */
export function serveSession(
  d: SessionDeps,
  ws: WebSocket,
  runnerId: string,
  agentVersion: string | null,
): void {
  const timeoutMs = d.settings.wsHeartbeatTimeoutSeconds * 1000;
  const live = new Liveness(d, ws, runnerId, Math.min(TOUCH_EVERY_MS, timeoutMs / 4));
  let timedOut = false;
  const heartbeat = setInterval(() => {
    if (Date.now() - live.lastSeen > timeoutMs) {
      d.log.warn({ runnerId }, 'agent heartbeat timed out; closing the connection');
      timedOut = true;
      ws.terminate();
      return;
    }
    ws.ping();
  }, d.settings.wsHeartbeatIntervalSeconds * 1000);
  heartbeat.unref();

  const ready = d.hub.register(runnerId, ws, agentVersion).then((sid) => (live.sessionId = sid));
  // Unregistered, this connection could not be reached: make the agent reconnect.
  ready.catch((err: unknown) => {
    d.log.error({ runnerId, err: (err as Error).message }, 'cannot register the agent session');
    ws.close(CLOSE_CODES.serverError, 'Server error, reconnect later');
  });
  ws.on('pong', () => live.seen());
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
  const limits = connectionLimits();
  ws.on('message', (data: RawData, isBinary: boolean) => {
    live.seen();
    void ready
      .then((sessionId) =>
        d.messages.onMessage({ ws, runnerId, sessionId, limits }, data, isBinary),
      )
      .catch((err: unknown) => d.log.error({ runnerId, err }, 'agent message handling failed'));
  });
}
