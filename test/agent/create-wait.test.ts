import { join } from 'node:path';
import { createAction, type CliIo } from '../../agent/cli';
import { startIpcServer, type IpcServer } from '../../agent/ipc';
import { errorReply, normalizeReply } from '../../agent/messages';
import type { Reply } from '../../common/agent-protocol';
import { tempDir } from './helpers';

/**
 * `e2epool create` waits out a 429 (the runner's cooldown) or a 503 (its
 * previous run closing, the controller away) up to `--wait`, honouring
 * `retry_after`. The agent is a double here: the replies are scripted.
 */
describe('e2epool create --wait', () => {
  let tmp: ReturnType<typeof tempDir>;
  let server: IpcServer | null = null;
  let socket: string;
  let asked: number[];

  /** An agent that answers the creates with `replies` in turn (the last one again after). */
  async function agentAnswering(replies: Array<(id: string) => Reply>) {
    asked = [];
    server = await startIpcServer({
      path: socket,
      handler: async (req) => {
        const id = typeof req.id === 'string' ? req.id : '';
        asked.push(Date.now());
        return replies[Math.min(asked.length, replies.length) - 1]!(id);
      },
    });
  }
  const ok = (id: string): Reply => ({
    id,
    status: 'ok',
    data: { name: 'job-7-1700000000-abcdef01' },
    error: null,
  });
  const cooldown = (retryAfter: number) => (id: string) => ({
    ...errorReply(id, 429, 'Cooldown period active, try again later'),
    error: {
      code: 429,
      detail: 'Cooldown period active, try again later',
      retry_after: retryAfter,
    },
  });
  const run = async (wait?: number) => {
    const out: string[] = [];
    const err: string[] = [];
    const io: CliIo = { out: (l) => out.push(l), err: (l) => err.push(l), env: {} };
    const code = await createAction(
      { jobId: '7', socket, ...(wait !== undefined ? { wait } : {}) },
      io,
    );
    return { code, out, err };
  };

  beforeEach(() => {
    tmp = tempDir();
    socket = join(tmp.dir, 'agent.sock');
  });
  afterEach(async () => {
    await server?.close(100);
    server = null;
    tmp.cleanup();
  });

  it('a 503, then a 429 with retry_after: waits each out (1 s, then as asked), then prints the name', async () => {
    await agentAnswering([
      (id) => errorReply(id, 503, 'Not connected to controller'),
      cooldown(2),
      ok,
    ]);
    const r = await run();
    expect(r).toEqual({
      code: 0,
      out: ['job-7-1700000000-abcdef01'],
      err: [
        'Note: Not connected to controller (503); trying again in 1s (waiting up to 60s in all, --wait)',
        'Note: Cooldown period active, try again later (429); trying again in 2s (waiting up to 60s in all, --wait)',
      ],
    });
    expect(asked).toHaveLength(3);
    expect(asked[1]! - asked[0]!).toBeGreaterThanOrEqual(950);
    expect(asked[2]! - asked[1]!).toBeGreaterThanOrEqual(1950);
  });

  it('--wait 0 fails at the first 429 with 75, a temporary refusal', async () => {
    await agentAnswering([cooldown(3), ok]);
    expect(await run(0)).toEqual({
      code: 75,
      out: [],
      err: ['Error: Cooldown period active, try again later'],
    });
    expect(asked).toHaveLength(1);
  });

  it('gives up when --wait runs out: the last try is at the deadline, its error printed', async () => {
    await agentAnswering([cooldown(30)]);
    const r = await run(1);
    expect(r.code).toBe(75);
    expect(r.err).toEqual([
      'Note: Cooldown period active, try again later (429); trying again in 1s (waiting up to 1s in all, --wait)',
      'Error: Cooldown period active, try again later',
    ]);
    expect(asked).toHaveLength(2);
  });

  it('other errors are not waited for (409: busy, exit 75; 422: exit 1)', async () => {
    await agentAnswering([(id) => errorReply(id, 409, 'Active checkpoint exists'), ok]);
    expect(await run()).toEqual({ code: 75, out: [], err: ['Error: Active checkpoint exists'] });
    expect(asked).toHaveLength(1);
  });

  it("the agent passes the controller's retry_after on, and drops one that is not a number", () => {
    const error = { code: 429, detail: 'Cooldown period active, try again later' };
    expect(
      normalizeReply({ status: 'error', data: null, error: { ...error, retry_after: 4 } }, 'a'),
    ).toEqual({ id: 'a', status: 'error', data: null, error: { ...error, retry_after: 4 } });
    expect(
      normalizeReply({ status: 'error', data: null, error: { ...error, retry_after: '4' } }, 'a'),
    ).toEqual({ id: 'a', status: 'error', data: null, error });
  });
});
