/**
 * `npm run bench` (part 2): 500 agents connected to one `e2epool api` process:
 * its RSS, and ping round trips (p50/p99) through the gateway; plus the wall
 * time of `e2epool status` through a running agent next to `node -e 0`,
 * measured in the same run.
 *
 * Env: BENCH_AGENTS (500), BENCH_PINGS per agent (10).
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { freePort } from '../dev/ports';
import { startPostgresProcess } from '../dev/postgres-process';
import { startDevServer } from '../temporal-dev/dev-server';
import { report } from './report';
import { quantile, rssMiB, waitHealthy } from './measure';

const AGENTS = Number(process.env.BENCH_AGENTS ?? 500);
const PINGS = Number(process.env.BENCH_PINGS ?? 10);
const CLI = join(__dirname, '..', '..', 'bin', 'e2epool.js');

/**
 * Median wall time of each command over `n` rounds, in ms. The commands take
 * turns within a round, so a change in the machine's load meanwhile (another
 * process waking up) weighs on each of them alike instead of on one block.
 */
function interleavedWallMs(commands: Array<{ args: string[] }>, n: number): number[] {
  const times = commands.map(() => [] as number[]);
  for (let i = 0; i < n; i++) {
    commands.forEach((c, k) => {
      const t = performance.now();
      spawnSync(process.execPath, c.args, { stdio: 'ignore' });
      times[k]!.push(performance.now() - t);
    });
  }
  return times.map((ts) =>
    quantile(
      [...ts].sort((a, b) => a - b),
      0.5,
    ),
  );
}

/**
 * The least any Node CLI does for `status` through the agent: connect to the
 * socket, send one frame, read the reply, exit (no arguments, config or
 * output). `e2epool status` against it is what the CLI itself costs.
 */
