import { chmodSync, chownSync, lstatSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { Reply } from '../common/agent-protocol';
import type { Logger } from '../config/logger';
import { encodeFrame, FrameDecoder } from './framing';
import { errorReply, isRecord } from './messages';

/**
 * The agent's Unix-socket IPC: one framed JSON request and one framed
 * JSON response per connection. The client half is what the CLI uses in every CI
 * job, so this module loads Node builtins only.
 */

/** Socket mode: owner and group (fix: the old agent used 0666, so any local user could reset the runner). */
const SOCKET_MODE = 0o660;
/** How long a connection may stay open after its reply was sent. */
const REPLY_LINGER_MS = 5000;

/** Longest socket path the kernel accepts (sun_path minus its terminating NUL). */
function maxSocketPathBytes(platform: NodeJS.Platform = process.platform): number {
  return platform === 'linux' ? 107 : 103;
}

/** Throws a clear error when `path` does not fit in a sockaddr_un. */
export function checkSocketPath(path: string, platform: NodeJS.Platform = process.platform): void {
  const bytes = Buffer.byteLength(path, 'utf8');
  const max = maxSocketPathBytes(platform);
  if (bytes > max) {
    throw new Error(
      `socket path is too long: ${bytes} bytes, the limit on ${platform} is ${max} (${path})`,
    );
  }
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err
    ? String((err as { code: unknown }).code)
    : undefined;
}

const GROUP_FILE = '/etc/group';

/** socket_group names no group of this host: a configuration error (a restart cannot fix it). */
export class SocketGroupError extends Error {
  override name = 'SocketGroupError';
}

/** Resolves a group name (from /etc/group) or gid to a gid. */
export function resolveGroup(group: string | number): number {
  if (typeof group === 'number') return group;
  if (/^\d+$/.test(group)) return Number(group);
  let text: string;
  try {
    text = readFileSync(GROUP_FILE, 'utf8');
  } catch (err) {
    throw new Error(
      `cannot resolve socket_group "${group}": cannot read ${GROUP_FILE} (${errnoCode(err)})`,
    );
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new SocketGroupError(`socket_group "${group}" not found in ${GROUP_FILE}`);
}

/** True if something accepts connections on `path` (or does not refuse them within a second). */
function acceptsConnections(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    const done = (v: boolean | Error) => {
      clearTimeout(timer);
      s.destroy();
      if (v instanceof Error) reject(v);
      else resolve(v);
    };
    // A listener that does not answer in time is still a listener: do not steal its path.
    const timer = setTimeout(() => done(true), 1000);
    s.once('connect', () => done(true));
    s.once('error', (err) => {
      const code = errnoCode(err);
      if (code === 'ECONNREFUSED' || code === 'ENOENT') done(false);
      else done(new Error(`cannot check whether ${path} is in use: ${err.message}`));
    });
  });
}

/**
 * Makes `path` free for a new socket: refuses if another process serves it,
 * removes a stale socket file left by a crash, never removes anything else.
 */
async function claimSocketPath(path: string): Promise<void> {
  checkSocketPath(path);
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  if (await acceptsConnections(path)) throw new Error(`another agent is running on ${path}`);
  try {
    unlinkSync(path);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
}

/** Handles one parsed request object; the returned reply is sent back. */
export type IpcHandler = (request: Record<string, unknown>) => Promise<Reply>;

export interface IpcServerOptions {
  path: string;
  /** Group name or gid that should own the socket. */
  group?: string | number | null;
  handler: IpcHandler;
  log?: Logger;
  /** A client must send its whole request within this time (default 30 s). */
  requestReadTimeoutMs?: number;
  /** How long a connection may stay open after its reply (default 5 s). */
  replyLingerMs?: number;
}

export interface IpcServer {
  readonly path: string;
  /** Open client connections. */
  connectionCount(): number;
  /** Requests whose handler has not finished. */
  inFlightCount(): number;
  /**
   * Stops accepting connections, gives open ones up to `drainMs` to finish,
   * closes the rest and removes the socket file. Idempotent.
   */
  close(drainMs?: number): Promise<void>;
}

const NOOP_LOG = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
} as unknown as Logger;

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      const code = errnoCode(err);
      if (code === 'EADDRINUSE') reject(new Error(`another agent is running on ${path}`));
      else if (code === 'EACCES')
        reject(new Error(`cannot create socket ${path}: permission denied`));
      else if (code === 'ENOENT')
        reject(new Error(`cannot create socket ${path}: its directory does not exist`));
      else reject(new Error(`cannot create socket ${path}: ${err.message}`));
    };
    server.once('error', onError);
    server.once('listening', () => {
      server.off('error', onError);
      resolve();
    });
    // Bind with a umask that already yields 0660, so there is no moment at which
    // the socket is more open than that (binding a Unix socket is synchronous).
    let old: number | undefined;
    try {
      old = process.umask(0o117);
    } catch {
      // process.umask cannot be set in worker threads; chmod below still applies.
    }
    try {
      server.listen(path);
    } finally {
      if (old !== undefined) process.umask(old);
    }
  });
}

