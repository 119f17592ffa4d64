import pino from 'pino';
import type { DataSource } from 'typeorm';
import { AgentBus } from '../../activities/agent-bus';
import { WorkerMetrics } from '../../activities/metrics';
import { proxmoxActivities } from '../../activities/proxmox/steps';
import { runnerActivities } from '../../activities/runner';
import { InventoryStore } from '../../config/inventory';
import { loadSettings } from '../../config/settings';
import { createMigratedDatabase } from '../helpers/db';
import { proxmoxRunnerYaml, testRunners, writeInventory } from '../helpers/env';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

const LABELS = ['ahead', 'behind'] as const;
type Label = (typeof LABELS)[number];
const R = testRunners(LABELS);
const vmid = (l: Label) => 501 + LABELS.indexOf(l);

/**
 * The readiness gate after a reboot must not depend on the workflow's clock
 * agreeing with Postgres' (agent_sessions.connected_at is Postgres `now()`).
 * The steps run directly, as the workflow calls them, against the real
 * AgentBus and sessions rows whose connected_at is skewed on purpose.
 */
describe('readiness after a reboot uses one clock', () => {
  let pve: ProxmoxStandIn;
  let ds: DataSource;
  let close: () => Promise<void>;
  let agents: AgentBus;
  let steps: ReturnType<typeof proxmoxActivities>;
  let runner: ReturnType<typeof runnerActivities>;

  beforeAll(async () => {
    pve = await startProxmoxStandIn({ taskDurationMs: 10 });
    let url: string;
    ({
      ds,
      close,
      db: { url },
    } = await createMigratedDatabase('ready'));
    const log = pino({ level: 'silent' });
    const inventory = InventoryStore.load(
      writeInventory(
        `runners:\n${LABELS.map((l) =>
          proxmoxRunnerYaml(pve, { runnerId: R[l].id, token: R[l].token, vmid: vmid(l) }),
        ).join('')}`,
      ),
      log,
    );
    const settings = loadSettings({
      E2EPOOL_PROXMOX_TASK_POLL_SECONDS: '0.02',
      E2EPOOL_READINESS_TIMEOUT_SECONDS: '1',
      E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.05',
    });
    agents = new AgentBus(ds, url, { staleAfterSeconds: 60, connectWaitSeconds: 1, log });
    const deps = {
      dataSource: ds,
      inventory,
      settings,
      log,
      agents,
      gitlab: null,
      metrics: new WorkerMetrics(),
    };
    steps = proxmoxActivities(deps);
    runner = runnerActivities(deps);
  });
  afterAll(async () => {
    await agents?.close();
    await close?.();
    await pve?.close();
  });

  /** The runner's session row, connected `skewSeconds` from Postgres' now (seen just now). */
  async function session(l: Label, sessionId: string, skewSeconds: number) {
    await ds.query(
      `INSERT INTO agent_sessions (runner_id, session_id, instance_id, connected_at, last_seen_at)
       VALUES ($1, $2, 'api-1', now() + make_interval(secs => $3), now())
       ON CONFLICT (runner_id) DO UPDATE SET session_id = EXCLUDED.session_id,
         connected_at = EXCLUDED.connected_at, last_seen_at = now()`,
      [R[l].id, sessionId, skewSeconds],
    );
  }

  /** A running VM with a checkpoint row, and the reset steps up to readiness as the workflow runs them. */
  async function rebootInput(l: Label) {
    const n = LABELS.indexOf(l) + 1;
    const name = `job-${n}-1700000000-0000beef`;
    pve.addVm('pve1', vmid(l), { status: 'running' });
    const [{ id }] = await ds.query(
      `INSERT INTO checkpoints (name, runner_id, job_id, backend, state, workflow_id)
       VALUES ($1, $2, $3, 'proxmox', 'created', $4) RETURNING id`,
      [name, R[l].id, String(n), `wf-${R[l].id}`],
    );
    const step = { checkpointId: id as number, checkpointName: name, runnerId: R[l].id, round: 0 };
    const { staleSession } = await steps.stopVm(step);
    await steps.startVm(step);
    // What the workflow passes on: the session stopVm saw.
    return { ...step, staleSession };
  }

  it("a pre-reboot session whose connected_at is ahead of the workflow's clock is not a reconnect", async () => {
    // Postgres' clock runs an hour ahead of the worker's: the old session looks "after the boot".
    await session('ahead', '00000000-0000-4000-8000-000000000001', 3600);
    const input = await rebootInput('ahead');
    await expect(runner.waitUntilReady(input)).rejects.toMatchObject({
      type: 'NotReady',
      message: expect.stringContaining('not reconnected since the reboot'),
    });
    // The agent's new connection (a new session) counts.
    await session('ahead', '00000000-0000-4000-8000-000000000002', 3600);
    await expect(runner.waitUntilReady({ ...input, round: 1 })).resolves.toBeUndefined();
  });

  it("a fresh session whose connected_at is behind the workflow's clock is a reconnect", async () => {
    await session('behind', '00000000-0000-4000-8000-000000000003', 0);
    const input = await rebootInput('behind');
    // Postgres' clock runs an hour behind: the new session looks "before the boot".
    await session('behind', '00000000-0000-4000-8000-000000000004', -3600);
    await expect(runner.waitUntilReady(input)).resolves.toBeUndefined();
  });
});
