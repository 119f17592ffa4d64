/**
 * `npm run bench` (part 3): live command output (see docs/protocol.md#checkpoint-logs) on real processes:
 * `e2epool api`, `e2epool worker` and one `e2epool agent` per runner.
 *
 * - Log throughput: a reset_cmd prints BENCH_LOG_LINES short lines as fast as
 *   the shell can; one SSE client on the API counts stdout lines from the
 *   first to the last (lines/s), and how many the agent had to drop.
 * - Added latency: finalize → `reset` of a command that prints 2,000 lines
 *   over ~2 s next to the same command printing nothing, rounds alternating;
 *   medians and their ratio.
 *
 * Env: BENCH_LOG_LINES (10000), BENCH_ROUNDS (3).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../dev/ports';
import { startPostgresProcess } from '../dev/postgres-process';
import { startDevServer } from '../temporal-dev/dev-server';
import { report } from './report';

const LINES = Number(process.env.BENCH_LOG_LINES ?? 10_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CLI = join(__dirname, '..', '..', 'bin', 'e2epool.js');

/** 20 bursts of 100 lines, 0.1 s apart; `sink` decides whether anyone sees them. */
const bursts = (sink: string) =>
  `sh -c 'for b in $(seq 1 20); do seq 1 100 | sed s/^/chatty-line-/ ${sink}; sleep 0.1; done'`;
