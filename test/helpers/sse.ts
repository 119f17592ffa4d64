/** One Server-Sent Event as a client sees it. */
export interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

/**
 * A minimal EventSource over fetch, for tests: collects events as they
 * arrive (with the time each arrived) until the stream ends or `close()`.
 */
export function openSse(
  url: string,
  headers: Record<string, string>,
): {
  events: Array<SseEvent & { receivedAt: number }>;
  ended: Promise<void>;
  status: Promise<number>;
  close(): void;
} {
  const abort = new AbortController();
  const events: Array<SseEvent & { receivedAt: number }> = [];
  let setStatus!: (s: number) => void;
  const status = new Promise<number>((r) => (setStatus = r));
  const ended = (async () => {
    try {
      const res = await fetch(url, {
        headers: { accept: 'text/event-stream', ...headers },
        signal: abort.signal,
      });
      setStatus(res.status);
      if (!res.body) return;
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let cut: number;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const e: SseEvent = { event: 'message', data: '' };
          let isComment = true;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            isComment = false;
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'id') e.id = value;
            else if (field === 'event') e.event = value;
            else if (field === 'data') e.data = e.data ? `${e.data}\n${value}` : value;
          }
          if (!isComment) events.push({ ...e, receivedAt: Date.now() });
        }
      }
    } catch (err) {
      if ((err as Error).name !== 'AbortError') throw err;
    }
  })();
  return { events, ended, status, close: () => abort.abort() };
}
