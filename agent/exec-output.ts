import { performance } from 'node:perf_hooks';
import { StringDecoder } from 'node:string_decoder';
import {
  EXEC_OUTPUT_BACKLOG_BYTES,
  EXEC_OUTPUT_FLUSH_MS,
  EXEC_OUTPUT_FRAME_BYTES,
  EXEC_OUTPUT_FRAMES_PER_SECOND,
  EXEC_OUTPUT_STREAMS,
  type ExecOutput,
  type ExecOutputStream,
} from '../common/agent-protocol';

/** The shortest time between two frames of one exec: the rate cap, without bursts. */
const FRAME_GAP_MS = 1000 / EXEC_OUTPUT_FRAMES_PER_SECOND;
const NEWLINE = 0x0a;
const EMPTY = Buffer.alloc(0);

/** The line that stands where output was dropped from a full backlog. */
export function droppedMarker(bytes: number): string {
  return `[e2epool: ${bytes} bytes of output dropped]\n`;
}

/*
 * Every buffer below holds valid UTF-8 (decoded, then encoded again), so a
 * byte of the form 10xxxxxx is always inside a character, never its start.
 */
const inside = (buf: Buffer, i: number) => (buf[i]! & 0xc0) === 0x80;

/** The last place at or before `at` where `buf` can be cut between characters. */
function cutBefore(buf: Buffer, at: number): number {
  if (at >= buf.length) return buf.length;
  let i = at;
  while (i > 0 && inside(buf, i)) i--;
  return i;
}

/** The first place at or after `at` where `buf` can be cut between characters. */
function cutAfter(buf: Buffer, at: number): number {
  let i = at;
  while (i < buf.length && inside(buf, i)) i++;
  return i;
}

interface Piece {
  buf: Buffer;
  /** When it arrived, across both streams: the older stream goes first. */
  order: number;
}

interface StreamState {
  readonly decoder: StringDecoder;
  /** The unfinished last line, shorter than a frame. */
  partial: Buffer;
  partialTimer: NodeJS.Timeout | undefined;
  /** Output waiting for a frame, oldest first. */
  readonly queue: Piece[];
  /** Bytes dropped since this stream's last frame (its next frame says so). */
  dropped: number;
  /** Whether this stream's last frame ended a line (a marker must start one). */
  atLineStart: boolean;
}

/** What became of one exec's output. */
export interface OutputStats {
  /** Frames made (the last seq). */
  frames: number;
  /** Frames the connection could not take. */
  unsent: number;
  /** Bytes dropped from a full backlog. */
  droppedBytes: number;
}

/**
 * Turns one running command's output into exec_output frames, within the
 * protocol's caps: complete lines, at most EXEC_OUTPUT_FRAME_BYTES a frame,
 * EXEC_OUTPUT_FRAMES_PER_SECOND frames a second (what comes faster waits and
 * is coalesced), at most EXEC_OUTPUT_BACKLOG_BYTES waiting (beyond it the
 * oldest output is dropped and a marker line sent in its place).
 *
 * A frame `send` refuses is not retried; the exec reply still carries the output.
 */
