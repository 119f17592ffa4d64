import { startCrashController, type CrashController } from '../helpers/crash-controller';
import { bareMetalRunnerYaml, testRunners } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * Chaos: the worker is SIGKILLed while each step of a bare-metal reset is in
 * flight (the GitLab pause, reset_cmd on the agent, readiness_cmd); a new
 * worker finishes every reset and unpauses each runner exactly once.
 */
const STEPS = ['pause', 'reset_cmd', 'readiness'] as const;
type Step = (typeof STEPS)[number];
const R = testRunners(STEPS);
const gitlabRunner = (s: Step) => 70 + STEPS.indexOf(s);
const resetCmd = (s: Step) => `/opt/reset-${s}.sh`;
const readinessCmd = (s: Step) => `/opt/ready-${s}.sh`;

describe('chaos: the worker killed at each step of a bare-metal reset', () => {
  let gitlab: GitLabStandIn;
  let c: CrashController;

  beforeAll(async () => {
    gitlab = await startGitLabStandIn();
    for (const s of STEPS) gitlab.addRunner(gitlabRunner(s));
    c = await startCrashController(
      `runners:\n${STEPS.map((s) =>
        bareMetalRunnerYaml(R[s], {
          reset_cmd: resetCmd(s),
          readiness_cmd: readinessCmd(s),
          gitlab_runner_id: gitlabRunner(s),
        }),
      ).join('')}`,
      {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_FINALIZE_ACK_SECONDS: '1',
      },
    );
  });
  afterAll(async () => {
    await c?.stop();
    await gitlab?.close();
  });

  it('a new worker finishes every reset, each runner unpaused once', async () => {
    // This worker's agent never finishes the reset_cmd of one runner and the readiness_cmd of another.
    const first = await c.startWorker({
      CRASH_WORKER_HANG_COMMANDS: `${resetCmd('reset_cmd')},${readinessCmd('readiness')}`,
    });
    const names = {} as Record<Step, string>;
    for (const s of STEPS) names[s] = await c.create(R[s], `78${s.length}`);
    gitlab.failNext(
      { method: 'PUT', pathIncludes: `/runners/${gitlabRunner('pause')}` },
      { kind: 'delay', ms: 120_000 },
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
    gitlab.clearFaults();
    await c.startWorker();

    for (const s of STEPS) {
      await c.awaitState(R[s], names[s], 'reset');
      expect(gitlab.runner(gitlabRunner(s)).paused).toBe(false);
      const ops = await c.operations(names[s]);
      const count = (op: string, result: string) =>
        ops.filter((o) => o.operation === op && o.result === result).length;
      expect({ step: s, pause: count('pause', 'ok'), cmd: count('reset_cmd', 'ok') }).toEqual({
        step: s,
        pause: 1,
        cmd: 1,
      });
      expect({ step: s, ready: count('readiness', 'ok'), unpause: count('unpause', 'ok') }).toEqual(
        { step: s, ready: 1, unpause: 1 },
      );
    }
  }, 180_000);
});
