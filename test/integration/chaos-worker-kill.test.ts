import { startCrashController, type CrashController } from '../helpers/crash-controller';
import { proxmoxRunnerYaml, testRunners } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Chaos: the worker is SIGKILLed while each step of a Proxmox reset is in
 * flight: every runner is held at a different step (its backend call hangs),
 * one kill hits them all, and a new worker must finish every reset: terminal
 * state, runner unpaused exactly once, no snapshot left, every step logged.
 */
const STEPS = ['pause', 'stop', 'rollback', 'start', 'delete_snapshot'] as const;
type Step = (typeof STEPS)[number];
const R = testRunners(STEPS);
const vmid = (s: Step) => 400 + STEPS.indexOf(s);
const gitlabRunner = (s: Step) => 60 + STEPS.indexOf(s);

describe('chaos: the worker killed at each step of a Proxmox reset', () => {
  let pve: ProxmoxStandIn;
  let gitlab: GitLabStandIn;
  let c: CrashController;

  beforeAll(async () => {
    [pve, gitlab] = await Promise.all([
      startProxmoxStandIn({ taskDurationMs: 30 }),
      startGitLabStandIn(),
    ]);
    const inventory = ['runners:\n'];
    for (const s of STEPS) {
      pve.addVm('pve1', vmid(s), { status: 'running' });
      gitlab.addRunner(gitlabRunner(s));
      inventory.push(
        proxmoxRunnerYaml(pve, {
          runnerId: R[s].id,
          token: R[s].token,
          vmid: vmid(s),
          extra: { gitlab_runner_id: gitlabRunner(s) },
        }),
      );
    }
    c = await startCrashController(inventory.join(''), {
      E2EPOOL_GITLAB_URL: gitlab.url,
      E2EPOOL_GITLAB_TOKEN: gitlab.token,
      E2EPOOL_FINALIZE_ACK_SECONDS: '1',
    });
  });
  afterAll(async () => {
    await c?.stop();
    await Promise.all([pve?.close(), gitlab?.close()]);
  });

  it('a new worker finishes every reset, each runner unpaused once, nothing left behind', async () => {
    const first = await c.startWorker();
    const names = {} as Record<Step, string>;
    for (const s of STEPS) names[s] = await c.create(R[s], `77${vmid(s)}`);
    // Hold each runner at its step: the backend call of that step hangs.
    gitlab.failNext(
      { method: 'PUT', pathIncludes: `/runners/${gitlabRunner('pause')}` },
      { kind: 'delay', ms: 120_000 },
    );
    const task = { stop: 'qmstop', rollback: 'qmrollback', start: 'qmstart' } as const;
    for (const s of ['stop', 'rollback', 'start'] as const) {
      pve.failNext({ taskType: task[s], pathIncludes: `/qemu/${vmid(s)}/` }, { kind: 'hang' }, 1);
    }
    pve.failNext(
      { taskType: 'qmdelsnapshot', pathIncludes: `/qemu/${vmid('delete_snapshot')}/` },
      { kind: 'hang' },
      1,
    );
    for (const s of STEPS) await c.finalizeFailed(R[s], names[s]);
    for (const s of STEPS) {
      // The pause writes no log row while it runs (it must work without Postgres): watch GitLab.
      const inFlight = () =>
        s === 'pause'
          ? gitlab.inFlight({ method: 'PUT', pathEndsWith: `/runners/${gitlabRunner('pause')}` })
          : c.stepRunning(names[s], s);
      await waitFor(`${s} in flight`, inFlight, { timeoutMs: 30_000 });
    }

    await c.kill(first);
    pve.clearFaults(); // the hung tasks finish now
    gitlab.clearFaults();
    await c.startWorker();

    for (const s of STEPS) {
      await c.awaitState(R[s], names[s], 'reset');
      expect(gitlab.runner(gitlabRunner(s)).paused).toBe(false);
      expect(pve.vm('pve1', vmid(s))).toMatchObject({ status: 'running', snapshots: [] });
      const ops = await c.operations(names[s]);
      // A step retried after the kill may find its work done already: `skipped`.
      const done = (op: string) =>
        ops.filter((o) => o.operation === op && ['ok', 'skipped'].includes(o.result));
      for (const op of ['pause', 'stop', 'rollback', 'start', 'readiness', 'delete_snapshot'])
        expect({ step: s, op, ok: done(op).length }).toEqual({ step: s, op, ok: 1 });
      expect({ step: s, unpauses: ops.filter((o) => o.operation === 'unpause').length }).toEqual({
        step: s,
        unpauses: 1,
      });
      expect(done('reset')).toHaveLength(1);
    }
  }, 180_000);
});