export class OutputStreamer {
  private readonly streams: Record<ExecOutputStream, StreamState>;
  /** Bytes in both queues. */
  private queued = 0;
  private arrivals = 0;
  private seq = 0;
  private unsent = 0;
  private droppedBytes = 0;
  private lastSentAt = -Infinity;
  private sendTimer: NodeJS.Timeout | undefined;
  private ended: Promise<void> | undefined;
  private resolveEnded: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly id: string,
    /** Sends a frame; false when it could not. */
    private readonly send: (frame: ExecOutput) => boolean,
  ) {
    const state = (): StreamState => ({
      decoder: new StringDecoder('utf8'),
      partial: EMPTY,
      partialTimer: undefined,
      queue: [],
      dropped: 0,
      atLineStart: true,
    });
    this.streams = { stdout: state(), stderr: state() };
  }

  /** Output held in memory: at most the backlog plus an unfinished line per stream. */
  get backlogBytes(): number {
    return this.queued + this.streams.stdout.partial.length + this.streams.stderr.partial.length;
  }

  get stats(): OutputStats {
    return { frames: this.seq, unsent: this.unsent, droppedBytes: this.droppedBytes };
  }

  /** Takes a chunk the command wrote; ignored once `end` was called. */
  write(stream: ExecOutputStream, chunk: Buffer): void {
    if (this.ended) return;
    const s = this.streams[stream];
    // The decoder keeps a character split between chunks for the next one.
    const text = s.decoder.write(chunk);
    if (text === '') return;
    let buf = Buffer.from(text, 'utf8');
    if (s.partial.length > 0) buf = Buffer.concat([s.partial, buf]);
    const lineEnd = buf.lastIndexOf(NEWLINE) + 1;
    if (lineEnd > 0) {
      this.enqueue(stream, buf.subarray(0, lineEnd));
      // The unfinished line (if any) is a new one: its wait starts now.
      clearTimeout(s.partialTimer);
      s.partialTimer = undefined;
    }
    let rest = buf.subarray(lineEnd);
    // A line longer than a frame goes out a frame's worth at a time.
    while (rest.length >= EXEC_OUTPUT_FRAME_BYTES) {
      const cut = cutBefore(rest, EXEC_OUTPUT_FRAME_BYTES);
      this.enqueue(stream, rest.subarray(0, cut));
      rest = rest.subarray(cut);
    }
    // A copy: `rest` may be a view of a much larger chunk.
    s.partial = rest.length > 0 ? Buffer.from(rest) : EMPTY;
    if (s.partial.length === 0) {
      clearTimeout(s.partialTimer);
      s.partialTimer = undefined;
    } else if (!s.partialTimer) {
      s.partialTimer = setTimeout(() => {
        s.partialTimer = undefined;
        this.enqueue(stream, s.partial);
        s.partial = EMPTY;
        this.pump();
      }, EXEC_OUTPUT_FLUSH_MS);
      s.partialTimer.unref();
    }
    this.pump();
  }

  /**
   * The command is done: sends what is left (unfinished lines included) at the
   * capped rate, then resolves; no frame follows. Waiting is bounded by the
   * backlog: at most about EXEC_OUTPUT_BACKLOG_BYTES / EXEC_OUTPUT_FRAME_BYTES
   * frames, under two seconds.
   */
  end(): Promise<void> {
    if (!this.ended) {
      this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
      for (const stream of EXEC_OUTPUT_STREAMS) {
        const s = this.streams[stream];
        clearTimeout(s.partialTimer);
        s.partialTimer = undefined;
        // A character cut off at the very end comes out as U+FFFD.
        this.enqueue(stream, Buffer.concat([s.partial, Buffer.from(s.decoder.end(), 'utf8')]));
        s.partial = EMPTY;
      }
      this.pump();
    }
    return this.ended;
  }

  private enqueue(stream: ExecOutputStream, buf: Buffer): void {
    if (buf.length === 0) return;
    const q = this.streams[stream].queue;
    const last = q.at(-1);
    // A chatty command must not make a long queue of tiny pieces; joining keeps
    // the order only if nothing arrived on the other stream in between.
    if (
      last &&
      last.order === this.arrivals - 1 &&
      last.buf.length + buf.length <= EXEC_OUTPUT_FRAME_BYTES
    ) {
      last.buf = Buffer.concat([last.buf, buf]);
    } else {
      q.push({ buf, order: this.arrivals++ });
    }
    this.queued += buf.length;
    this.trim();
  }

  /** The stream whose waiting output is the oldest. */
  private oldest(): ExecOutputStream | undefined {
    const out = this.streams.stdout.queue[0];
    const err = this.streams.stderr.queue[0];
    if (!out || !err) return out ? 'stdout' : err ? 'stderr' : undefined;
    return out.order <= err.order ? 'stdout' : 'stderr';
  }

  /** Drops the oldest output beyond the backlog bound, up to a line's end where it can. */
  private trim(): void {
    while (this.queued > EXEC_OUTPUT_BACKLOG_BYTES) {
      const s = this.streams[this.oldest()!];
      const head = s.queue[0]!;
      const excess = this.queued - EXEC_OUTPUT_BACKLOG_BYTES;
      let cut = head.buf.length;
      if (excess < cut) {
        // What is kept begins at a line's start, so the marker stands on its own line.
        const nl = head.buf.indexOf(NEWLINE, excess - 1);
        cut = nl >= 0 ? nl + 1 : cutAfter(head.buf, excess);
      }
      if (cut >= head.buf.length) s.queue.shift();
      else head.buf = head.buf.subarray(cut);
      s.dropped += cut;
      this.droppedBytes += cut;
      this.queued -= cut;
    }
  }

  private hasWork(): boolean {
    return this.queued > 0 || this.streams.stdout.dropped > 0 || this.streams.stderr.dropped > 0;
  }

  /** Sends frames while the rate allows, else waits for the next slot; resolves `end` once all is sent. */
  private pump(): void {
    if (this.closed || this.sendTimer) return;
    while (this.hasWork()) {
      const wait = this.lastSentAt + FRAME_GAP_MS - performance.now();
      if (wait > 0) {
        this.sendTimer = setTimeout(() => {
          this.sendTimer = undefined;
          this.pump();
        }, Math.ceil(wait));
        this.sendTimer.unref();
        return;
      }
      this.sendOne();
    }
    if (this.resolveEnded) {
      this.closed = true;
      this.resolveEnded();
    }
  }

  private sendOne(): void {
    const stream = this.oldest() ?? (this.streams.stdout.dropped > 0 ? 'stdout' : 'stderr');
    const s = this.streams[stream];
    let marker = '';
    if (s.dropped > 0) {
      marker = (s.atLineStart ? '' : '\n') + droppedMarker(s.dropped);
      s.dropped = 0;
    }
    const data = marker + this.take(s, EXEC_OUTPUT_FRAME_BYTES - Buffer.byteLength(marker));
    s.atLineStart = data.endsWith('\n');
    this.lastSentAt = performance.now();
    const frame: ExecOutput = {
      id: this.id,
      type: 'exec_output',
      payload: { stream, seq: ++this.seq, data },
    };
    if (!this.send(frame)) this.unsent++;
  }

  /** Up to `room` bytes of a stream's waiting output, cut between characters. */
  private take(s: StreamState, room: number): string {
    const parts: Buffer[] = [];
    while (room > 0 && s.queue.length > 0) {
      const head = s.queue[0]!;
      const cut = cutBefore(head.buf, room);
      if (cut === 0) break;
      parts.push(head.buf.subarray(0, cut));
      room -= cut;
      this.queued -= cut;
      if (cut < head.buf.length) {
        head.buf = head.buf.subarray(cut);
        break;
      }
      s.queue.shift();
    }
    return Buffer.concat(parts).toString('utf8');
  }
}
