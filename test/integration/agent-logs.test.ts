import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentBus } from '../../activities/agent-bus';
import { formatLogEntry } from '../../agent/cli';
import type { LogsData } from '../../common/agent-protocol';
import { fitLogsPage } from '../../gateway/messages';
import { startAgentController, restClient, type AgentController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { spawnAgent, stopProcess } from '../helpers/agent-process';
import { runCli, startCli, type RunningProcess } from '../helpers/processes';
import { connectRawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';

/**
 * `e2epool logs` (SPEC §10) on real processes: the CLI → a real agent process
 * over its socket → the real gateway → CheckpointLogs in Postgres, while a
 * real worker resets the runner through that same agent.
 */
const R = testRunners(['follow', 'owner', 'stranger', 'big']);
/** Prints a line every half second for 3 s, then one on stderr. */
const FOLLOW_RESET = `sh -c 'for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.5; done; echo oops >&2'`;
/**
 * BIG_RESET prints BIG_LINES lines of about 16,000 characters (twice what one
 * logs reply carries), slowly enough for the agent to stream every one.
 */
const BIG_LINES = 40;
const BIG_LINE_FILL = 15_990;
const bigLine = (i: number) => `${i}:${'z'.repeat(BIG_LINE_FILL)}`;
const BIG_RESET = `i=0
while [ $i -lt ${BIG_LINES} ]; do
  i=$((i+1))
  printf '%s:' "$i"; head -c ${BIG_LINE_FILL} /dev/zero | tr '\\0' z; echo
  sleep 0.15
done
`;

/** Resolves like `p`, or rejects once `ms` passed, saying what it waited for. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('e2epool logs through a real agent', () => {
  let dir: string;
  let c: AgentController;
  let bus: AgentBus;
  const children: ChildProcess[] = [];
  const clis: RunningProcess[] = [];

  const socketOf = (r: TestRunner) => join(dir, `${r.id}.sock`);
  const startAgent = (r: TestRunner) => {
    const a = spawnAgent(dir, c.api.url, r);
    children.push(a.child);
    return a;
  };
  const cliEnv = () => ({ E2EPOOL_AGENT_CONFIG: join(dir, 'none.yml') });
  const cli = (r: TestRunner, ...args: string[]) =>
    runCli([...args, '--socket', socketOf(r)], cliEnv());
  /** The whole log as REST's JSON form has it (one page: these logs are short). */
  const restLog = async (r: TestRunner, name: string) => {
    const res = await fetch(`${c.api.url}/checkpoint/${encodeURIComponent(name)}/logs`, {
      headers: { authorization: `Bearer ${r.token}` },
    });
    expect(res.status).toBe(200);
    return (await res.json()) as LogsData;
  };
  const asCliOutput = (page: LogsData) =>
    page.entries.map((e) => `${formatLogEntry(e)}\n`).join('');

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-cli-logs-'));
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'big-reset.sh'), BIG_RESET);
    c = await startAgentController({
      inventory: `runners:\n${bareMetalRunnerYaml(R.follow, { reset_cmd: `"${FOLLOW_RESET}"` })}${bareMetalRunnerYaml(R.owner)}${bareMetalRunnerYaml(R.stranger)}${bareMetalRunnerYaml(R.big, { reset_cmd: `"sh ${join(dir, 'big-reset.sh')}"` })}`,
      env: { E2EPOOL_WS_HEARTBEAT_INTERVAL: '1' },
      bus: { staleAfterSeconds: 90, connectWaitSeconds: 20 },
    });
    bus = c.bus;
  });
  afterAll(async () => {
    for (const p of clis) await p.stop('SIGKILL', 1000);
    for (const a of children) if (a.exitCode === null) a.kill('SIGKILL');
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('--follow started right after finalize prints the reset as it runs and exits 0 once reset; without --follow the same after the end', async () => {
    const r = R.follow;
    const agent = startAgent(r);
    await waitFor('the agent session', () => bus.isConnected(r.id), { timeoutMs: 20_000 });
    const created = await cli(r, 'create', '--job-id', '9980');
    expect([created.code, created.stderr]).toEqual([0, '']);
    const name = created.stdout.trim();
    const fin = await cli(r, 'finalize', '--checkpoint', name, '--status', 'failed');
    expect([fin.code, fin.stdout]).toEqual([0, 'Finalize queued\n']);

    const follower = startCli(
      ['logs', '--checkpoint', name, '--follow', '--socket', socketOf(r)],
      cliEnv(),
    );
    clis.push(follower);
    await follower.waitForOutput(/^line-1$/m);
    const firstLineSeen = Date.now();
    const code = await within(60_000, 'the follower to exit', follower.exited);
    expect([code, follower.stderr()]).toEqual([0, '']);
    // It exits once the checkpoint is reset, not before.
    expect((await restClient(() => c.api.url, r.token).status(name)).body.state).toBe('reset');

    const page = await restLog(r, name);
    expect(page.done).toBe(true);
    // Every entry, in order, once: exactly the log.
    expect(follower.stdout()).toBe(asCliOutput(page));
    const lines = follower.stdout().split('\n').slice(0, -1);
    expect(lines.filter((l) => !/^\d{4}-\d\d-\d\dT[\d:.]+Z step /.test(l))).toEqual([
      'line-1',
      'line-2',
      'line-3',
      'line-4',
      'line-5',
      'line-6',
      '[stderr] oops',
    ]);
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    expect(at(/ step reset_cmd running$/)).toBeLessThan(at(/^line-1$/));
    const resetCmdOk = at(/ step reset_cmd ok \d+ms exit 0; stdout: /);
    expect(resetCmdOk).toBeGreaterThan(at(/^\[stderr\] oops$/));
    expect(lines.at(-1)).toMatch(/ step reset ok \d+ms state=reset$/);
    // line-1 was printed while the command still ran (it ran 3 s; the follower polls every second).
    const resetCmdEnd = page.entries.find((e) => e.step === 'reset_cmd' && e.result === 'ok')!;
    expect(firstLineSeen).toBeLessThan(Date.parse(resetCmdEnd.at));

    const after = await cli(r, 'logs', '--checkpoint', name);
    expect(after).toEqual({ code: 0, stdout: follower.stdout(), stderr: '' });
    expect(agent.output()).not.toContain(r.token);
    await stopProcess(agent.child);
  }, 90_000);

  it("refuses another runner's checkpoint (exit 1) and validates the WebSocket request like REST", async () => {
    const owner = await connectRawAgent(c.api.url, {
      runnerId: R.owner.id,
      token: R.owner.token,
      onExec: () => ({ exit_code: 0, stdout: 'cleaned\n', stderr: '' }),
    });
    const stranger = startAgent(R.stranger);
    try {
      await waitFor('both agent sessions', async () => {
        const [a, b] = await Promise.all([
          bus.isConnected(R.owner.id),
          bus.isConnected(R.stranger.id),
        ]);
        return a && b;
      });
      const created = await owner.request('create', { job_id: '9981' });
      expect(created).toMatchObject({ status: 'ok' });
      const name = (created.data as { name: string }).name;

      expect(await cli(R.stranger, 'logs', '--checkpoint', name)).toEqual({
        code: 1,
        stdout: '',
        stderr: 'Error: Token not authorized for this checkpoint\n',
      });
      expect(
        await cli(R.stranger, 'logs', '--checkpoint', 'job-1-1700000000-abcdef01', '--follow'),
      ).toEqual({ code: 1, stdout: '', stderr: 'Error: Checkpoint not found\n' });

      const logs = (payload: unknown) => owner.request('logs', payload);
      const refused = (code: number, detail: string) => ({
        status: 'error',
        data: null,
        error: { code, detail: expect.stringContaining(detail) },
      });
      expect(await logs({})).toMatchObject(refused(422, 'checkpoint_name'));
      for (const after of [-1, 1.5, '3', null, 2 ** 31])
        expect(await logs({ checkpoint_name: name, after })).toMatchObject(
          refused(422, 'after must be an integer from 0 to 2147483647'),
        );
      expect(await logs({ checkpoint_name: 'job-1-1700000000-abcdef01' })).toMatchObject(
        refused(404, 'Checkpoint not found'),
      );
      expect(await logs({ checkpoint_name: `a\u0000b` })).toMatchObject(refused(422, 'NUL'));
      // A payload that is not an object is a malformed request (the envelope): 400.
      expect(await owner.request('logs', 'x')).toMatchObject(refused(400, 'Malformed request'));

      const first = await logs({ checkpoint_name: name });
      expect(first).toMatchObject({ status: 'ok', error: null });
      const page = first.data as LogsData;
      expect(page).toEqual(await restLog(R.owner, name));
      expect(page.done).toBe(false);
      expect(page.entries[0]).toMatchObject({ seq: 1, kind: 'step' });
      expect(await logs({ checkpoint_name: name, after: page.next })).toMatchObject({
        data: { entries: [], next: page.next, done: false },
      });

      // The checkpoint ends: its log is done.
      expect(
        await owner.request('finalize', { checkpoint_name: name, status: 'failure' }),
      ).toMatchObject({ status: 'ok' });
      const end = await waitFor(
        'the log to be done',
        async () => {
          const r = await logs({ checkpoint_name: name, after: page.next });
          return (r.data as LogsData | null)?.done ? (r.data as LogsData) : null;
        },
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      expect(end.entries.map((e) => e.text)).toContain('cleaned');
    } finally {
      owner.close();
      await stopProcess(stranger.child);
    }
  }, 60_000);

  it('a log larger than one reply: the CLI pages through it and prints every line', async () => {
    const r = R.big;
    const agent = startAgent(r);
    await waitFor('the agent session', () => bus.isConnected(r.id), { timeoutMs: 20_000 });
    const name = (await cli(r, 'create', '--job-id', '9982')).stdout.trim();
    expect((await cli(r, 'finalize', '--checkpoint', name, '--status', 'failure')).code).toBe(0);
    const api = restClient(() => c.api.url, r.token);
    await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset', {
      timeoutMs: 60_000,
      intervalMs: 250,
    });

    const out = await cli(r, 'logs', '--checkpoint', name);
    expect([out.code, out.stderr]).toEqual([0, '']);
    const page = await restLog(r, name);
    expect(out.stdout).toBe(asCliOutput(page));
    expect(out.stdout.split('\n').filter((l) => l.length >= BIG_LINE_FILL)).toEqual(
      Array.from({ length: BIG_LINES }, (_, i) => bigLine(i + 1)),
    );
    // 40 lines of 16 kB do not fit in one logs reply: the CLI had to page on.
    expect(fitLogsPage(page).entries.length).toBeLessThan(page.entries.length);
    // Answered logs requests stay out of the agent's journal at info: --follow asks every second.
    expect(agent.output()).toMatch(/"type":"create"[^\n]*forwarded CLI request/);
    expect(agent.output()).not.toMatch(/"type":"logs"[^\n]*forwarded CLI request/);
    await stopProcess(agent.child);
  }, 90_000);
});
