import { performance } from 'node:perf_hooks';
import { CommandRunner, OUTPUT_CAP_CHARS } from '../../agent/exec';
import { droppedMarker, OutputStreamer } from '../../agent/exec-output';
import {
  EXEC_OUTPUT_BACKLOG_BYTES,
  EXEC_OUTPUT_FLUSH_MS,
  EXEC_OUTPUT_FRAME_BYTES,
  EXEC_OUTPUT_FRAMES_PER_SECOND,
  type ExecData,
  type ExecOutput,
} from '../../common/agent-protocol';
import { uniqueId } from '../helpers/env';
import { waitFor } from '../helpers/wait';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MARKER = /\[e2epool: (\d+) bytes of output dropped\]\n/g;
const MARKER_LINE = /^\[e2epool: (\d+) bytes of output dropped\]$/;

interface Sent {
  frame: ExecOutput;
  /** performance.now() when the streamer sent it. */
  at: number;
  /** The streamer's backlog right then. */
  backlog: number;
  /** Whether the command's result had been delivered already. */
  afterResult: boolean;
}

/** Runs `cmd` through a CommandRunner with an OutputStreamer, recording every frame it sends. */
async function runStreamed(
  cmd: string,
  o: { timeout?: number; accept?: (f: ExecOutput) => boolean } = {},
): Promise<{
  id: string;
  result: ExecData;
  sent: Sent[];
  streamer: OutputStreamer;
  started: number;
}> {
  const id = uniqueId('exec');
  const sent: Sent[] = [];
  let delivered = false;
  const streamer: OutputStreamer = new OutputStreamer(id, (frame) => {
    sent.push({
      frame,
      at: performance.now(),
      backlog: streamer.backlogBytes,
      afterResult: delivered,
    });
    return o.accept?.(frame) ?? true;
  });
  const started = performance.now();
  const result = await new CommandRunner(null).run(cmd, o.timeout ?? 30, streamer);
  delivered = true;
  return { id, result, sent, streamer, started };
}

/** One stream's data, in seq order. */
const streamOf = (sent: Sent[], stream: 'stdout' | 'stderr') =>
  sent
    .map((s) => s.frame.payload)
    .filter((p) => p.stream === stream)
    .map((p) => p.data)
    .join('');

/** Checks what every exec's frames must satisfy: its id, seq 1..n, data within the size cap. */
function expectWellFormed(id: string, sent: Sent[]): void {
  expect(sent.map((s) => s.frame.id)).toEqual(sent.map(() => id));
  expect(sent.map((s) => s.frame.payload.seq)).toEqual(sent.map((_s, i) => i + 1));
  for (const s of sent) {
    expect(s.frame.type).toBe('exec_output');
    expect(s.frame.payload.data.length).toBeGreaterThan(0);
    expect(Buffer.byteLength(s.frame.payload.data)).toBeLessThanOrEqual(EXEC_OUTPUT_FRAME_BYTES);
    expect(s.frame.payload.data).not.toContain('\ufffd'); // never cut inside a character
    expect(s.afterResult).toBe(false);
  }
}

