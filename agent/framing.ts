import { MAX_MESSAGE_BYTES } from '../common/agent-protocol';

/**
 * IPC framing: a 4-byte unsigned big-endian length, then that many
 * bytes of UTF-8 JSON. No dependencies (the protocol module imports nothing):
 * the CI-side CLI loads this.
 */

/** Largest payload either side accepts (the length header itself not counted). */
export const MAX_FRAME_BYTES = MAX_MESSAGE_BYTES;

const HEADER_BYTES = 4;

/** Encodes one JSON value as a frame. Throws if the payload exceeds MAX_FRAME_BYTES. */
export function encodeFrame(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  if (body.length > MAX_FRAME_BYTES) {
    throw new RangeError(`Message size ${body.length} exceeds maximum ${MAX_FRAME_BYTES}`);
  }
  const frame = Buffer.allocUnsafe(HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, HEADER_BYTES);
  return frame;
}

/** What the decoder found in the bytes pushed so far. */
export type DecodeEvent = { kind: 'frame'; payload: Buffer } | { kind: 'oversize'; length: number };

/**
 * Incremental decoder that survives arbitrary chunk boundaries (a header split
 * over several reads, many frames in one read). Chunks are kept in a list and
 * joined once per frame, so a 1 MiB frame arriving a byte at a time stays linear.
 * After an oversize header it stops: the stream cannot be resynchronised.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need: number | null = null; // payload length once the header is read
  private failed = false;

  /** True while a frame has been started but not completed. */
  get partial(): boolean {
    return this.buffered > 0 || this.need !== null;
  }

  push(chunk: Buffer): DecodeEvent[] {
    if (this.failed) return [];
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const events: DecodeEvent[] = [];
    for (;;) {
      if (this.need === null) {
        if (this.buffered < HEADER_BYTES) break;
        const length = this.take(HEADER_BYTES).readUInt32BE(0);
        if (length > MAX_FRAME_BYTES) {
          this.failed = true;
          this.chunks = [];
          this.buffered = 0;
          events.push({ kind: 'oversize', length });
          break;
        }
        this.need = length;
      }
      if (this.buffered < this.need) break;
      events.push({ kind: 'frame', payload: this.take(this.need) });
      this.need = null;
    }
    return events;
  }

  /** Removes and returns the first `n` buffered bytes (n <= buffered). */
  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const all = Buffer.concat(this.chunks, this.buffered);
    const out = all.subarray(0, n);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.buffered -= n;
    return out;
  }
}
