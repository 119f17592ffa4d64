import { createServer, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import pino from 'pino';
import type { CheckpointService } from '../../service/checkpoint-service';
import { databaseUrlOf } from '../../api/server';
import { EXEC_OUTPUT_FRAME_BYTES, type ExecOutputPayload } from '../../common/agent-protocol';
import { AgentHub, type ExecOutputHook } from '../../gateway/agent-hub';
import { MAX_PARTIAL_CHARS } from '../../gateway/command-output';
import { EXEC_OUTPUT_FRAMES_PER_CONNECTION, MAX_INFLIGHT_REQUESTS } from '../../gateway/messages';
import { attachAgentGateway, type GatewayDeps } from '../../gateway/ws-gateway';
import { createStore } from '../../store';
import { restClient, startAgentController, type AgentController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, uniqueId, type TestRunner } from '../helpers/env';
import { connectRawAgent, type RawAgent } from '../helpers/raw-agent';
import { openSse } from '../helpers/sse';
import { waitFor } from '../helpers/wait';

/**
 * Limits a token holder cannot exceed: live log streams (SSE) per runner and
 * in total, a slow SSE reader (backpressure), agent requests in flight on one
 * connection, the exec_output frame rate and an unfinished output line that
 * never ends. Raw clients against the real API on real Postgres and Temporal.
 */
const R = testRunners(['sseA', 'sseB', 'slow', 'stalled', 'inflight', 'rate', 'partial']);
const ADMIN = 'limits-test-admin-token-0123456789abcdef';
const silentLog = pino({ level: 'silent' });
type OnExec = NonNullable<Parameters<typeof connectRawAgent>[1]['onExec']>;
const okExec: OnExec = () => ({ exit_code: 0, stdout: '', stderr: '' });

describe('limits a token holder cannot exceed', () => {
  let c: AgentController;
  const agents: RawAgent[] = [];
  const agent = async (r: TestRunner, url = c.api.url, onExec: OnExec = okExec) => {
    const a = await connectRawAgent(url, { runnerId: r.id, token: r.token, onExec });
    agents.push(a);
    return a;
  };

  beforeAll(async () => {
    c = await startAgentController({
      inventory: `runners:\n${Object.values(R)
        .map((r) => bareMetalRunnerYaml(r, { reset_cmd: '/opt/reset.sh' }))
        .join('')}`,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_LOG_STREAMS_PER_RUNNER: '2',
        E2EPOOL_LOG_STREAMS_MAX: '3',
        E2EPOOL_LOG_STREAM_STALL_SECONDS: '3',
      },
      bus: { staleAfterSeconds: 90, connectWaitSeconds: 20 },
    });
  });
  afterAll(async () => {
    for (const a of agents) a.ws.terminate();
    await c?.stop();
  });

  /** A checkpoint of `r`'s, created through REST (its agent connected, answering every command). */
  const checkpointOf = async (r: TestRunner) => {
    await agent(r);
    await waitFor('the agent session', () => c.bus.isConnected(r.id));
    const res = await restClient(() => c.api.url, r.token).create(r.id, uniqueId('job'));
    expect(res.status).toBeLessThan(300);
    const name = res.body.name as string;
    const [{ id }] = (await c.ds.query(`SELECT id FROM checkpoints WHERE name = $1`, [
      name,
    ])) as Array<{ id: number }>;
    return { name, id };
  };
  const LINES = 1200;
  /** Appends LINES lines of 8000 characters (~9.6 MB: more than the kernel's socket buffers hold). */
  const fillLog = async (checkpointId: number) => {
    const store = createStore(c.ds);
    for (let i = 0; i < LINES; i += 200)
      await store.logs.append(
        checkpointId,
        Array.from({ length: 200 }, (_, j) => ({
          kind: 'stdout' as const,
          text: `${String(i + j).padStart(6, '0')}${'x'.repeat(7994)}`,
        })),
        100_000,
      );
  };
  /**
   * A raw HTTP client that asks for the log as SSE, reads the first chunk (the
   * stream was granted: 200) and then nothing.
   */
  const silentReader = async (name: string, token: string) => {
    const sock = connect((c.api.server.address() as AddressInfo).port, '127.0.0.1');
    sock.on('error', () => undefined);
    await new Promise<void>((res) => sock.once('connect', () => res()));
    const first = new Promise<string>((res) =>
      sock.once('data', (d: Buffer) => {
        sock.pause();
        res(d.toString('utf8'));
      }),
    );
    sock.write(
      `GET /checkpoint/${encodeURIComponent(name)}/logs HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
        `Accept: text/event-stream\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    );
    const head = await first;
    expect(head).toMatch(/^HTTP\/1\.1 200 /);
    return { sock, head };
  };
  const logsUrl = (name: string) => `${c.api.url}/checkpoint/${encodeURIComponent(name)}/logs`;

  describe('live log streams (SSE)', () => {
    it('at most E2EPOOL_LOG_STREAMS_PER_RUNNER per runner and E2EPOOL_LOG_STREAMS_MAX in all; more get 429 with a detail; a closed stream frees its slot', async () => {
      const a = await checkpointOf(R.sseA);
      const b = await checkpointOf(R.sseB);
      const authA = { authorization: `Bearer ${R.sseA.token}` };
      const admin = { authorization: `Bearer ${ADMIN}` };
      const sseRequest = (name: string, headers: Record<string, string>) =>
        fetch(logsUrl(name), { headers: { accept: 'text/event-stream', ...headers } });

      const first = openSse(logsUrl(a.name), authA);
      const second = openSse(logsUrl(a.name), admin); // the admin reading A's log counts for A
      expect([await first.status, await second.status]).toEqual([200, 200]);
      const third = await sseRequest(a.name, authA);
      expect(third.status).toBe(429);
      expect(await third.json()).toEqual({
        detail: expect.stringContaining(`Too many live log streams for runner ${R.sseA.id}`),
      });
      // JSON pages are not streams: not capped.
      expect((await fetch(logsUrl(a.name), { headers: authA })).status).toBe(200);

      const ofB = openSse(logsUrl(b.name), { authorization: `Bearer ${R.sseB.token}` });
      expect(await ofB.status).toBe(200);
      const overall = await sseRequest(b.name, admin);
      expect(overall.status).toBe(429);
      expect(await overall.json()).toEqual({
        detail: expect.stringContaining('Too many live log streams on this server (at most 3)'),
      });

      first.close();
      await first.ended;
      const again = await waitFor('a free slot for runner A', async () => {
        const s = openSse(logsUrl(a.name), authA);
        if ((await s.status) === 200) return s;
        s.close();
        await s.ended;
        return undefined;
      });
      for (const s of [second, ofB, again]) s.close();
      await Promise.all([second.ended, ofB.ended, again.ended]);
    });

    it('drops a stream whose client reads nothing for E2EPOOL_LOG_STREAM_STALL_SECONDS, freeing its slot', async () => {
      const r = R.stalled;
      const cp = await checkpointOf(r);
      await fillLog(cp.id);
      const auth = { authorization: `Bearer ${r.token}`, accept: 'text/event-stream' };
      const readers = [await silentReader(cp.name, r.token), await silentReader(cp.name, r.token)];
      try {
        // Both slots of the runner are taken by clients that read nothing...
        const refused = await fetch(logsUrl(cp.name), { headers: auth });
        expect(refused.status).toBe(429);
        await refused.body?.cancel();
        // ...until the server gives up on them.
        const s = await waitFor(
          'a slot freed by a stalled stream',
          async () => {
            const res = await fetch(logsUrl(cp.name), { headers: auth });
            if (res.status === 200) return res;
            await res.body?.cancel();
            return undefined;
          },
          { timeoutMs: 30_000, intervalMs: 500 },
        );
        await s.body?.cancel();
      } finally {
        for (const x of readers) x.sock.destroy();
      }
    });

    it('waits for a slow reader instead of buffering the log; it then gets every event in order', async () => {
      const r = R.slow;
      const cp = await checkpointOf(r);
      const before = (await createStore(c.ds).logs.after(cp.id, 0)).length;
      await fillLog(cp.id);
      // The server's side of the stream, to see what it holds for the client.
      let served: ServerResponse | undefined;
      const path = `/checkpoint/${encodeURIComponent(cp.name)}/logs`;
      const spy = (req: { url?: string }, res: ServerResponse) => {
        if (req.url === path) served = res;
      };
      c.api.server.prependListener('request', spy);
      const { sock, head } = await silentReader(cp.name, r.token);
      try {
        const res = await waitFor('the stream to fill the socket', () =>
          served?.writableNeedDrain ? served : undefined,
        );
        // Unbounded, the first page (1000 events, ~8 MB) would sit in the buffer by now.
        expect(res.writableLength).toBeLessThan(256 * 1024);

        // The client reads on: every event arrives, in order, none twice.
        let text = head;
        sock.setEncoding('utf8');
        sock.on('data', (d: string) => (text += d));
        sock.resume();
        const ids = () => [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
        await waitFor('every event', () => ids().length >= before + LINES, { timeoutMs: 60_000 });
        const seen = ids();
        expect(seen).toEqual(Array.from({ length: seen.length }, (_, i) => seen[0]! + i));
        expect(text).toContain(`"text":"${String(LINES - 1).padStart(6, '0')}x`);
      } finally {
        c.api.server.off('request', spy);
        sock.destroy();
      }
    });
  });

  /** An API instance of the test's own (a real hub on the real database, and a gateway). */
  const instance = async (o: {
    hook?: ExecOutputHook;
    checkpoints?: Partial<CheckpointService>;
  }) => {
    const server = createServer();
    const hub = new AgentHub(
      createStore(c.ds),
      databaseUrlOf(c.ds),
      silentLog,
      c.settings.wsHeartbeatTimeoutSeconds,
      o.hook ? { onExecOutput: o.hook } : {},
    );
    await hub.start();
    const gateway = attachAgentGateway(server, {
      inventory: c.inventory,
      checkpoints: (o.checkpoints ?? {}) as CheckpointService,
      logs: {} as GatewayDeps['logs'],
      hub,
      settings: c.settings,
      log: silentLog,
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      async close() {
        gateway.close();
        await hub.stop();
        server.closeAllConnections();
        await new Promise((res) => server.close(res));
      },
    };
  };
  const output = (id: string, payload: ExecOutputPayload) =>
    JSON.stringify({ id, type: 'exec_output', payload });

  describe('the agent WebSocket', () => {
    it('answers a request past MAX_INFLIGHT_REQUESTS in flight with 429 and keeps the connection', async () => {
      const r = R.inflight;
      let release!: () => void;
      const gate = new Promise<void>((res) => (release = res));
      let started = 0;
      // A double of the checkpoint service whose status hangs until the test lets it go.
      const api = await instance({
        checkpoints: {
          status: async (_runnerId: string, name: string) => {
            started++;
            await gate;
            return { name } as never;
          },
        },
      });
      try {
        const a = await agent(r, api.url);
        const N = MAX_INFLIGHT_REQUESTS + 5;
        for (let i = 0; i < N; i++)
          a.sendRaw(
            JSON.stringify({
              id: `s${i}`,
              type: 'status',
              payload: { checkpoint_name: `cp-${i}` },
            }),
          );
        const replies = a.messages as Array<{ id: string; status: string }>;
        // The requests past the cap are answered at once, while the others still hang.
        await waitFor('the refusals', () => replies.length >= N - MAX_INFLIGHT_REQUESTS);
        expect(replies).toEqual(
          Array.from({ length: N - MAX_INFLIGHT_REQUESTS }, (_x, i) => ({
            id: `s${MAX_INFLIGHT_REQUESTS + i}`,
            status: 'error',
            data: null,
            error: {
              code: 429,
              detail: `Too many requests in flight on this connection (at most ${MAX_INFLIGHT_REQUESTS})`,
            },
          })),
        );
        expect(started).toBe(MAX_INFLIGHT_REQUESTS);
        release();
        await waitFor('every reply', () => replies.length >= N);
        expect(replies.slice(N - MAX_INFLIGHT_REQUESTS).map((x) => [x.id, x.status])).toEqual(
          Array.from({ length: MAX_INFLIGHT_REQUESTS }, (_x, i) => [`s${i}`, 'ok']),
        );
        // Slots are free again, on the same connection.
        expect(await a.request('ping', {}, 'after')).toMatchObject({ id: 'after', status: 'ok' });
        expect(a.ws.readyState).toBe(a.ws.OPEN);
      } finally {
        release();
        await api.close();
      }
    });

    it('drops exec_output frames past the per-connection rate, keeps the connection, and passes frames again once the rate allows', async () => {
      const r = R.rate;
      const calls: ExecOutputPayload[] = [];
      const api = await instance({ hook: (_runnerId, _commandId, o) => void calls.push(o) });
      try {
        const a = await agent(r, api.url, () => null); // answers no command
        await waitFor('the session', () => c.bus.isConnected(r.id));
        const result = c.bus.exec(r.id, 'make test', 30, { commandId: uniqueId('cmd') });
        const exec = await waitFor('the exec command', () =>
          (a.messages as Array<{ id: string; type?: string }>).find((m) => m.type === 'exec'),
        );
        const FLOOD = 10 * EXEC_OUTPUT_FRAMES_PER_CONNECTION;
        for (let seq = 1; seq <= FLOOD; seq++)
          a.sendRaw(output(exec.id, { stream: 'stdout', seq, data: `line ${seq}\n` }));
        // Answered after every frame before it was handled: the connection is fine.
        expect(await a.request('ping', {}, 'flooded')).toMatchObject({ status: 'ok' });
        expect(calls.length).toBeGreaterThanOrEqual(EXEC_OUTPUT_FRAMES_PER_CONNECTION);
        // The bucket refills while the frames are sent: a little slack, far below the flood.
        expect(calls.length).toBeLessThan(EXEC_OUTPUT_FRAMES_PER_CONNECTION * 2);
        // The first burst passed whole; what passed later came in order.
        const seqs = calls.map((x) => x.seq);
        expect(seqs.slice(0, EXEC_OUTPUT_FRAMES_PER_CONNECTION)).toEqual(
          Array.from({ length: EXEC_OUTPUT_FRAMES_PER_CONNECTION }, (_x, i) => i + 1),
        );
        expect(seqs).toEqual([...seqs].sort((x, y) => x - y));

        // Later frames pass again.
        let seq = FLOOD;
        await waitFor('a frame passing again', () => {
          a.sendRaw(output(exec.id, { stream: 'stdout', seq: ++seq, data: 'later\n' }));
          return calls.some((x) => x.data === 'later\n');
        });
        a.sendRaw(
          JSON.stringify({
            id: exec.id,
            status: 'ok',
            data: { exit_code: 0, stdout: 'done\n', stderr: '' },
          }),
        );
        expect(await result).toMatchObject({ exitCode: 0 });
      } finally {
        await api.close();
      }
    });

    it('stores an unfinished line that outgrows the cap at once, cut, and drops the rest of it up to its newline', async () => {
      const r = R.partial;
      const cp = await checkpointOf(r);
      const a = agents[agents.length - 1]!;
      // From here on the agent answers no command: this one stays in flight.
      a.ws.removeAllListeners('message');
      const execs: Array<{ id: string }> = [];
      a.ws.on('message', (data) => {
        const m = JSON.parse(data.toString()) as { id: string; type?: string };
        if (m.type === 'exec') execs.push(m);
      });
      const result = c.bus.exec(r.id, 'spew', 30, {
        commandId: uniqueId('cmd'),
        checkpointId: cp.id,
      });
      const exec = await waitFor('the exec command', () => execs[0]);
      const stdout = async () =>
        (await createStore(c.ds).logs.after(cp.id, 0))
          .filter((e) => e.kind === 'stdout')
          .map((e) => e.text!);

      // No newline, frame after frame: more than the cap, still in flight.
      const chunk = 'x'.repeat(EXEC_OUTPUT_FRAME_BYTES);
      const frames = Math.ceil(MAX_PARTIAL_CHARS / EXEC_OUTPUT_FRAME_BYTES) + 2;
      for (let seq = 1; seq <= frames; seq++)
        a.sendRaw(output(exec.id, { stream: 'stdout', seq, data: chunk }));
      const cut = await waitFor('the cut line, while the command runs', async () => {
        const lines = await stdout();
        return lines.length ? lines : undefined;
      });
      expect(cut).toEqual([
        `${'x'.repeat(MAX_PARTIAL_CHARS)} [e2epool: line cut at ${MAX_PARTIAL_CHARS} characters]`,
      ]);
      a.sendRaw(output(exec.id, { stream: 'stdout', seq: frames + 1, data: 'tail\nnext\n' }));
      a.sendRaw(
        JSON.stringify({
          id: exec.id,
          status: 'ok',
          data: { exit_code: 0, stdout: 'ignored: streamed\n', stderr: '' },
        }),
      );
      expect(await result).toMatchObject({ exitCode: 0 });
      expect(await stdout()).toEqual([cut[0], 'next']);
    });
  });
});
