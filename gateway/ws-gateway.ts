import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  AGENT_VERSION_HEADER,
  AGENT_WS_PATH,
  CLOSE_CODES,
  CONTROLLER_VERSION_HEADER,
  MAX_MESSAGE_BYTES,
} from '../common/agent-protocol';
import { buildInfo, peerVersion } from '../common/build-info';
import type { Inventory, InventoryStore } from '../config/inventory';
import type { Settings } from '../config/settings';
import { MessageHandler, type MessageDeps } from './messages';
import { serveSession, type SessionDeps } from './session';

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

export interface GatewayDeps extends MessageDeps {
  inventory: InventoryStore;
  settings: Settings;
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

const NOT_FOUND = 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';

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
 * A runner with an agent token accepts only that: its REST token is held by
 * its CI jobs, which must not stand in for the agent and answer its exec.
 */
const credential = (inventory: Inventory, runnerId: string | null, token: string | null) =>
  runnerId && token ? inventory.agentCredential(runnerId, token) : 'invalid';

/** Writes an HTTP answer and drops the socket once it is written, whatever the client does. */
const refuse = (socket: Duplex, response: string) => {
  socket.end(response, () => socket.destroy());
};

/**
 * The connections of the agent WebSocket gateway: upgrades and their
 * credentials, the cap on unauthenticated sockets, closes with 4401 for bad
 * credentials (also when the inventory drops them later). Each authenticated
 * connection is served by serveSession.
 */
class Connections {
  readonly wss = new WebSocketServer({ noServer: true, maxPayload: 4 * MAX_MESSAGE_BYTES });
  /** Sockets from the upgrade request until they are authenticated or gone. */
  private readonly unauthenticated = new Set<Duplex>();
  private readonly live = new Map<WebSocket, LiveAgent>();
  /** Upgrades with valid credentials: only they learn this controller's version. */
  private readonly authenticatedUpgrades = new WeakSet<IncomingMessage>();
  private readonly session: SessionDeps;

  constructor(private readonly d: GatewayDeps) {
    this.session = { ...d, messages: new MessageHandler(d) };
    this.wss.on('headers', (headers: string[], req: IncomingMessage) => {
      if (this.authenticatedUpgrades.has(req))
        headers.push(`${CONTROLLER_VERSION_HEADER}: ${buildInfo().version}`);
    });
  }

  /** Closes for bad credentials; a client that does not complete the close is dropped soon after. */
  private closeInvalid(ws: WebSocket): void {
    const timer = setTimeout(() => ws.terminate(), this.d.authCloseGraceMs ?? AUTH_CLOSE_GRACE_MS);
    timer.unref();
    ws.once('close', () => clearTimeout(timer));
    ws.close(CLOSE_CODES.invalidCredentials, 'Invalid credentials');
  }

  readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path !== AGENT_WS_PATH) return refuse(socket, NOT_FOUND);
    socket.on('error', () => undefined); // a client that vanishes mid-handshake is not our error
    const { runnerId, token } = credentials(req);
    const checked = credential(this.d.inventory.inventory, runnerId, token);
    const valid = checked === 'ok';
    const max = this.d.maxUnauthenticatedSockets ?? MAX_UNAUTHENTICATED_SOCKETS;
    if (!valid && this.unauthenticated.size >= max) {
      this.d.log.warn(
        { runnerId: runnerId ?? null, unauthenticated: this.unauthenticated.size },
        'agent connection refused: too many unauthenticated connections',
      );
      return refuse(socket, TOO_MANY);
    }
    this.unauthenticated.add(socket);
    socket.once('close', () => this.unauthenticated.delete(socket));
    if (valid) this.authenticatedUpgrades.add(req);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      // Accept, then close with 4401, so clients see why (the old server's HTTP 403 hid it).
      if (!valid || !runnerId || !token) {
        this.d.log.warn(
          { runnerId: runnerId ?? null },
          checked === 'rest-token'
            ? "agent connection refused: the runner's REST token, but this runner's agent must use its agent token (a CI job trying to stand in for the agent, or an agent config without agent_token)"
            : 'agent connection refused: invalid credentials',
        );
        return this.closeInvalid(ws);
      }
      this.unauthenticated.delete(socket);
      this.live.set(ws, { runnerId, token });
      ws.once('close', () => this.live.delete(ws));
      // Null: an agent older than the version handshake, or a malformed header.
      serveSession(this.session, ws, runnerId, peerVersion(req.headers[AGENT_VERSION_HEADER]));
    });
  };

  /** A changed inventory: connections whose token no longer names their runner are closed 4401. */
  readonly recheck = (inventory: Inventory): void => {
    for (const [ws, a] of this.live) {
      if (credential(inventory, a.runnerId, a.token) === 'ok') continue;
      this.live.delete(ws);
      this.d.log.warn(
        { runnerId: a.runnerId },
        'agent connection closed: its credentials are no longer in the inventory',
      );
      this.closeInvalid(ws);
    }
  };
}

/**
 * The agent WebSocket gateway on the API's own HTTP server. Each agent
 * request goes through the same CheckpointService as REST (gateway/messages.ts);
 * exec replies and live output (exec_output) go to the AgentHub.
 */
export function attachAgentGateway(server: Server, d: GatewayDeps): { close(): void } {
  const c = new Connections(d);
  server.on('upgrade', c.onUpgrade);
  const stopWatching = d.inventory.onChange(c.recheck);
  return {
    close() {
      stopWatching();
      server.off('upgrade', c.onUpgrade);
      for (const ws of c.wss.clients) ws.close(CLOSE_CODES.goingAway, 'server shutting down');
      c.wss.close();
    },
  };
}
