import type { ExecOutputPayload, ExecOutputStream } from '../common/agent-protocol';
import type { Logger } from '../config/logger';
import type { CheckpointLogStore, NewLogEntry } from '../store/checkpoint-log';

/** A stored line longer than this is cut (with a marker): one runaway line must not fill a row. */
const MAX_LINE_CHARS = 16_384;

/** What Postgres `text` can hold: no NUL. */
function storable(line: string): string {
  const clean = line.replaceAll('\u0000', '\uFFFD');
  return clean.length > MAX_LINE_CHARS
    ? `${clean.slice(0, MAX_LINE_CHARS)} [e2epool: line cut at ${MAX_LINE_CHARS} characters]`
    : clean;
}

/**
 * What an unfinished line (no newline yet) may hold before it is stored as it
 * is, cut: a sender that never sends a newline must not grow this instance's
 * memory. The rest of that line, up to its newline, is dropped.
 */
export const MAX_PARTIAL_CHARS = MAX_LINE_CHARS;

interface Capture {
  checkpointId: number;
  /** The unfinished last line of each stream, at most MAX_PARTIAL_CHARS. */
  partial: Record<ExecOutputStream, string>;
  /** Whether the stream's current line was cut and stored: the rest of it is dropped. */
  cut: Record<ExecOutputStream, boolean>;
  lastSeq: number;
  /** Whether the agent streamed anything (an agent without exec_output streams nothing). */
  streamed: boolean;
  /** Appends of this command, in order. */
  chain: Promise<void>;
}

/**
 * Turns the output of the commands in flight on this instance into the lines
 * of their checkpoints' logs: exec_output frames as they arrive (split into
 * lines; frames may end mid-line), and, for an agent that never streams (the
 * Python agent), the reply's output once it ends. Appends of one command are
 * chained, so its lines land in the order the agent sent them.
 */
export class CommandOutputLog {
  private readonly captures = new Map<string, Capture>();

  constructor(
    private readonly logs: CheckpointLogStore,
    private readonly maxLines: number,
    private readonly log: Logger,
  ) {}

  /** Starts capturing the command sent as `key` (its WebSocket message id). */
  begin(key: string, checkpointId: number): void {
    this.captures.set(key, {
      checkpointId,
      partial: { stdout: '', stderr: '' },
      cut: { stdout: false, stderr: false },
      lastSeq: 0,
      streamed: false,
      chain: Promise.resolve(),
    });
  }

  /** One exec_output frame of the command. */
  output(key: string, o: ExecOutputPayload): void {
    const c = this.captures.get(key);
    if (!c) return;
    c.streamed = true;
    const entries: NewLogEntry[] = [];
    if (o.seq > c.lastSeq + 1) {
      // The agent could not send some frames (socket busy or down): say so where they were.
      entries.push({
        kind: 'stderr',
        text: '[e2epool: some output of this command was lost in transit]',
      });
    }
    c.lastSeq = Math.max(c.lastSeq, o.seq);
    const parts = (c.partial[o.stream] + o.data).split('\n');
    let partial = parts.pop()!;
    if (c.cut[o.stream]) {
      // The tail of a line already stored cut: dropped, up to its end.
      if (parts.length > 0) {
        parts.shift();
        c.cut[o.stream] = false;
      } else partial = '';
    }
    for (const line of parts) entries.push({ kind: o.stream, text: storable(line) });
    if (partial.length > MAX_PARTIAL_CHARS) {
      entries.push({ kind: o.stream, text: storable(partial) });
      c.cut[o.stream] = true;
      partial = '';
    }
    c.partial[o.stream] = partial;
    this.write(c, entries);
  }

  /**
   * The command ended (`reply` null: it was lost). Flushes unfinished lines;
   * stores the reply's output when nothing was streamed. Resolves once every
   * line of the command is stored, so its result is recorded after them.
   */
  async end(key: string, reply: { stdout: string; stderr: string } | null): Promise<void> {
    const c = this.captures.get(key);
    if (!c) return;
    this.captures.delete(key);
    const entries: NewLogEntry[] = [];
    if (c.streamed || !reply) {
      for (const stream of ['stdout', 'stderr'] as const)
        if (c.partial[stream]) entries.push({ kind: stream, text: storable(c.partial[stream]) });
    } else {
      for (const stream of ['stdout', 'stderr'] as const) {
        const lines = reply[stream].split('\n');
        if (lines[lines.length - 1] === '') lines.pop();
        for (const line of lines) entries.push({ kind: stream, text: storable(line) });
      }
    }
    this.write(c, entries);
    await c.chain;
  }

  private write(c: Capture, entries: NewLogEntry[]): void {
    if (entries.length === 0) return;
    c.chain = c.chain.then(() =>
      this.logs.append(c.checkpointId, entries, this.maxLines).catch((err: unknown) =>
        // The command goes on: its output is also in its result (tail) and the agent's journal.
        this.log.warn(
          { checkpointId: c.checkpointId, err: (err as Error).message, lines: entries.length },
          'cannot store command output in the checkpoint log',
        ),
      ),
    );
  }
}
