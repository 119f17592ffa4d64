import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../dev/ports';
import { startDevServer, type DevServer } from '../../temporal-dev/dev-server';
import { FakeAgents } from '../helpers/fake-agents';
import { restClient, startTestController, type TestController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunner } from '../helpers/env';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * Chaos: the Temporal server is killed with SIGKILL (its SQLite file kept)
 * while a reset runs, and started again. The worker and the API reconnect by
 * themselves; the reset finishes and the runner is unpaused exactly once.
 */
describe('chaos: the Temporal server killed mid-reset', () => {
  const r = testRunner('temporal-kill');
  const agents = new FakeAgents();
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-temporal-kill-'));
  const dbFile = join(dir, 'temporal.db');
  let port: number;
  let temporal: DevServer;
  let gitlab: GitLabStandIn;
  let c: TestController;
  let release!: () => void;
  const held = new Promise<void>((res) => (release = res));

  const serve = () =>
    startDevServer({
      bin: shared().temporalBin,
      port,
      uiPort: null,
      namespace: 'default',
      dbFile,
    });

  beforeAll(async () => {
    port = await freePort();
    temporal = await serve();
    gitlab = await startGitLabStandIn();
    gitlab.addRunner(90);
    agents.connect(r.id, new Date(0));
    // The reset command runs until the test lets it finish.
    agents.onExec = async (_runner, cmd) => {
      if (cmd === '/opt/reset.sh') await held;
      return { exitCode: 0, stdout: `ran ${cmd}`, stderr: '' };
    };
    c = await startTestController({
      temporalAddress: temporal.address,
      agents,
      inventory: `runners:\n${bareMetalRunnerYaml(r, { reset_cmd: '/opt/reset.sh', gitlab_runner_id: 90 })}`,
      env: { E2EPOOL_GITLAB_URL: gitlab.url, E2EPOOL_GITLAB_TOKEN: gitlab.token },
    });
  }, 60_000);
  afterAll(async () => {
    release();
    await c?.stop();
    await Promise.all([temporal?.stop(), gitlab?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the reset finishes after the server comes back, the runner unpaused once', async () => {
    const api = restClient(() => c.api.url, r.token);
    const name = (await api.create(r.id, '9900')).body.name as string;
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    await waitFor('the reset command running', () => agents.commandsFor(r.id).length === 1);

    const gone = new Promise((res) => temporal.process.once('exit', res));
    temporal.process.kill('SIGKILL');
    await gone;
    release(); // the command finishes while the server is down
    temporal = await serve();

    const done = await waitFor(
      'the reset after the restart',
      async () => {
        const s = await api.status(name);
        return s.body.state === 'reset' ? s.body : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 250 },
    );
    expect(done.finalize_status).toBe('failure');
    expect(gitlab.runner(90)).toMatchObject({ paused: false, pausedHistory: [true, false] });
    const [{ n }] = await c.ds.query(
      `SELECT count(*)::int AS n FROM operation_logs o JOIN checkpoints k ON k.id = o.checkpoint_id
        WHERE k.name = $1 AND o.operation = 'unpause'`,
      [name],
    );
    expect(n).toBe(1);
  }, 120_000);
});
