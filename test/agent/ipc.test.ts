import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES } from '../../agent/framing';
import {
  checkSocketPath,
  ipcRequest,
  IpcClientError,
  resolveGroup,
  startIpcServer,
  type IpcHandler,
  type IpcServer,
} from '../../agent/ipc';
import { okReply } from '../../agent/messages';
import { waitFor } from '../helpers/wait';
import { openFds, prng, tempDir } from './helpers';

/** Talks to the server with raw bytes: writes `chunks`, optionally half-closes, collects the reply. */
function rawExchange(
  path: string,
  chunks: Buffer[],
  o: { end?: boolean; timeoutMs?: number } = {},
): Promise<{ reply: Record<string, unknown> | null; bytes: number }> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    const decoder = new FrameDecoder();
    let reply: Record<string, unknown> | null = null;
    let bytes = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('server neither replied nor closed the connection'));
    }, o.timeoutMs ?? 5000);
    s.on('connect', async () => {
      for (const c of chunks) {
        if (s.destroyed) break;
        s.write(c);
        if (chunks.length > 1) await new Promise((r) => setImmediate(r));
      }
      if (o.end ?? true) s.end();
    });
    s.on('data', (d: Buffer) => {
      bytes += d.length;
      for (const ev of decoder.push(d)) {
        if (ev.kind === 'frame') reply = JSON.parse(ev.payload.toString('utf8'));
      }
    });
    s.on('error', () => undefined); // EPIPE/ECONNRESET after the server closed: the close tells us
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, bytes });
    });
  });
}

const echo: IpcHandler = async (req) =>
  okReply(typeof req.id === 'string' ? req.id : '', { echo: req });

