import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../dev/ports';
import { startPostgresProcess, type PostgresProcess } from '../../dev/postgres-process';
import { FakeAgents } from '../helpers/fake-agents';
import { restClient, startTestController, type TestController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunner, uniqueId } from '../helpers/env';
import { checkpointWorkflowId } from '../../common/checkpoint';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * Chaos: the controller's Postgres is stopped while a reset runs and started
 * again moments later. Bookkeeping waits and retries; the reset finishes, the
 * runner is unpaused once, and the operation log is complete. Stopped at the
 * job's end, a finalize is still answered only once the runner is paused.
 */
describe('chaos: Postgres restarted mid-reset', () => {
  const r = testRunner('pg-restart');
  const atEnd = testRunner('pg-at-end');
  const lost = testRunner('pg-lost');
  const agents = new FakeAgents();
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-pg-restart-'));
  let port: number;
  let pg: PostgresProcess;
  let gitlab: GitLabStandIn;
  let c: TestController;
  let release!: () => void;
  const held = new Promise<void>((res) => (release = res));

  const serve = () =>
    startPostgresProcess({ dataDir: join(dir, 'pg'), port, database: 'e2epool_chaos' });

  beforeAll(async () => {
    chmodSync(dir, 0o755); // embedded Postgres runs as the postgres user when we are root
    port = await freePort();
    pg = await serve();
    gitlab = await startGitLabStandIn();
    gitlab.addRunner(91);
    gitlab.addRunner(92);
    gitlab.addRunner(93);
    for (const x of [r, atEnd, lost]) agents.connect(x.id, new Date(0));
    agents.onExec = async (_runner, cmd) => {
      if (cmd === '/opt/reset.sh') await held;
      return { exitCode: 0, stdout: `ran ${cmd}`, stderr: '' };
    };
    c = await startTestController({
      databaseUrl: pg.url,
      agents,
      inventory: `runners:\n${bareMetalRunnerYaml(r, { reset_cmd: '/opt/reset.sh', gitlab_runner_id: 91 })}${bareMetalRunnerYaml(atEnd, { gitlab_runner_id: 92 })}${bareMetalRunnerYaml(lost, { gitlab_runner_id: 93 })}`,
      env: { E2EPOOL_GITLAB_URL: gitlab.url, E2EPOOL_GITLAB_TOKEN: gitlab.token },
    });
  }, 90_000);
  afterAll(async () => {
    release();
    await c?.stop();
    await Promise.all([pg?.stop(), gitlab?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the reset finishes once Postgres is back, the runner unpaused once, every step logged', async () => {
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '9910')).body.name as string;
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset command running', () => agents.commandsFor(r.id).length === 1);

    const oldPid = pg.pid;
    await pg.stop();
    const health = await fetch(`${c.api.url}/healthz`);
    expect({ status: health.status, body: await health.json() }).toMatchObject({
      status: 503,
      body: { detail: 'database unavailable' },
    });
    release(); // the command finishes while Postgres is down: its log write must wait
    pg = await serve();
    expect(pg.pid).not.toBe(oldPid);

    await waitFor(
      'the reset after the restart',
      async () => (await api.status(name)).body?.state === 'reset',
      { timeoutMs: 90_000, intervalMs: 250 },
    );
    expect(gitlab.runner(91)).toMatchObject({ paused: false, pausedHistory: [true, false] });
    const ops = (await c.ds.query(
      `SELECT o.operation, o.result FROM operation_logs o JOIN checkpoints k ON k.id = o.checkpoint_id
        WHERE k.name = $1 ORDER BY o.id`,
      [name],
    )) as Array<{ operation: string; result: string }>;
    expect(ops.filter((o) => o.operation === 'unpause')).toEqual([
      { operation: 'unpause', result: 'ok' },
    ]);
    for (const op of ['pause', 'reset_cmd', 'readiness', 'reset'])
      expect({ op, ok: ops.some((o) => o.operation === op && o.result === 'ok') }).toEqual({
        op,
        ok: true,
      });
  }, 150_000);

  const opsOf = async (name: string) =>
    (await c.ds.query(
      `SELECT o.operation, o.result FROM operation_logs o JOIN checkpoints k ON k.id = o.checkpoint_id
        WHERE k.name = $1 ORDER BY o.id`,
      [name],
    )) as Array<{ operation: string; result: string }>;

  it('Postgres down at the job end: finalize answers 202 with the runner already paused, and the log catches up', async () => {
    const api = restClient(() => c.api.url, atEnd.token);
    const name = (await api.create(atEnd.id, '9911')).body.name as string;
    await pg.stop();
    try {
      const res = await api.finalize(name, 'failure');
      expect({ status: res.status, body: res.body }).toEqual({
        status: 202,
        body: { detail: 'Finalize queued', checkpoint_name: name },
      });
      expect(gitlab.runner(92).paused).toBe(true);
    } finally {
      pg = await serve();
    }
    await waitFor(
      'the reset after the restart',
      async () => (await api.status(name)).body?.state === 'reset',
      { timeoutMs: 90_000, intervalMs: 250 },
    );
    expect(gitlab.runner(92)).toMatchObject({ paused: false, pausedHistory: [true, false] });
    expect((await opsOf(name)).map((o) => `${o.operation}:${o.result}`)).toEqual(
      expect.arrayContaining(['finalize_queued:ok', 'pause:ok', 'unpause:ok', 'reset:ok']),
    );
  }, 150_000);

  it('a run terminated before Postgres heard of its finalize: the reconciler adopts it from its memo, resets and unpauses', async () => {
    const api = restClient(() => c.api.url, lost.token);
    const name = (await api.create(lost.id, '9912')).body.name as string;
    await pg.stop();
    try {
      expect((await api.finalize(name, 'failure')).status).toBe(202);
      expect(gitlab.runner(93).paused).toBe(true);
      await c.client.workflow.getHandle(checkpointWorkflowId(lost.id)).terminate('chaos');
    } finally {
      pg = await serve();
    }
    expect((await api.status(name)).body.state).toBe('created');
    // What Postgres never heard of is in the ended run's memo (CheckpointMemo), set before each act.
    const ended = await c.client.workflow.getHandle(checkpointWorkflowId(lost.id)).describe();
    expect(ended.memo).toEqual({
      pause: { checkpoint: name, target: { kind: 'gitlab', gitlabRunnerId: 93 }, labels: [] },
      finalize: { checkpoint: name, status: 'failure', source: expect.any(String) },
    });
    const pass = await c.client.workflow.execute('reconcileWorkflow', {
      taskQueue: c.taskQueue,
      workflowId: uniqueId('reconcile-pass'),
      args: [{ repair: true, minAgeSeconds: 0 }],
    });
    expect(pass.findings.filter((f: { checkpoint: string }) => f.checkpoint === name)).toEqual([
      expect.objectContaining({ kind: 'orphan_checkpoint', action: 'adopted' }),
    ]);
    await waitFor(
      'the adopted reset',
      async () => (await api.status(name)).body?.state === 'reset',
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    // The finalize's status came from the ended run's memo; the pause is e2epool's, undone once.
    expect((await api.status(name)).body).toMatchObject({ finalize_status: 'failure' });
    expect(gitlab.runner(93)).toMatchObject({ paused: false, pausedHistory: [true, false] });
  }, 150_000);
});
