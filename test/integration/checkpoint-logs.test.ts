import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentBus } from '../../activities/agent-bus';
import type { ApiServer } from '../../api/server';
import { startAgentController, restClient, type AgentController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { spawnAgent } from '../helpers/agent-process';
import { connectRawAgent } from '../helpers/raw-agent';
import { openSse } from '../helpers/sse';
import { waitFor } from '../helpers/wait';

/**
 * Checkpoint logs (SPEC §10): a real agent process streams a reset_cmd's
 * output while it runs; an SSE client on another API instance than the one
 * holding the agent's socket sees each line before the command ends, in
 * order, and resumes after a reconnect with Last-Event-ID without gaps or
 * duplicates. An agent that never streams (the Python one) still gets its
 * output stored, at the end. The admin token reads any runner's log.
 */
const R = testRunners(['live', 'python', 'capped']);
/** A JSON page of a checkpoint log. */
interface Page {
  entries: Array<{ seq: number; kind: string; step?: string; result?: string; text?: string }>;
  next: number;
  done: boolean;
}
const page$ = async (res: Response) => (await res.json()) as Page;

const ADMIN = 'logs-test-admin-token-0123456789abcdef';
const LIVE_CMD = `sh -c 'for i in 1 2 3 4 5; do echo line-$i; sleep 1; done; echo oops >&2'`;

describe('checkpoint logs', () => {
  let dir: string;
  let c: AgentController;
  let other: ApiServer;
  let bus: AgentBus;
  const children: ChildProcess[] = [];

  const startAgent = (r: TestRunner) => children.push(spawnAgent(dir, c.api.url, r).child);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-logs-'));
    chmodSync(dir, 0o755);
    c = await startAgentController({
      inventory: `runners:\n${bareMetalRunnerYaml(R.live, { reset_cmd: `"${LIVE_CMD}"` })}${bareMetalRunnerYaml(R.python, { reset_cmd: '/opt/reset.sh' })}${bareMetalRunnerYaml(R.capped, { reset_cmd: '/opt/chatty.sh' })}`,
      env: {
        E2EPOOL_LOG_MAX_LINES: '7',
        E2EPOOL_WS_HEARTBEAT_INTERVAL: '1',
        E2EPOOL_ADMIN_TOKEN: ADMIN,
      },
      bus: { staleAfterSeconds: 90, connectWaitSeconds: 20 },
    });
    bus = c.bus;
    other = await c.startAnotherApi();
  });
  afterAll(async () => {
    for (const a of children) if (a.exitCode === null) a.kill('SIGKILL');
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const logsUrl = (api: { url: string }, name: string) =>
    `${api.url}/checkpoint/${encodeURIComponent(name)}/logs`;

  it('lines stream live through another API instance, and resume after a reconnect without gaps or duplicates', async () => {
    const r = R.live;
    startAgent(r);
    await waitFor('the agent session', () => bus.isConnected(r.id), { timeoutMs: 20_000 });
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '9970')).body.name as string;
    const auth = { authorization: `Bearer ${r.token}` };

    const first = openSse(logsUrl(other, name), auth);
    expect(await first.status).toBe(200);
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    const stdout = (evs: typeof first.events) =>
      evs.filter((e) => e.event === 'stdout').map((e) => JSON.parse(e.data).text as string);
    await waitFor('line-2', () => stdout(first.events).includes('line-2'), { timeoutMs: 30_000 });
    // The command still runs: line-1 came while it had seconds of output to go.
    const runningStep = (await c.ds.query(
      `SELECT o.result FROM operation_logs o JOIN checkpoints k ON k.id = o.checkpoint_id
        WHERE k.name = $1 AND o.operation = 'reset_cmd'`,
      [name],
    )) as Array<{ result: string }>;
    expect(runningStep).toEqual([{ result: 'running' }]);
    first.close();
    await first.ended;
    const lastId = first.events[first.events.length - 1]!.id!;

    const second = openSse(logsUrl(other, name), { ...auth, 'last-event-id': lastId });
    await second.ended;
    expect(second.events[second.events.length - 1]!.event).toBe('end');
    const all = [...first.events, ...second.events.slice(0, -1)];
    const seqs = all.map((e) => Number(e.id));
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => seqs[0]! + i));
    expect(stdout(all)).toEqual(['line-1', 'line-2', 'line-3', 'line-4', 'line-5']);
    expect(all.filter((e) => e.event === 'stderr').map((e) => JSON.parse(e.data).text)).toEqual([
      'oops',
    ]);
    // Step events frame the output: reset_cmd starts before line-1 and ends after line-5.
    const steps = all
      .filter((e) => e.event === 'step')
      .map((e) => JSON.parse(e.data) as { step: string; result: string; seq: number });
    const line = (t: string) => Number(all.find((e) => e.data.includes(`"${t}"`))!.id);
    const resetRunning = steps.find((s) => s.step === 'reset_cmd' && s.result === 'running')!;
    const resetOk = steps.find((s) => s.step === 'reset_cmd' && s.result === 'ok')!;
    expect(resetRunning.seq).toBeLessThan(line('line-1'));
    expect(resetOk.seq).toBeGreaterThan(line('line-5'));
    expect(steps.map((s) => s.step)).toEqual(expect.arrayContaining(['create', 'reset']));

    // The JSON form: the same entries, and done.
    const page = await page$(await fetch(logsUrl(c.api, name), { headers: auth }));
    expect(page.done).toBe(true);
    expect(page.entries.map((e) => e.seq)).toEqual(
      Array.from({ length: page.next }, (_, i) => i + 1),
    );
    const tail = await page$(
      await fetch(`${logsUrl(c.api, name)}?after=${page.next - 1}`, { headers: auth }),
    );
    expect(tail).toEqual({
      entries: [page.entries[page.entries.length - 1]],
      next: page.next,
      done: true,
    });
  }, 90_000);

  it('an agent that never streams (the Python agent) still gets its output stored, at the end', async () => {
    const r = R.python;
    const agent = await connectRawAgent(c.api.url, {
      runnerId: r.id,
      token: r.token,
      onExec: () => ({ exit_code: 0, stdout: 'wiped\nrebooted\n', stderr: 'note\n' }),
    });
    try {
      await waitFor('the agent session', () => bus.isConnected(r.id), { timeoutMs: 20_000 });
      const api = restClient(() => c.api.url, r.token);
      const name = (await api.create(r.id, '9971')).body.name as string;
      expect((await api.finalize(name, 'failure')).status).toBe(202);
      await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset');
      const page = await page$(
        await fetch(logsUrl(other, name), { headers: { authorization: `Bearer ${r.token}` } }),
      );
      expect(
        page.entries.filter((e) => e.kind !== 'step').map((e) => `${e.kind}:${e.text}`),
      ).toEqual(['stdout:wiped', 'stdout:rebooted', 'stderr:note']);
    } finally {
      agent.close();
    }
  }, 60_000);

  it('output beyond E2EPOOL_LOG_MAX_LINES is cut with a marker; steps still land; bad requests get 4xx', async () => {
    const r = R.capped;
    const agent = await connectRawAgent(c.api.url, {
      runnerId: r.id,
      token: r.token,
      onExec: () => ({ exit_code: 0, stdout: 'a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n', stderr: '' }),
    });
    try {
      await waitFor('the agent session', () => bus.isConnected(r.id), { timeoutMs: 20_000 });
      const api = restClient(() => c.api.url, r.token);
      const name = (await api.create(r.id, '9972')).body.name as string;
      expect((await api.finalize(name, 'failure')).status).toBe(202);
      await waitFor('the reset', async () => (await api.status(name)).body.state === 'reset');
      const auth = { authorization: `Bearer ${r.token}` };
      const page = await page$(await fetch(logsUrl(c.api, name), { headers: auth }));
      const out = page.entries.filter((e) => e.kind !== 'step' || e.step === 'log');
      expect(out.map((e) => e.text)).toEqual([
        'a',
        'b',
        'c',
        'd',
        'e',
        'f',
        'g',
        'output truncated: more than 7 lines (E2EPOOL_LOG_MAX_LINES)',
      ]);
      expect(page.entries.some((e) => e.step === 'reset' && e.result === 'ok')).toBe(true);

      const other = R.live;
      expect(
        (await fetch(logsUrl(c.api, name), { headers: { authorization: `Bearer ${other.token}` } }))
          .status,
      ).toBe(403);
      // The admin token reads any runner's checkpoint log (SPEC §10).
      const byAdmin = await fetch(logsUrl(c.api, name), {
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      expect([byAdmin.status, await page$(byAdmin)]).toEqual([200, page]);
      const missing = await fetch(logsUrl(c.api, 'job-1-1700000000-abcdef01'), { headers: auth });
      expect([missing.status, await missing.json()]).toEqual([
        404,
        { detail: 'Checkpoint not found' },
      ]);
      expect(
        (await fetch(`${logsUrl(c.api, name)}?after=3000000000`, { headers: auth })).status,
      ).toBe(422);
      const bad = await fetch(`${logsUrl(c.api, name)}?after=-1`, { headers: auth });
      expect(bad.status).toBe(422);
      expect(((await bad.json()) as { detail: unknown[] }).detail[0]).toMatchObject({
        loc: ['query', 'after'],
      });
      expect((await fetch(logsUrl(c.api, name))).status).toBe(401);
    } finally {
      agent.close();
    }
  }, 60_000);
});