const COMMANDS = {
  flood: `sh -c 'seq 1 ${LINES} | sed s/^/line-/'`,
  chatty: bursts(''),
  silent: bursts('> /dev/null'),
} as const;
type Runner = keyof typeof COMMANDS;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, ms = 120_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch {
      /* not yet */
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-bench-logs-'));
  chmodSync(dir, 0o755);
  const [temporalPort, pgPort, apiPort] = await Promise.all([freePort(), freePort(), freePort()]);
  process.stdout.write('bench logs: starting Temporal, Postgres, api, worker and agents...\n');
  const [temporal, pg] = await Promise.all([
    startDevServer({ port: temporalPort, uiPort: null, namespace: 'default' }),
    startPostgresProcess({ dataDir: join(dir, 'pg'), port: pgPort, database: 'bench' }),
  ]);
  const runners = Object.keys(COMMANDS) as Runner[];
  const inventory = join(dir, 'inventory.yml');
  writeFileSync(
    inventory,
    `runners:\n${runners.map((r) => `  - runner_id: ${r}\n    backend: bare_metal\n    token: tok-${r}\n    reset_cmd: "${COMMANDS[r]}"\n`).join('')}`,
  );
  const env = {
    PATH: process.env.PATH,
    E2EPOOL_DATABASE_URL: pg.url,
    E2EPOOL_INVENTORY_PATH: inventory,
    E2EPOOL_PORT: String(apiPort),
    E2EPOOL_HOST: '127.0.0.1',
    E2EPOOL_LOG_LEVEL: 'warn',
    E2EPOOL_LOG_MAX_LINES: String(LINES * 2),
    E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
    E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.1',
    E2EPOOL_WORKER_METRICS_PORT: '0',
    E2EPOOL_TASK_QUEUE: 'bench-logs',
    TEMPORAL_ADDRESS: temporal.address,
    TEMPORAL_CONFIG_FILE: join(dir, 'none.toml'),
  };
  const children: ChildProcess[] = [];
  const run = (args: string[]) => {
    const p = spawn(process.execPath, [CLI, ...args], {
      env,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(p);
    return p;
  };
  const url = `http://127.0.0.1:${apiPort}`;
  const rest = (r: Runner, path: string, body?: unknown) =>
    fetch(`${url}${path}`, {
      method: body ? 'POST' : 'GET',
      headers: { authorization: `Bearer tok-${r}`, 'content-type': 'application/json' },
      body: body ? JSON.stringify(body) : undefined,
    });
  try {
    run(['api']);
    await waitFor('the api', async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined));
    run(['worker']);
    for (const r of runners) {
      const config = join(dir, `${r}.yml`);
      writeFileSync(
        config,
        `controller_url: ws://127.0.0.1:${apiPort}/ws/agent\nrunner_id: ${r}\ntoken: tok-${r}\nsocket_path: ${join(dir, `${r}.sock`)}\n`,
        { mode: 0o600 },
      );
      run(['agent', '--config', config]);
    }
    for (const r of runners) {
      await waitFor(`agent ${r}`, async () =>
        (await rest(r, '/runner/readiness')).status === 200 ? true : undefined,
      );
    }
    const create = async (r: Runner, job: string) => {
      const res = await rest(r, '/checkpoint/create', { runner_id: r, job_id: job });
      if (res.status !== 201) throw new Error(`create ${r}: ${res.status}`);
      return ((await res.json()) as { name: string }).name;
    };
    const finalize = async (r: Runner, name: string) => {
      const res = await rest(r, '/checkpoint/finalize', {
        checkpoint_name: name,
        status: 'failure',
      });
      if (res.status !== 202) throw new Error(`finalize ${r}: ${res.status}`);
    };
    const reset = (r: Runner, name: string) =>
      waitFor(`${name} reset`, async () => {
        const res = await rest(r, `/checkpoint/status/${name}`);
        return ((await res.json()) as { state: string }).state === 'reset' ? true : undefined;
      });

    // Throughput: one agent → one SSE client.
    const name = await create('flood', '1');
    const sse = await fetch(`${url}/checkpoint/${name}/logs`, {
      headers: { authorization: 'Bearer tok-flood', accept: 'text/event-stream' },
    });
    await finalize('flood', name);
    let lines = 0;
    let dropped = 0;
    let first = 0;
    let last = 0;
    let buf = '';
    const decoder = new TextDecoder();
    for await (const chunk of sse.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (block.includes('event: stdout')) {
          lines++;
          last = performance.now();
          if (lines === 1) first = last;
        }
        const m = /output dropped|lost in transit/.test(block) ? /(\d+) bytes/.exec(block) : null;
        if (m) dropped += Number(m[1]);
      }
      if (buf.includes('event: end') || /event: end/.test(buf)) break;
    }
    const seconds = (last - first) / 1000;
    process.stdout.write(
      `\nbench logs: ${lines} of ${LINES} lines reached the SSE client in ${seconds.toFixed(2)} s: ` +
        `${(lines / seconds).toFixed(0)} lines/s (agent caps: 20 frames/s × 8 KiB)` +
        `${dropped ? `; ${dropped} bytes dropped by the agent` : ''}\n`,
    );

    // Added latency: chatty vs silent, rounds alternating.
    const ms: Record<'chatty' | 'silent', number[]> = { chatty: [], silent: [] };
    for (let round = 1; round <= ROUNDS; round++) {
      const order: Array<'chatty' | 'silent'> =
        round % 2 ? ['silent', 'chatty'] : ['chatty', 'silent'];
      for (const r of order) {
        const cp = await create(r, `${round}`);
        const t = performance.now();
        await finalize(r, cp);
        await reset(r, cp);
        ms[r].push(performance.now() - t);
      }
    }
    const chatty = median(ms.chatty);
    const silent = median(ms.silent);
    report('logs', {
      finalizeToReset: `${chatty.toFixed(0)} / ${silent.toFixed(0)} (${(chatty / silent).toFixed(2)})`,
    });
    process.stdout.write(
      `bench logs: finalize → reset, median of ${ROUNDS}: chatty (2,000 lines in ~2 s) ${chatty.toFixed(0)} ms, ` +
        `silent ${silent.toFixed(0)} ms: +${(chatty - silent).toFixed(0)} ms, ratio ${(chatty / silent).toFixed(2)}\n`,
    );
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    await sleep(500);
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await Promise.all([temporal.stop(), pg.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
