import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestRunner } from './env';
import { REPO } from './processes';

/**
 * A real `e2epool agent` process for a runner, with its config and socket
 * under `dir`. With `agentToken`, the config holds both tokens and the agent
 * opens the WebSocket with the agent token.
 */
export function spawnAgent(
  dir: string,
  apiUrl: string,
  r: TestRunner,
  o: { agentToken?: string } = {},
): { child: ChildProcess; output: () => string; socketPath: string } {
  const config = join(dir, `${r.id}.yml`);
  const socketPath = join(dir, `${r.id}.sock`);
  writeFileSync(
    config,
    `controller_url: ${apiUrl.replace('http', 'ws')}/ws/agent\nrunner_id: ${r.id}\ntoken: ${r.token}\n` +
      (o.agentToken ? `agent_token: ${o.agentToken}\n` : '') +
      `socket_path: ${socketPath}\nheartbeat_interval: 1\nreconnect_max_delay: 2\n`,
    { mode: 0o600 },
  );
  const child = spawn(
    process.execPath,
    [join(REPO, 'bin', 'e2epool.js'), 'agent', '--config', config],
    {
      env: { PATH: process.env.PATH },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out, socketPath };
}

/** Signals a process and waits until it is gone. */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((res) => child.once('exit', res));
  child.kill(signal);
  await exited;
}
