import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  AGENT_VERSION_HEADER,
  CONTROLLER_VERSION_HEADER,
  LOGS_PAGE_ENTRIES,
  type LogsEntry,
} from '../../common/agent-protocol';
import { agentConfig, type AgentConfig } from '../../agent/config';
import type { Logger } from '../../config/logger';
import { fitLogsPage } from '../../gateway/messages';
import { REPO } from '../helpers/processes';

/**
 * An agent config for a test against a FakeController: its URL, the runner's
 * credentials and socket, short reconnect and request timeouts; `over` wins.
 */
export function testAgentConfig(
  ctl: { url: string },
  runner: { runnerId: string; token: string; socketPath: string },
  over: Partial<AgentConfig> = {},
): AgentConfig {
  return agentConfig({
    controllerUrl: ctl.url,
    ...runner,
    reconnectMaxDelay: 5,
    heartbeatInterval: 30,
    requestTimeout: 5,
    ...over,
  });
}

/** Fails early, with the fix, when the CLI under test has not been built. */
export function requireBuiltCli(): void {
  if (!existsSync(join(REPO, 'dist', 'agent', 'daemon.js'))) {
    throw new Error('dist/agent is missing: run `npx tsc -p tsconfig.build.json` first');
  }
}

/** A fresh temp directory (short, so socket paths stay under the sun_path limit). */
export function tempDir(): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'e2a-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export { prng } from '../helpers/prng';

/** True if `pid` is a live process (a zombie awaiting its reaper counts as gone). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true; // no procfs: trust kill(0)
  }
}

/** Open file descriptors of this process (Linux), or undefined elsewhere. */
export function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

/** A pino logger writing into memory, so a test can read (and grep) what the agent logged. */
export function memoryLogger(): { log: Logger; lines: () => string[]; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString('utf8'));
      cb();
    },
  });
  const log = pino({ level: 'debug' }, stream);
  const text = () => chunks.join('');
  return { log, text, lines: () => text().split('\n').filter(Boolean) };
}

export interface Checkpoint {
  name: string;
  runner_id: string;
  job_id: string;
  state: string;
  finalize_status: string | null;
  finalize_source: string | null;
  created_at: string;
  finalized_at: string | null;
}

export interface AgentConnection {
  ws: WebSocket;
  runnerId: string | null;
  /** Where the token came from on this handshake. */
  tokenIn: 'header' | 'query' | null;
  rawUrl: string;
  closed: boolean;
  /** The close code the server saw. */
  closeCode?: number;
  /** The agent's version header on this handshake (null: none). */
  agentVersion: string | null;
}

type Frame = Record<string, unknown>;

/**
 * A small controller speaking the agent WebSocket protocol on 127.0.0.1:<random>/ws/agent, with an
 * in-memory checkpoint store. `mode: 'old'` behaves like the Python controller:
 * token only from the query, bad or missing token → HTTP 403 on the handshake.
 */
export class FakeController {
  url = '';
  mode: 'new' | 'old' = 'new';
  /** Don't answer agent requests at all. */
  silent = false;
  /** Terminate the connection when a request of this type arrives. */
  dropOn: string | null = null;
  /** Answer neither requests nor pings (a hung controller). */
  mute = false;
  /** Sent as the controller's version header on the 101 answer; null: none (an older controller). */
  controllerVersion: string | null = null;
  readonly handshakes: Array<{ tokenIn: 'header' | 'query' | null; ok: boolean }> = [];
  readonly connections: AgentConnection[] = [];
  /** Every request frame an agent sent (pings included). */
  readonly requests: Frame[] = [];
  /** Every frame an agent sent, in arrival order, with when it arrived (Date.now()). */
  readonly received: Array<{ at: number; frame: Frame }> = [];
  readonly checkpoints = new Map<string, Checkpoint>();
  /** Each checkpoint's log, by name, for `logs` requests (pages as the real gateway cuts them). */
  readonly logs = new Map<string, LogsEntry[]>();
  /** Answer `logs` as a controller older than it: a 400 naming `type` (the Python text). */
  knowsLogs = true;
  private readonly execWaiters = new Map<string, (f: Frame) => void>();
  private server!: Server;
  private wss!: WebSocketServer;