/** The server's connections: one request each, answered with one reply. */
class IpcConnections {
  readonly sockets = new Set<Socket>();
  inFlight = 0;
  /** Set once the server closes: new connections are dropped. */
  closing = false;
  private readonly idle = new Set<() => void>();

  constructor(
    private readonly handler: IpcHandler,
    private readonly log: Logger,
    private readonly readTimeoutMs: number,
    private readonly lingerMs: number,
  ) {}

  /** The server's connection listener. */
  accept(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    const decoder = new FrameDecoder();
    let received = false;
    // A client that connects and never finishes its request must not hold a descriptor forever.
    socket.setTimeout(this.readTimeoutMs, () => {
      this.log.debug('IPC client did not send a complete request in time');
      socket.destroy();
    });
    socket.on('data', (chunk: Buffer) => {
      if (received) return; // one request per connection; anything after it is ignored
      for (const ev of decoder.push(chunk)) {
        received = true;
        socket.setTimeout(0);
        if (ev.kind === 'oversize') {
          this.log.warn({ length: ev.length }, 'IPC request too large');
          this.send(socket, errorReply('', 413, 'Message too large'));
        } else {
          void this.onRequest(socket, ev.payload);
        }
        return;
      }
    });
    // EOF before a complete frame: nothing to answer.
    socket.on('end', () => {
      if (!received) socket.destroy();
    });
    socket.on('error', (err) => {
      this.log.debug({ err: err.message }, 'IPC connection error');
      socket.destroy();
    });
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (this.sockets.size === 0) for (const f of this.idle) f();
    });
  }

  /** Gives open connections up to `drainMs` to finish, then destroys the rest. */
  async drain(drainMs: number): Promise<void> {
    if (this.sockets.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, drainMs);
        timer.unref();
        this.idle.add(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    for (const s of this.sockets) s.destroy();
  }

  private send(socket: Socket, reply: Reply): void {
    let frame: Buffer;
    try {
      frame = encodeFrame(reply);
    } catch {
      frame = encodeFrame(errorReply(reply.id, 500, 'Reply too large'));
    }
    if (socket.destroyed) return;
    socket.end(frame);
    // The client normally closes once it has the reply; one that keeps its half
    // open must not keep the descriptor.
    socket.setTimeout(this.lingerMs, () => socket.destroy());
  }

  private async onRequest(socket: Socket, payload: Buffer): Promise<void> {
    let value: unknown;
    try {
      value = JSON.parse(payload.toString('utf8'));
    } catch {
      return this.send(socket, errorReply('', 400, 'Malformed request: invalid JSON'));
    }
    if (!isRecord(value)) {
      return this.send(socket, errorReply('', 400, 'Malformed request: expected a JSON object'));
    }
    const id = typeof value.id === 'string' ? value.id : '';
    this.inFlight++;
    try {
      this.send(socket, await this.handler(value));
    } catch (err) {
      this.log.error({ err }, 'IPC handler failed');
      this.send(socket, errorReply(id, 500, 'Internal agent error'));
    } finally {
      this.inFlight--;
    }
  }
}