const BARE_CLIENT = `
const net = require('node:net');
const { encodeFrame, FrameDecoder } = require(process.argv[1]);
const socket = net.createConnection(process.argv[2]);
const decoder = new FrameDecoder();
socket.once('connect', () =>
  socket.write(encodeFrame({ id: 'b', type: 'status', payload: { checkpoint_name: process.argv[3] } })),
);
socket.on('data', (chunk) => {
  for (const _ of decoder.push(chunk)) socket.destroy();
});
`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-bench-agents-'));
  chmodSync(dir, 0o755);
  const [temporalPort, pgPort, apiPort] = await Promise.all([freePort(), freePort(), freePort()]);
  process.stdout.write('bench agents: starting Temporal, Postgres and `e2epool api`...\n');
  const [temporal, pg] = await Promise.all([
    startDevServer({ port: temporalPort, uiPort: null, namespace: 'default' }),
    startPostgresProcess({ dataDir: join(dir, 'pg'), port: pgPort, database: 'bench' }),
  ]);
  const runners = Array.from({ length: AGENTS }, (_, i) => `a-${i}`);
  const inventory = join(dir, 'inventory.yml');
  writeFileSync(
    inventory,
    `runners:\n${runners.map((r) => `  - runner_id: ${r}\n    backend: bare_metal\n    token: tok-${r}\n    reset_cmd: "true"\n`).join('')}`,
  );
  const env = {
    PATH: process.env.PATH,
    E2EPOOL_DATABASE_URL: pg.url,
    E2EPOOL_INVENTORY_PATH: inventory,
    E2EPOOL_PORT: String(apiPort),
    E2EPOOL_HOST: '127.0.0.1',
    E2EPOOL_LOG_LEVEL: 'warn',
    E2EPOOL_DB_POOL_SIZE: '20',
    TEMPORAL_ADDRESS: temporal.address,
    TEMPORAL_CONFIG_FILE: join(dir, 'none.toml'),
  };
  const api = spawn(process.execPath, [CLI, 'api'], {
    env,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${apiPort}`;
  const sockets: WebSocket[] = [];
  try {
    await waitHealthy(url);
    const idle = rssMiB(api.pid!);
    // Connect in batches, as a fleet coming online would.
    for (let i = 0; i < runners.length; i += 50) {
      await Promise.all(
        runners.slice(i, i + 50).map(
          (r) =>
            new Promise<void>((resolve, reject) => {
              const ws = new WebSocket(`${url.replace('http', 'ws')}/ws/agent?runner_id=${r}`, {
                headers: { authorization: `Bearer tok-${r}` },
              });
              ws.once('open', () => resolve());
              ws.once('error', reject);
              sockets.push(ws);
            }),
        ),
      );
    }
    const pingRound = async (round: number, spreadMs: number, into: number[]) =>
      Promise.all(
        sockets.map(
          (ws, i) =>
            new Promise<void>((resolve) => {
              setTimeout(() => {
                const id = `p${round}-${i}`;
                const t = performance.now();
                const on = (data: Buffer) => {
                  if ((JSON.parse(data.toString()) as { id: string }).id !== id) return;
                  into.push(performance.now() - t);
                  ws.off('message', on);
                  resolve();
                };
                ws.on('message', on);
                ws.send(JSON.stringify({ id, type: 'ping', payload: {} }));
              }, Math.random() * spreadMs);
            }),
        ),
      );
    // Heartbeat-like traffic: every agent pings once per round at a random moment in one
    // second (500 pings/s: 15 times what 500 agents send with 30 s heartbeats).
    const rtts: number[] = [];
    for (let round = 0; round < PINGS; round++) await pingRound(round, 1000, rtts);
    // Stress: every agent at the same instant (the bench's own send loop adds to these).
    const burst: number[] = [];
    for (let round = 0; round < 3; round++) await pingRound(1000 + round, 0, burst);
    burst.sort((a, b) => a - b);
    const loaded = rssMiB(api.pid!);
    rtts.sort((a, b) => a - b);
    const p50 = quantile(rtts, 0.5);
    const p99 = quantile(rtts, 0.99);
    process.stdout.write(
      `\nbench agents: ${AGENTS} agents on one API process; ${rtts.length} pings, each agent once per second at a random moment\n` +
        `  API RSS idle ${idle.toFixed(0)} MiB, with ${AGENTS} agents ${loaded.toFixed(0)} MiB (target ≤ 300 MB: ${loaded <= 300 ? 'met' : 'MISSED'})\n` +
        `  ping round trip p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms (target p99 ≤ 50 ms: ${p99 <= 50 ? 'met' : 'MISSED'})\n` +
        `  burst (all ${AGENTS} agents at the same instant, 3 rounds): p50 ${quantile(burst, 0.5).toFixed(1)} ms, p99 ${quantile(burst, 0.99).toFixed(1)} ms\n`,
    );

    // CLI start-up: `e2epool status` through a running agent vs `node -e 0`.
    const socket = join(dir, 'agent.sock');
    const agentEnv = {
      PATH: process.env.PATH,
      E2EPOOL_CONTROLLER_URL: `${url.replace('http', 'ws')}/ws/agent`,
      E2EPOOL_RUNNER_ID: 'a-0',
      E2EPOOL_TOKEN: 'tok-a-0',
      E2EPOOL_SOCKET_PATH: socket,
      E2EPOOL_LOG_LEVEL: 'warn',
    };
    sockets[0]!.close(); // the agent daemon takes over runner a-0
    const agent = spawn(process.execPath, [CLI, 'agent'], { env: agentEnv, stdio: 'ignore' });
    try {
      for (
        let i = 0;
        i < 100 &&
        spawnSync(process.execPath, [
          CLI,
          'status',
          '--checkpoint',
          'job-0-1-00000000',
          '--socket',
          socket,
        ]).status === 2;
        i++
      ) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const checkpoint = 'job-0-1-00000000';
      const [node, status, bare] = interleavedWallMs(
        [
          { args: ['-e', '0'] },
          { args: [CLI, 'status', '--checkpoint', checkpoint, '--socket', socket] },
          {
            args: [
              '-e',
              BARE_CLIENT,
              join(__dirname, '..', 'agent', 'framing.js'),
              socket,
              checkpoint,
            ],
          },
        ],
        40,
      ) as [number, number, number];
      report('agents', {
        status: `${status.toFixed(1)} / ${node.toFixed(1)} (**${(status / node).toFixed(2)}**)`,
        pingP99: p99.toFixed(1),
        rss: `${loaded.toFixed(0)} MiB`,
      });
      process.stdout.write(
        `  \`e2epool status\` through the agent ${status.toFixed(1)} ms vs \`node -e 0\` ${node.toFixed(1)} ms: ` +
          `ratio ${(status / node).toFixed(2)} (target ≤ 1.2: ${status / node <= 1.2 ? 'met' : 'MISSED'}); ` +
          `a bare socket client (connect, one frame, exit) ${bare.toFixed(1)} ms, ratio ${(bare / node).toFixed(2)}\n`,
      );
    } finally {
      agent.kill('SIGTERM');
    }
  } finally {
    for (const ws of sockets) ws.terminate();
    api.kill('SIGTERM');
    await new Promise((r) => api.once('exit', r));
    await Promise.all([temporal.stop(), pg.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench agents failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