  constructor(private readonly tokens: Record<string, string>) {}

  async start(): Promise<this> {
    this.server = createServer((_req, res) => res.writeHead(404).end());
    this.wss = new WebSocketServer({ noServer: true });
    this.wss.on('headers', (headers: string[]) => {
      if (this.controllerVersion)
        headers.push(`${CONTROLLER_VERSION_HEADER}: ${this.controllerVersion}`);
    });
    this.server.on('upgrade', (req: IncomingMessage, socket, head) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const runnerId = url.searchParams.get('runner_id');
      const auth = req.headers.authorization;
      const headerToken = auth?.startsWith('Bearer ') ? auth.slice(7) : null;
      const queryToken = url.searchParams.get('token');
      const token = this.mode === 'old' ? queryToken : (headerToken ?? queryToken);
      const tokenIn = headerToken ? 'header' : queryToken ? 'query' : null;
      const ok = !!runnerId && !!token && this.tokens[runnerId] === token;
      this.handshakes.push({ tokenIn, ok });
      if (url.pathname !== '/ws/agent' || (this.mode === 'old' && !ok)) {
        socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        const conn: AgentConnection = {
          ws,
          runnerId,
          tokenIn,
          rawUrl: req.url ?? '',
          closed: false,
          agentVersion: (req.headers[AGENT_VERSION_HEADER] as string | undefined) ?? null,
        };
        this.connections.push(conn);
        ws.on('close', (code) => {
          conn.closed = true;
          conn.closeCode = code;
        });
        if (!ok) {
          ws.close(4401, 'Invalid credentials');
          return;
        }
        ws.on('message', (data) => this.onMessage(ws, runnerId!, data.toString()));
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const { port } = this.server.address() as AddressInfo;
    this.url = `ws://127.0.0.1:${port}/ws/agent`;
    return this;
  }

  /** A checkpoint of `runnerId` in `state`, with an empty log; returns its name. */
  addCheckpoint(runnerId: string, state = 'created'): string {
    const name = `job-${randomBytes(2).toString('hex')}-1700000000-${randomBytes(4).toString('hex')}`;
    this.checkpoints.set(name, {
      name,
      runner_id: runnerId,
      job_id: '1',
      state,
      finalize_status: null,
      finalize_source: null,
      created_at: new Date().toISOString(),
      finalized_at: null,
    });
    this.logs.set(name, []);
    return name;
  }

  /** Appends entries to a checkpoint's log, numbering them on. */
  appendLog(name: string, ...entries: Array<Omit<LogsEntry, 'seq' | 'at'>>): void {
    const log = this.logs.get(name)!;
    for (const e of entries)
      log.push({
        seq: log.length + 1,
        at: new Date(Date.UTC(2026, 10, 27, 14, 0, log.length)).toISOString(),
        ...e,
      });
  }

  /** Live (open) connections. */
  open(): AgentConnection[] {
    return this.connections.filter((c) => !c.closed);
  }

  /** Requests of one type. */
  requestsOf(type: string): Frame[] {
    return this.requests.filter((r) => r.type === type);
  }

  /** Sends an exec command to the newest live agent and resolves with its reply. */
  exec(cmd: unknown, timeout: unknown = 10, id = `exec-${randomBytes(4).toString('hex')}`) {
    const conn = this.open().at(-1);
    if (!conn) throw new Error('no agent connected');
    const reply = new Promise<Frame>((resolve) => this.execWaiters.set(id, resolve));
    conn.ws.send(JSON.stringify({ id, type: 'exec', payload: { cmd, timeout } }));
    return reply;
  }

  /** Sends raw text to the newest live agent. */
  sendRaw(text: string): void {
    this.open().at(-1)?.ws.send(text);
  }

  /** Cuts every connection without a close frame (a network failure). */
  dropAll(): void {
    for (const c of this.open()) c.ws.terminate();
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.ws.terminate();
    this.wss.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onMessage(ws: WebSocket, runnerId: string, text: string): void {
    if (this.mute) return;
    const msg = JSON.parse(text) as Frame;
    this.received.push({ at: Date.now(), frame: msg });
    if (msg.type === 'exec_output' && !('status' in msg)) return; // live output: not answered
    if ('status' in msg) {
      const id = String(msg.id);
      this.execWaiters.get(id)?.(msg);
      this.execWaiters.delete(id);
      return;
    }
    this.requests.push(msg);
    if (this.silent && msg.type !== 'ping') return;
    if (this.dropOn === msg.type) {
      ws.terminate();
      return;
    }
    const id = msg.id;
    const reply = (data: unknown, error: { code: number; detail: string } | null = null) =>
      ws.send(JSON.stringify({ id, status: error ? 'error' : 'ok', data, error }));
    const payload = (msg.payload ?? {}) as Record<string, unknown>;
    // The Python controller's answer to a type it does not know (no `data` key).
    const oldControllerReply = () =>
      ws.send(
        JSON.stringify({
          id,
          status: 'error',
          error: {
            code: 400,
            detail: `1 validation error for WSRequest\ntype\n  Input should be 'create', 'finalize', 'status' or 'ping' [type=literal_error, input_value=${JSON.stringify(msg.type)}, input_type=str]`,
          },
        }),
      );
    switch (msg.type) {
      case 'ping':
        return reply({ pong: true });
      case 'create': {
        const active = [...this.checkpoints.values()].find(
          (c) => c.runner_id === runnerId && c.state === 'created',
        );
        if (active) {
          return reply(null, {
            code: 409,
            detail: `Active checkpoint '${active.name}' already exists for runner '${runnerId}'`,
          });
        }
        const now = Math.floor(Date.now() / 1000);
        const name = `job-${String(payload.job_id)}-${now}-${randomBytes(4).toString('hex')}`;
        const cp: Checkpoint = {
          name,
          runner_id: runnerId,
          job_id: String(payload.job_id),
          state: 'created',
          finalize_status: null,
          finalize_source: null,
          created_at: new Date().toISOString(),
          finalized_at: null,
        };
        this.checkpoints.set(name, cp);
        return reply(cp);
      }
      case 'finalize': {
        const cp = this.checkpoints.get(String(payload.checkpoint_name));
        if (!cp) return reply(null, { code: 404, detail: 'Checkpoint not found' });
        if (cp.state !== 'created') return reply({ detail: 'Already finalized', state: cp.state });
        cp.state = 'finalize_queued';
        cp.finalize_status = String(payload.status);
        cp.finalize_source = String(payload.source ?? 'agent');
        return reply({ detail: 'Finalize queued', checkpoint_name: cp.name });
      }
      case 'status': {
        const cp = this.checkpoints.get(String(payload.checkpoint_name));
        if (!cp) return reply(null, { code: 404, detail: 'Checkpoint not found' });
        return reply(cp);
      }
      case 'logs': {
        if (!this.knowsLogs) return oldControllerReply();
        const cp = this.checkpoints.get(String(payload.checkpoint_name));
        if (!cp) return reply(null, { code: 404, detail: 'Checkpoint not found' });
        if (cp.runner_id !== runnerId)
          return reply(null, { code: 403, detail: 'Token not authorized for this checkpoint' });
        const after = typeof payload.after === 'number' ? payload.after : 0;
        // As the real controller: a store page, done only once the checkpoint ended, cut to fit.
        const entries = (this.logs.get(cp.name) ?? [])
          .filter((e) => e.seq > after)
          .slice(0, LOGS_PAGE_ENTRIES);
        const ended = !['created', 'finalize_queued', 'needs_attention'].includes(cp.state);
        const next = entries.at(-1)?.seq ?? after;
        return reply(
          fitLogsPage({ entries, next, done: ended && entries.length < LOGS_PAGE_ENTRIES }),
        );
      }
      default:
        return oldControllerReply();
    }
  }
}
