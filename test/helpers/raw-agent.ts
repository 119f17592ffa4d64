import { WebSocket } from 'ws';

export interface RawAgent {
  ws: WebSocket;
  messages: unknown[];
  /** Sends a request and resolves with the reply of the same id. */
  request(type: string, payload?: unknown, id?: string): Promise<Record<string, unknown>>;
  sendRaw(data: string | Buffer, binary?: boolean): void;
  nextReply(): Promise<Record<string, unknown>>;
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
  /** How many pings the server sent so far. */
  readonly pings: number;
  /** Whether pings are answered (`autoPong`, default true); a silent agent answers none. */
  answerPings(on: boolean): void;
}

let seq = 0;

/**
 * A bare WebSocket agent for gateway tests: speaks the agent WebSocket protocol by hand and
 * answers exec commands with `onExec`.
 */
export async function connectRawAgent(
  baseUrl: string,
  o: {
    runnerId?: string;
    token?: string;
    mode?: 'query' | 'header';
    autoPong?: boolean;
    onExec?: (cmd: string) => { exit_code: number; stdout: string; stderr: string } | null;
  },
): Promise<RawAgent> {
  const url = new URL(baseUrl.replace(/^http/, 'ws') + '/ws/agent');
  if (o.runnerId) url.searchParams.set('runner_id', o.runnerId);
  const headers: Record<string, string> = {};
  if (o.token && (o.mode ?? 'query') === 'query') url.searchParams.set('token', o.token);
  if (o.token && o.mode === 'header') headers.authorization = `Bearer ${o.token}`;
  // Pongs are sent by hand, so that a test can make a connected agent fall silent.
  const ws = new WebSocket(url, { headers, autoPong: false });
  let answering = o.autoPong ?? true;
  let pings = 0;
  ws.on('ping', (data) => {
    pings++;
    if (answering) ws.pong(data);
  });
  const messages: unknown[] = [];
  const waiters: Array<(m: Record<string, unknown>) => void> = [];
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString()) as Record<string, unknown>;
    messages.push(msg);
    if (msg.type === 'exec' && o.onExec) {
      const payload = msg.payload as { cmd: string };
      const r = o.onExec(payload.cmd);
      if (!r) return; // no reply: the agent "died"
      ws.send(JSON.stringify({ id: msg.id, status: r.exit_code === 0 ? 'ok' : 'error', data: r }));
      return;
    }
    waiters.shift()?.(msg);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const nextReply = () => new Promise<Record<string, unknown>>((resolve) => waiters.push(resolve));
  return {
    ws,
    messages,
    closed,
    nextReply,
    sendRaw: (data, binary = false) => ws.send(data, { binary }),
    request(type, payload = {}, id = `req-${++seq}`) {
      const reply = nextReply();
      ws.send(JSON.stringify({ id, type, payload }));
      return reply;
    },
    close: () => ws.close(1000),
    get pings() {
      return pings;
    },
    answerPings: (on) => (answering = on),
  };
}