describe('live output of controller commands (exec_output frames)', () => {
  it('keeps to the frame rate and size caps under a flood, drops the oldest output behind a marker, and stays bounded', async () => {
    // 10-byte lines: pipe reads (powers of two) end inside them.
    const total = 2_000_000;
    const { id, result, sent, streamer } = await runStreamed(`yes abcdefghi | head -c ${total}`);
    // The reply is what it always was: the first 65536 characters.
    expect(result).toEqual({
      exit_code: 0,
      stdout: 'abcdefghi\n'.repeat(OUTPUT_CAP_CHARS / 10 + 1).slice(0, OUTPUT_CAP_CHARS),
      stderr: '',
    });
    expectWellFormed(id, sent);

    // No second holds more than EXEC_OUTPUT_FRAMES_PER_SECOND frames.
    const n = EXEC_OUTPUT_FRAMES_PER_SECOND;
    for (let i = n; i < sent.length; i++)
      expect(sent[i]!.at - sent[i - n]!.at).toBeGreaterThanOrEqual(1000 - 1);

    // What the frames say was dropped, plus what they carry, is everything the command printed.
    // Counted frame by frame: a marker opens its frame, after a newline of its own when the
    // stream's last frame ended mid-line (that line's newline may be among the dropped bytes,
    // so the text alone cannot tell a 9-byte piece from a whole 10-byte line).
    let kept = 0;
    let dropped = 0;
    let markers = 0;
    let lastEndedLine = true;
    for (const { data } of sent.map((x) => x.frame.payload).filter((p) => p.stream === 'stdout')) {
      const marker = /^(\n?)\[e2epool: (\d+) bytes of output dropped\]\n/.exec(data);
      let carried = data;
      if (marker) {
        markers++;
        dropped += Number(marker[2]);
        expect({ insertedNewline: marker[1] === '\n' }).toEqual({
          insertedNewline: !lastEndedLine,
        });
        carried = data.slice(marker[0].length);
      }
      kept += Buffer.byteLength(carried);
      if (carried) lastEndedLine = carried.endsWith('\n');
    }
    // A marker stands on a line of its own; only a line already partly sent can be cut short by it.
    const out = streamOf(sent, 'stdout');
    const lines = out.split('\n');
    expect(lines.pop()).toBe('');
    lines.forEach((line, i) => {
      if (MARKER_LINE.test(line) || line === 'abcdefghi') return;
      expect({ line, next: lines[i + 1] }).toEqual({
        line: expect.stringMatching(/^(a|ab|abc|abcd|abcde|abcdef|abcdefg|abcdefgh)$/),
        next: expect.stringMatching(MARKER_LINE),
      });
    });
    expect(markers).toBeGreaterThanOrEqual(1);
    expect(kept + dropped).toBe(total);
    expect(streamer.stats).toEqual({ frames: sent.length, unsent: 0, droppedBytes: dropped });
    // The newest output survives: the last frame ends the output.
    expect(out.endsWith('abcdefghi\nabcdefghi\n')).toBe(true);

    // Memory: never more than the backlog and an unfinished line per stream.
    const most = Math.max(...sent.map((s) => s.backlog));
    expect(most).toBeLessThanOrEqual(EXEC_OUTPUT_BACKLOG_BYTES + 2 * EXEC_OUTPUT_FRAME_BYTES);
  });

  it('coalesces lines printed faster than the frame rate, dropping nothing below the backlog bound', async () => {
    // 2000 numbered lines on stdout and every tenth on stderr, as fast as the shell goes.
    const { id, result, sent, streamer } = await runStreamed(
      'i=0; while [ $i -lt 2000 ]; do echo "line $i"; [ $((i % 10)) -eq 0 ] && echo "warn $i" >&2; i=$((i+1)); done; true',
    );
    expectWellFormed(id, sent);
    expect(streamer.stats.droppedBytes).toBe(0);
    expect(streamOf(sent, 'stdout')).toBe(result.stdout);
    expect(streamOf(sent, 'stderr')).toBe(result.stderr);
    expect(result.stdout.split('\n')).toHaveLength(2001);
    // Fewer frames than lines: they were batched.
    expect(sent.length).toBeLessThan(2200 / 10);
  });

  it('sends an unfinished line after about EXEC_OUTPUT_FLUSH_MS, and its end with the next frame', async () => {
    const { id, result, sent, started } = await runStreamed(
      "printf 'prompt> '; sleep 1; printf 'answer\\n'",
    );
    expectWellFormed(id, sent);
    expect(result.stdout).toBe('prompt> answer\n');
    expect(sent.map((s) => s.frame.payload.data)).toEqual(['prompt> ', 'answer\n']);
    // The prompt waited for the rest of its line, but not for the second the command sleeps.
    expect(sent[0]!.at - started).toBeGreaterThanOrEqual(EXEC_OUTPUT_FLUSH_MS);
    expect(sent[1]!.at - sent[0]!.at).toBeGreaterThan(500);
  });

  it('cuts a line longer than a frame between characters, never inside one', async () => {
    // 5000 × '✓' (3 bytes each): 15000 bytes on one line, then an 'é' line cut at the end.
    const { id, result, sent } = await runStreamed(
      "i=0; while [ $i -lt 5000 ]; do printf '✓'; i=$((i+1)); done; echo; printf 'é'",
    );
    expectWellFormed(id, sent);
    expect(result.stdout).toBe(`${'✓'.repeat(5000)}\né`);
    expect(streamOf(sent, 'stdout')).toBe(result.stdout);
    expect(sent.length).toBeGreaterThanOrEqual(2);
  });

  it('streams a command that times out, then stops', async () => {
    const { id, result, sent } = await runStreamed('echo started; sleep 30', { timeout: 0.5 });
    expect(result).toEqual({
      exit_code: -1,
      stdout: 'started\n',
      stderr: 'Command timed out after 0.5s',
    });
    expectWellFormed(id, sent);
    expect(streamOf(sent, 'stdout')).toBe('started\n');
  });

  it('goes on when frames cannot be sent, counting them, and sends nothing after the result', async () => {
    let refused = 0;
    const { id, result, sent, streamer } = await runStreamed(
      'for i in 1 2 3; do echo "line $i"; sleep 0.1; done',
      { accept: () => refused++ % 2 === 1 },
    );
    expect(result).toMatchObject({ exit_code: 0, stdout: 'line 1\nline 2\nline 3\n' });
    expectWellFormed(id, sent);
    expect(streamer.stats.unsent).toBe(Math.ceil(sent.length / 2));
    const count = sent.length;
    // An absence cannot be awaited: wait longer than any timer of the streamer.
    await sleep(EXEC_OUTPUT_FLUSH_MS * 2);
    expect(sent).toHaveLength(count);
    streamer.write('stdout', Buffer.from('late\n'));
    await sleep(EXEC_OUTPUT_FLUSH_MS * 2);
    expect(sent).toHaveLength(count);
  });

  it('puts the drop marker on a line of its own, also after an unfinished line', async () => {
    const sent: ExecOutput[] = [];
    const s = new OutputStreamer('x', (f) => {
      sent.push(f);
      return true;
    });
    s.write('stdout', Buffer.from('half a line'));
    await waitFor('the unfinished line to be sent', () => sent.length === 1);
    // More than the backlog arrives at once: its oldest lines are dropped.
    const line = `${'z'.repeat(999)}\n`;
    s.write('stdout', Buffer.from(` end\n${line.repeat(300)}`));
    await s.end();
    const out = sent.map((f) => f.payload.data).join('');
    const [marker, ...more] = [...out.matchAll(MARKER)];
    expect(more).toEqual([]);
    const dropped = Number(marker![1]);
    const keptLines = (300 * line.length + 5 - dropped) / line.length;
    expect(Number.isInteger(keptLines)).toBe(true);
    expect(out).toBe(`half a line\n${droppedMarker(dropped)}${line.repeat(keptLines)}`);
  });
});
