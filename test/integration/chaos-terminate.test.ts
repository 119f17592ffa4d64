import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { checkpointWorkflowId } from '../../common/checkpoint';
import { reconcileScheduleId } from '../../worker/reconcile-schedule';
import { startCrashController, type CrashController } from '../helpers/crash-controller';
import { bareMetalRunnerYaml, sharedTemporal, temporalCliArgs, testRunners } from '../helpers/env';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * Chaos: an operator runs `temporal workflow terminate` on the checkpoint of
 * a runner that is paused mid-reset. The worker's own reconciler schedule
 * (no test code calls it) adopts the checkpoint within two intervals, and the
 * new run resets and unpauses the runner.
 */
const INTERVAL_SECONDS = 3;
const R = testRunners(['terminated']);
const GITLAB_RUNNER = 88;
const RESET = '/opt/reset-terminated.sh';

describe('chaos: a paused runner whose workflow is terminated', () => {
  let gitlab: GitLabStandIn;
  let c: CrashController;
  let connection: Connection;

  beforeAll(async () => {
    gitlab = await startGitLabStandIn();
    gitlab.addRunner(GITLAB_RUNNER);
    c = await startCrashController(
      `runners:\n${bareMetalRunnerYaml(R.terminated, { reset_cmd: RESET, gitlab_runner_id: GITLAB_RUNNER })}`,
      {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_FINALIZE_ACK_SECONDS: '5',
        E2EPOOL_RECONCILE_INTERVAL_SECONDS: String(INTERVAL_SECONDS),
        E2EPOOL_RECONCILE_MIN_AGE_SECONDS: '1',
      },
    );
    connection = await Connection.connect(sharedTemporal().connectionOptions);
  });
  afterAll(async () => {
    // The schedule would go on starting passes on a queue nobody polls.
    await new Client({ connection, namespace: sharedTemporal().namespace }).schedule
      .getHandle(reconcileScheduleId(c.taskQueue))
      .delete()
      .catch(() => undefined);
    await connection?.close();
    await c?.stop();
    await gitlab?.close();
  });

  it('the schedule adopts it within two intervals; the runner is reset and unpaused once', async () => {
    const r = R.terminated;
    // The worker's first reset never finishes (its run is terminated meanwhile).
    await c.startWorker({
      CRASH_WORKER_HANG_COMMANDS: RESET,
      CRASH_WORKER_HANG_ONCE: '1',
      CRASH_WORKER_RECONCILE: '1',
    });
    const name = await c.create(r, '8801');
    await c.finalizeFailed(r, name);
    await waitFor('reset_cmd in flight', () => c.stepRunning(name, 'reset_cmd'), {
      timeoutMs: 30_000,
    });
    expect(gitlab.runner(GITLAB_RUNNER).paused).toBe(true);

    await promisify(execFile)(shared().temporalBin, [
      'workflow',
      'terminate',
      ...temporalCliArgs(),
      '--workflow-id',
      checkpointWorkflowId(r.id),
      '--reason',
      'chaos: terminated by an operator',
    ]);
    const terminatedAt = Date.now();

    const [adopted] = await waitFor(
      'the reconciler adopting it',
      async () => {
        const rows = (await c.db.ds.query(
          `SELECT o.started_at AS at, o.result FROM operation_logs o JOIN checkpoints k ON k.id = o.checkpoint_id
            WHERE k.name = $1 AND o.operation = 'reconcile:orphan_checkpoint'`,
          [name],
        )) as Array<{ at: Date; result: string }>;
        return rows.length > 0 ? rows : undefined;
      },
      { timeoutMs: 4 * INTERVAL_SECONDS * 1000 + 10_000 },
    );
    expect(adopted!.result).toBe('ok');
    // Two intervals, plus the pass's own work (a loaded 2-core machine adds a little).
    expect(new Date(adopted!.at).getTime() - terminatedAt).toBeLessThan(
      2 * INTERVAL_SECONDS * 1000 + 3_000,
    );

    await c.awaitState(r, name, 'reset', 60_000);
    expect(gitlab.runner(GITLAB_RUNNER)).toMatchObject({
      paused: false,
      pausedHistory: [true, false],
    });
    const ops = (await c.operations(name)).map((o) => `${o.operation}:${o.result}`);
    expect(ops).toEqual(
      expect.arrayContaining([
        'reconcile:orphan_checkpoint:ok',
        'reset_cmd:ok',
        'unpause:ok',
        'reset:ok',
      ]),
    );
  }, 120_000);
});