/** Gives the bound socket its mode and group; returns its inode (closing the server on failure). */
function secureSocket(server: Server, opts: IpcServerOptions, gid: number | null): number {
  try {
    chmodSync(opts.path, SOCKET_MODE);
    if (gid !== null) chownSync(opts.path, -1, gid);
    return statSync(opts.path).ino;
  } catch (err) {
    server.close();
    const code = errnoCode(err);
    throw new Error(
      gid !== null && code === 'EPERM'
        ? `cannot give ${opts.path} to group ${opts.group}: not permitted (run the agent as root or as a member of that group)`
        : `cannot set up socket ${opts.path}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

/** Starts the IPC server on `path` (mode 0660, optionally chowned to a group). */
export async function startIpcServer(opts: IpcServerOptions): Promise<IpcServer> {
  const log = opts.log ?? NOOP_LOG;
  const gid = opts.group === null || opts.group === undefined ? null : resolveGroup(opts.group);
  await claimSocketPath(opts.path);
  const conns = new IpcConnections(
    opts.handler,
    log,
    opts.requestReadTimeoutMs ?? 30_000,
    opts.replyLingerMs ?? REPLY_LINGER_MS,
  );
  const server = createServer({ allowHalfOpen: true }, (socket) => conns.accept(socket));
  await listen(server, opts.path);
  server.on('error', (err) => log.error({ err: err.message }, 'IPC server error'));
  const inode = secureSocket(server, opts, gid);

  const doClose = async (drainMs: number) => {
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    await conns.drain(drainMs);
    await stopped;
    // libuv unlinks the socket on close; make sure, but never remove a newer agent's socket.
    try {
      if (statSync(opts.path).ino === inode) unlinkSync(opts.path);
    } catch {
      // already gone
    }
  };
  let closing: Promise<void> | null = null;
  return {
    path: opts.path,
    connectionCount: () => conns.sockets.size,
    inFlightCount: () => conns.inFlight,
    close(drainMs = 30_000) {
      conns.closing = true;
      closing ??= doClose(drainMs);
      return closing;
    },
  };
}

/** Why an IPC request failed, for the CLI's exit code and message. */
export type IpcFailure =
  | 'not-found'
  | 'refused'
  | 'permission'
  | 'timeout'
  | 'closed'
  | 'protocol'
  /** The caller's AbortSignal fired (Ctrl-C). */
  | 'aborted';

export class IpcClientError extends Error {
  override name = 'IpcClientError';
  constructor(
    readonly kind: IpcFailure | 'other',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Sends one request to the agent and resolves with its reply (any JSON value).
 * Rejects with an IpcClientError saying why it could not; `signal` abandons
 * the request (the connection is closed at once).
 */
export function ipcRequest(
  path: string,
  request: unknown,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const aborted = () => new IpcClientError('aborted', 'the request was abandoned');
    if (signal?.aborted) return reject(aborted());
    const socket = createConnection(path);
    const decoder = new FrameDecoder();
    let settled = false;
    const onAbort = () => done(aborted());
    const done = (err: IpcClientError | null, value?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(
      () => done(new IpcClientError('timeout', `no reply within ${timeoutMs / 1000}s`)),
      timeoutMs,
    );
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => socket.write(encodeFrame(request)));
    socket.on('data', (chunk: Buffer) => {
      for (const ev of decoder.push(chunk)) {
        if (ev.kind === 'oversize') {
          return done(new IpcClientError('protocol', `reply too large (${ev.length} bytes)`));
        }
        try {
          return done(null, JSON.parse(ev.payload.toString('utf8')));
        } catch {
          return done(new IpcClientError('protocol', 'reply is not valid JSON'));
        }
      }
    });
    socket.on('end', () =>
      done(new IpcClientError('closed', 'the agent closed the connection without replying')),
    );
    socket.on('error', (err) => {
      const code = errnoCode(err);
      const kind: IpcFailure | 'other' =
        code === 'ENOENT'
          ? 'not-found'
          : code === 'ECONNREFUSED'
            ? 'refused'
            : code === 'EACCES' || code === 'EPERM'
              ? 'permission'
              : code === 'EPIPE' || code === 'ECONNRESET'
                ? 'closed'
                : 'other';
      done(new IpcClientError(kind, err.message));
    });
  });
}
