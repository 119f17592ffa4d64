import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES, type DecodeEvent } from '../../agent/framing';
import { prng } from './helpers';

function decodeAll(decoder: FrameDecoder, chunks: Buffer[]): DecodeEvent[] {
  return chunks.flatMap((c) => decoder.push(c));
}

function payloads(events: DecodeEvent[]): unknown[] {
  return events.map((e) => {
    if (e.kind !== 'frame') throw new Error(`unexpected ${e.kind}`);
    return JSON.parse(e.payload.toString('utf8'));
  });
}

describe('IPC framing', () => {
  it('encodes a 4-byte big-endian length followed by UTF-8 JSON', () => {
    const frame = encodeFrame({ type: 'status', payload: { checkpoint_name: 'é' } });
    const body = Buffer.from(JSON.stringify({ type: 'status', payload: { checkpoint_name: 'é' } }));
    expect(frame.readUInt32BE(0)).toBe(body.length);
    expect(frame.subarray(4).equals(body)).toBe(true);
  });

  it('decodes a frame delivered one byte at a time', () => {
    const msg = { id: 'a1', type: 'create', payload: { job_id: '123', text: 'ünïcödé ✓' } };
    const frame = encodeFrame(msg);
    const decoder = new FrameDecoder();
    const events: DecodeEvent[] = [];
    for (let i = 0; i < frame.length; i++) {
      const got = decoder.push(frame.subarray(i, i + 1));
      if (i < frame.length - 1) expect(got).toEqual([]);
      events.push(...got);
    }
    expect(payloads(events)).toEqual([msg]);
    expect(decoder.partial).toBe(false);
  });

  it('decodes many frames under random chunkings (seeded)', () => {
    const rand = prng(42);
    for (let round = 0; round < 200; round++) {
      const msgs = Array.from({ length: 1 + Math.floor(rand() * 6) }, (_, i) => ({
        id: `${round}-${i}`,
        pad: 'x'.repeat(Math.floor(rand() * 300)),
      }));
      const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
      const chunks: Buffer[] = [];
      for (let at = 0; at < stream.length;) {
        const n = Math.max(0, Math.floor(rand() * 40) - 5); // includes empty chunks
        chunks.push(stream.subarray(at, at + n));
        at += n;
      }
      expect(payloads(decodeAll(new FrameDecoder(), chunks))).toEqual(msgs);
    }
  });

  it('decodes an empty payload and a payload of exactly the maximum size', () => {
    const decoder = new FrameDecoder();
    const empty = Buffer.from([0, 0, 0, 0]);
    const events = decoder.push(empty);
    expect(events).toHaveLength(1);
    expect(events[0]).toEqual({ kind: 'frame', payload: Buffer.alloc(0) });

    const max = Buffer.alloc(4 + MAX_FRAME_BYTES, 0x20);
    max.writeUInt32BE(MAX_FRAME_BYTES, 0);
    const big = new FrameDecoder().push(max);
    expect(big).toHaveLength(1);
    expect(big[0]!.kind).toBe('frame');
  });

  it('reports an oversized length as soon as the header arrives, then ignores the rest', () => {
    const decoder = new FrameDecoder();
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    expect(decoder.push(header.subarray(0, 2))).toEqual([]);
    expect(decoder.push(header.subarray(2))).toEqual([
      { kind: 'oversize', length: MAX_FRAME_BYTES + 1 },
    ]);
    expect(decoder.push(encodeFrame({ later: true }))).toEqual([]);
  });

  it('knows a truncated frame is incomplete', () => {
    const frame = encodeFrame({ id: 'x' });
    const decoder = new FrameDecoder();
    expect(decoder.push(frame.subarray(0, frame.length - 1))).toEqual([]);
    expect(decoder.partial).toBe(true);
  });

  it('refuses to encode a payload over the maximum', () => {
    expect(() => encodeFrame('x'.repeat(MAX_FRAME_BYTES))).toThrow(/exceeds maximum 1048576/);
  });
});