describe('IPC server', () => {
  let tmp: ReturnType<typeof tempDir>;
  let server: IpcServer | undefined;
  let path: string;

  beforeEach(() => {
    tmp = tempDir();
    path = join(tmp.dir, 'agent.sock');
  });
  afterEach(async () => {
    await server?.close(1000);
    server = undefined;
    tmp.cleanup();
  });

  it('answers one request per connection with all four reply keys', async () => {
    server = await startIpcServer({ path, handler: echo });
    const reply = await ipcRequest(path, { id: 'r1', type: 'ping' }, 2000);
    expect(reply).toEqual({
      id: 'r1',
      status: 'ok',
      data: { echo: { id: 'r1', type: 'ping' } },
      error: null,
    });
  });

  it('reads a request sent one byte at a time', async () => {
    server = await startIpcServer({ path, handler: echo });
    const frame = encodeFrame({ id: 'slow', type: 'ping' });
    const bytes = [...frame].map((b) => Buffer.from([b]));
    const { reply } = await rawExchange(path, bytes, { end: false });
    expect(reply).toMatchObject({ id: 'slow', status: 'ok' });
  });

  it('answers 413 to an oversized length header, closes, and keeps serving', async () => {
    server = await startIpcServer({ path, handler: echo });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    const { reply } = await rawExchange(path, [header], { end: false });
    expect(reply).toEqual({
      id: '',
      status: 'error',
      data: null,
      error: { code: 413, detail: 'Message too large' },
    });
    await expect(ipcRequest(path, { id: 'after', type: 'ping' }, 2000)).resolves.toMatchObject({
      id: 'after',
      status: 'ok',
    });
  });

  it.each([
    ['invalid JSON', Buffer.from('{"id": "x", nope'), 'Malformed request: invalid JSON'],
    ['invalid UTF-8', Buffer.from([0xff, 0xfe, 0x7b]), 'Malformed request: invalid JSON'],
    ['a JSON array', Buffer.from('[1,2,3]'), 'Malformed request: expected a JSON object'],
    ['a JSON string', Buffer.from('"create"'), 'Malformed request: expected a JSON object'],
  ])('answers 400 to %s and keeps serving', async (_what, body, detail) => {
    server = await startIpcServer({ path, handler: echo });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(body.length, 0);
    const { reply } = await rawExchange(path, [Buffer.concat([header, body])]);
    expect(reply).toEqual({ id: '', status: 'error', data: null, error: { code: 400, detail } });
    await expect(ipcRequest(path, { id: 'after' }, 2000)).resolves.toMatchObject({ status: 'ok' });
  });

  it('closes a truncated frame without a reply and keeps serving', async () => {
    server = await startIpcServer({ path, handler: echo });
    const frame = encodeFrame({ id: 'cut', type: 'ping' });
    const { reply, bytes } = await rawExchange(path, [frame.subarray(0, frame.length - 3)]);
    expect(reply).toBeNull();
    expect(bytes).toBe(0);
    await waitFor('the truncated connection to be closed', () => server!.connectionCount() === 0);
    await expect(ipcRequest(path, { id: 'after' }, 2000)).resolves.toMatchObject({ status: 'ok' });
  });

  it('drops a client that never finishes its request (no leaked connection)', async () => {
    server = await startIpcServer({ path, handler: echo, requestReadTimeoutMs: 200 });
    const { reply } = await rawExchange(path, [Buffer.from([0, 0])], { end: false });
    expect(reply).toBeNull();
    await waitFor('the server to forget the connection', () => server!.connectionCount() === 0);
  });

  it('closes a connection the client keeps half-open after the reply', async () => {
    server = await startIpcServer({ path, handler: echo, replyLingerMs: 200 });
    const s = createConnection({ path, allowHalfOpen: true });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    let got = 0;
    s.on('data', (d: Buffer) => (got += d.length));
    const closed = new Promise((r) => s.on('close', r));
    s.on('connect', () => s.write(header));
    await waitFor('the 413 reply', () => got > 0);
    expect(server.connectionCount()).toBe(1); // we never end our side
    await waitFor('the server to drop the connection', () => server!.connectionCount() === 0);
    s.destroy();
    await closed;
  });

  it('answers 500 when the handler throws, and keeps serving', async () => {
    let calls = 0;
    server = await startIpcServer({
      path,
      handler: async (req) => {
        if (++calls === 1) throw new Error('boom');
        return echo(req);
      },
    });
    await expect(ipcRequest(path, { id: 'first' }, 2000)).resolves.toEqual({
      id: 'first',
      status: 'error',
      data: null,
      error: { code: 500, detail: 'Internal agent error' },
    });
    await expect(ipcRequest(path, { id: 'second' }, 2000)).resolves.toMatchObject({
      status: 'ok',
    });
  });

  it('survives thousands of random and mutated frames without leaking connections or descriptors', async () => {
    server = await startIpcServer({ path, handler: echo, requestReadTimeoutMs: 2000 });
    const rand = prng(20240601);
    const valid = encodeFrame({ id: 'fuzz', type: 'status', payload: { checkpoint_name: 'x' } });
    const randomBytes = (n: number) =>
      Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
    const cases: Array<() => Buffer[]> = [
      () => [valid],
      () => [randomBytes(1 + Math.floor(rand() * 64))],
      () => {
        // flip a few bytes of a valid frame (header included)
        const b = Buffer.from(valid);
        for (let i = 0; i < 1 + rand() * 3; i++) b[Math.floor(rand() * b.length)] = rand() * 256;
        return [b];
      },
      () => [valid.subarray(0, Math.floor(rand() * valid.length))], // truncated
      () => {
        const h = Buffer.alloc(4);
        h.writeUInt32BE(MAX_FRAME_BYTES + 1 + Math.floor(rand() * 1e6), 0);
        return [h, randomBytes(16)];
      },
      () => [valid, valid, randomBytes(8)], // trailing bytes after the one request
      () => {
        // a valid frame in random chunks
        const out: Buffer[] = [];
        for (let at = 0; at < valid.length;) {
          const n = 1 + Math.floor(rand() * 8);
          out.push(valid.subarray(at, at + n));
          at += n;
        }
        return out;
      },
      () => [encodeFrame(rand() < 0.5 ? null : [rand()]), randomBytes(2)],
    ];
    const fdsBefore = openFds();
    const total = 2000;
    const deadline = Date.now() + 15_000;
    let next = 0;
    let replies = 0;
    const worker = async () => {
      while (next < total && Date.now() < deadline) {
        next++;
        const chunks = cases[Math.floor(rand() * cases.length)]!();
        const { reply } = await rawExchange(path, chunks);
        if (reply) {
          replies++;
          expect(Object.keys(reply).sort()).toEqual(['data', 'error', 'id', 'status']);
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    expect(next).toBe(total);
    expect(replies).toBeGreaterThan(total / 4);
    await waitFor('every fuzz connection to be closed', () => server!.connectionCount() === 0);
    expect(server.inFlightCount()).toBe(0);
    if (fdsBefore !== undefined) {
      await waitFor('descriptors back to where they were', () => openFds()! <= fdsBefore);
    }
    await expect(ipcRequest(path, { id: 'still-alive' }, 2000)).resolves.toMatchObject({
      id: 'still-alive',
      status: 'ok',
    });
  }, 30_000);

  it('lets an in-flight request finish on close, then removes the socket file', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    server = await startIpcServer({
      path,
      handler: async (req) => {
        await gate;
        return echo(req);
      },
    });
    const pending = ipcRequest(path, { id: 'inflight' }, 5000);
    await waitFor('the request to reach the handler', () => server!.inFlightCount() === 1);
    const closed = server.close(5000);
    await expect(ipcRequest(path, { id: 'late' }, 1000)).rejects.toBeInstanceOf(IpcClientError);
    release();
    await expect(pending).resolves.toMatchObject({ id: 'inflight', status: 'ok' });
    await closed;
    expect(existsSync(path)).toBe(false);
  });
});

describe('IPC socket file', () => {
  let tmp: ReturnType<typeof tempDir>;
  const servers: IpcServer[] = [];
  beforeEach(() => (tmp = tempDir()));
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close(1000)));
    tmp.cleanup();
  });
  const start = async (o: Partial<Parameters<typeof startIpcServer>[0]> & { path: string }) => {
    const s = await startIpcServer({ handler: echo, ...o });
    servers.push(s);
    return s;
  };

  it('is created with mode 0660', async () => {
    const path = join(tmp.dir, 'a.sock');
    await start({ path });
    expect(statSync(path).isSocket()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o660);
  });

  it('is given to socket_group, by name or gid', async () => {
    // Root may give the socket to any group; anyone else only to their own.
    const gid = process.getuid?.() === 0 ? 1 : process.getgid!();
    const name = readFileSync('/etc/group', 'utf8')
      .split('\n')
      .map((l) => l.split(':'))
      .find((f) => f[2] === String(gid))?.[0];
    expect(name).toBeDefined();
    expect(resolveGroup(name!)).toBe(gid);
    const byName = join(tmp.dir, 'n.sock');
    await start({ path: byName, group: name! });
    expect(statSync(byName).gid).toBe(gid);
    const byGid = join(tmp.dir, 'g.sock');
    await start({ path: byGid, group: gid });
    expect(statSync(byGid).gid).toBe(gid);
  });

  it('refuses an unknown group before creating the socket', async () => {
    const path = join(tmp.dir, 'a.sock');
    await expect(start({ path, group: 'no-such-group-e2epool' })).rejects.toThrow(
      'socket_group "no-such-group-e2epool" not found in /etc/group',
    );
    expect(existsSync(path)).toBe(false);
  });

  it('replaces a stale socket file left by a crashed agent', async () => {
    const path = join(tmp.dir, 'stale.sock');
    // A process that binds the socket and dies by SIGKILL leaves the file behind.
    spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect(statSync(path).isSocket()).toBe(true);
    await expect(ipcRequest(path, {}, 1000)).rejects.toMatchObject({ kind: 'refused' });
    await start({ path });
    await expect(ipcRequest(path, { id: 'new' }, 2000)).resolves.toMatchObject({ status: 'ok' });
  });

  it('refuses to start while another agent serves the same path', async () => {
    const path = join(tmp.dir, 'busy.sock');
    await start({ path });
    await expect(start({ path })).rejects.toThrow(`another agent is running on ${path}`);
    await expect(ipcRequest(path, { id: 'first' }, 2000)).resolves.toMatchObject({
      status: 'ok',
    });
  });

  it('refuses to replace a file that is not a socket', async () => {
    const path = join(tmp.dir, 'file');
    writeFileSync(path, 'keep me');
    await expect(start({ path })).rejects.toThrow('exists and is not a socket');
    expect(readFileSync(path, 'utf8')).toBe('keep me');
  });

  it('rejects a path longer than sun_path allows, with a clear error', async () => {
    const path = join(tmp.dir, `${'x'.repeat(120)}.sock`);
    await expect(start({ path })).rejects.toThrow(
      /socket path is too long: \d+ bytes, the limit on linux is 107/,
    );
    expect(() => checkSocketPath(`/${'y'.repeat(103)}`, 'darwin')).toThrow(
      /the limit on darwin is 103/,
    );
    expect(() => checkSocketPath(`/${'y'.repeat(106)}`, 'linux')).not.toThrow();
  });
});

describe('IPC client', () => {
  it('says the socket is missing', async () => {
    await expect(ipcRequest('/nonexistent/e2epool.sock', {}, 1000)).rejects.toMatchObject({
      kind: 'not-found',
    });
  });

  it('times out when the agent never replies', async () => {
    const tmp = tempDir();
    const path = join(tmp.dir, 'hang.sock');
    const server = await startIpcServer({ path, handler: () => new Promise(() => undefined) });
    try {
      await expect(ipcRequest(path, { id: 'x' }, 200)).rejects.toMatchObject({ kind: 'timeout' });
    } finally {
      await server.close(100);
      tmp.cleanup();
    }
  });
});
