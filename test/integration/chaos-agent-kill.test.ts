import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { spawnAgent, stopProcess } from '../helpers/agent-process';
import { startAgentController, type AgentController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';

/**
 * Chaos: a runner's real agent process is SIGKILLed. Within the heartbeat
 * timeout the runner is unreachable (readiness 503, gauge 0); when the agent
 * is started again it is back (readiness 200, gauge 1).
 */
const TIMEOUT_S = 3;

describe('chaos: the agent SIGKILLed', () => {
  const r = testRunner('agent-kill');
  let dir: string;
  let c: AgentController;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-agent-kill-'));
    chmodSync(dir, 0o755);
    c = await startAgentController({
      inventory: `runners:\n${bareMetalRunnerYaml(r)}`,
      env: {
        E2EPOOL_WS_HEARTBEAT_INTERVAL: '1',
        E2EPOOL_WS_HEARTBEAT_TIMEOUT: String(TIMEOUT_S),
      },
      bus: { staleAfterSeconds: TIMEOUT_S, connectWaitSeconds: 5 },
    });
  });
  afterAll(async () => {
    for (const a of children) await stopProcess(a, 'SIGKILL');
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const readiness = async () => {
    const res = await fetch(`${c.api.url}/runner/readiness`, {
      headers: { authorization: `Bearer ${r.token}` },
    });
    return { status: res.status, body: (await res.json()) as { detail: string | null } };
  };
  const gauge = async () => {
    const text = await (await fetch(`${c.api.url}/metrics`)).text();
    const m = new RegExp(
      `e2epool_runner_agent_connected\\{[^}]*runner_id="${r.id}"[^}]*\\} (\\d+)`,
    ).exec(text);
    return m ? Number(m[1]) : undefined;
  };

  const unreachableCount = async () => {
    const text = await (await fetch(`${c.api.url}/metrics`)).text();
    return Number(/^e2epool_runners_unreachable(?:\{[^}]*\})? (\d+)$/m.exec(text)?.[1]);
  };

  it('is unreachable within the heartbeat timeout, and back when the agent returns', async () => {
    const first = spawnAgent(dir, c.api.url, r);
    children.push(first.child);
    await waitFor('readiness', async () => (await readiness()).status === 200, {
      timeoutMs: 20_000,
    });
    expect(await gauge()).toBe(1);

    await stopProcess(first.child, 'SIGKILL');
    const killedAt = Date.now();
    // Not connected at once; unreachable once silent past the heartbeat timeout.
    await waitFor('the gauge to drop to 0', async () => (await gauge()) === 0, {
      timeoutMs: 15_000,
      intervalMs: 100,
    });
    await waitFor(
      'readiness to say unreachable',
      async () => (await readiness()).body.detail === 'agent unreachable',
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    // Within the heartbeat timeout of its last sign of life (plus a busy 2-core machine's slack).
    expect(Date.now() - killedAt).toBeLessThan(TIMEOUT_S * 1000 + 2000);
    expect(await readiness()).toEqual({
      status: 503,
      body: { runner_id: r.id, ready: false, detail: 'agent unreachable' },
    });
    expect(await unreachableCount()).toBeGreaterThanOrEqual(1);

    children.push(spawnAgent(dir, c.api.url, r).child);
    await waitFor('readiness again', async () => (await readiness()).status === 200, {
      timeoutMs: 20_000,
    });
    expect(await gauge()).toBe(1);
  }, 60_000);
});
