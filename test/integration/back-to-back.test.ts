import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkpointWorkflowId, stateQuery } from '../../common/checkpoint';
import { spawnAgent, stopProcess } from '../helpers/agent-process';
import { startAgentController, type AgentController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { REPO } from '../helpers/processes';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

const R = testRunners(['backToBack', 'byHand']);
const GITLAB_ID = 77;
/** Long enough that two CLI processes started together both land well inside it, under load. */
const COOLDOWN_SECONDS = 8;

type CliResult = { status: number | null; stdout: string; stderr: string };

/**
 * Jobs back to back through the real agent process, the real gateway,
 * Temporal and Postgres, with the GitLab stand-in as the CI system: the
 * cooldown runs while the runner is still paused, so the job GitLab hands the
 * runner the moment it is unpaused gets its checkpoint at once.
 */
describe('back-to-back jobs and the cooldown', () => {
  let dir: string;
  let c: AgentController;
  let gitlab: GitLabStandIn;
  const agents: ChildProcess[] = [];
  const socketOf = (r: TestRunner) => join(dir, `${r.id}.sock`);

  // Asynchronous on purpose: the API and worker run in this process and must keep serving.
  const cli = (...args: string[]) =>
    new Promise<CliResult>((resolve) => {
      const p = spawn(process.execPath, [join(REPO, 'bin', 'e2epool.js'), ...args]);
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.once('close', (status) => resolve({ status, stdout, stderr }));
    });
  const create = (r: TestRunner, jobId: string, ...more: string[]) =>
    cli('create', '--job-id', jobId, '--socket', socketOf(r), ...more);
  const stateOf = async (r: TestRunner, name: string) =>
    (await cli('status', '--checkpoint', name, '--socket', socketOf(r))).stdout;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-back-to-back-'));
    chmodSync(dir, 0o755);
    gitlab = await startGitLabStandIn();
    gitlab.addRunner(GITLAB_ID);
    c = await startAgentController({
      inventory: `runners:\n${bareMetalRunnerYaml(R.backToBack, {
        reset_cmd: `"sh -c 'echo reset'"`,
        gitlab_runner_id: GITLAB_ID,
      })}${bareMetalRunnerYaml(R.byHand, { reset_cmd: `"sh -c 'echo reset'"` })}`,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_GITLAB_MAX_RPS: '1000',
        E2EPOOL_FINALIZE_COOLDOWN_SECONDS: String(COOLDOWN_SECONDS),
        E2EPOOL_WS_HEARTBEAT_INTERVAL: '1',
        E2EPOOL_WS_HEARTBEAT_TIMEOUT: '5',
      },
      bus: { staleAfterSeconds: 5, connectWaitSeconds: 20 },
    });
    for (const r of Object.values(R)) {
      agents.push(spawnAgent(dir, c.api.url, r).child);
      await waitFor('the agent session', () => c.bus.isConnected(r.id), { timeoutMs: 20_000 });
    }
  });
  afterAll(async () => {
    for (const a of agents) await stopProcess(a, 'SIGKILL');
    await c?.stop();
    await gitlab?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('three jobs in a row, each creating the instant GitLab unpauses its runner: all get checkpoints, none meets the cooldown', async () => {
    const r = R.backToBack;
    const pausedAt: number[] = [];
    const unpausedAt: number[] = [];
    // The next job, started by the stand-in's unpause itself: no poll in between.
    let next: { jobId: string; result?: Promise<CliResult> } | null = null;
    const stop = gitlab.onPausedChange((id, paused) => {
      if (id !== GITLAB_ID) return;
      (paused ? pausedAt : unpausedAt).push(Date.now());
      if (!paused && next && !next.result) next.result = create(r, next.jobId);
    });
    try {
      let job: Promise<CliResult> = create(r, '9001');
      for (const jobId of ['9001', '9002', '9003']) {
        const res = await job;
        expect(res).toEqual({ status: 0, stdout: expect.stringMatching(/^job-/), stderr: '' });
        const name = res.stdout.trim();
        expect(name).toMatch(new RegExp(`^job-${jobId}-\\d+-[0-9a-f]{8}$`));
        expect(await stateOf(r, name)).toContain('state:  created');

        const following = String(Number(jobId) + 1);
        if (jobId !== '9003') next = { jobId: following };
        const fin = await cli(
          'finalize',
          '--checkpoint',
          name,
          '--status',
          'failed',
          '--socket',
          socketOf(r),
        );
        expect([fin.status, fin.stdout]).toEqual([0, 'Finalize queued\n']);
        if (jobId === '9003') {
          await waitFor('the last reset', async () =>
            (await stateOf(r, name)).includes('state:  reset'),
          );
          break;
        }
        await waitFor(`the unpause to start job ${following}`, () => next?.result !== undefined, {
          timeoutMs: 60_000,
        });
        job = next!.result!;
      }
    } finally {
      stop();
    }
    // The cooldown ran while the runner was paused: each unpause came at least that long after its pause.
    expect(pausedAt).toHaveLength(3);
    expect(unpausedAt).toHaveLength(3);
    for (let i = 0; i < 3; i++)
      expect(unpausedAt[i]! - pausedAt[i]!).toBeGreaterThanOrEqual(COOLDOWN_SECONDS * 1000);
    expect(gitlab.runner(GITLAB_ID)).toMatchObject({
      paused: false,
      pausedHistory: [true, false, true, false, true, false],
    });
  }, 180_000);

  it('a create during the cooldown: --wait 0 fails with the 429 (exit 75), the default waits it out and gets its checkpoint', async () => {
    // No GitLab runner: nothing keeps a job off this runner, as a create by hand.
    const r = R.byHand;
    const first = await create(r, '9101');
    expect(first.status).toBe(0);
    const name = first.stdout.trim();
    const fin = await cli(
      'finalize',
      '--checkpoint',
      name,
      '--status',
      'failure',
      '--socket',
      socketOf(r),
    );
    expect(fin.status).toBe(0);
    const handle = c.client.workflow.getHandle(checkpointWorkflowId(r.id));
    await waitFor(
      'the run to enter its cooldown',
      async () => (await handle.query(stateQuery)).phase === 'cooldown',
      { timeoutMs: 30_000, intervalMs: 50 },
    );
    const [noWait, waited] = await Promise.all([
      create(r, '9102', '--wait', '0'),
      create(r, '9103'),
    ]);
    expect(noWait).toEqual({
      status: 75, // a temporary refusal
      stdout: '',
      stderr: 'Error: Cooldown period active, try again later\n',
    });
    expect(waited.status).toBe(0);
    expect(waited.stdout).toMatch(/^job-9103-\d+-[0-9a-f]{8}\n$/);
    // It waited as long as the controller's retry_after said (the seconds left), not the
    // 1 s it waits when told nothing: more than 1 s were left when it asked.
    expect(waited.stderr).toMatch(
      /^Note: Cooldown period active, try again later \(429\); trying again in [2-8]s \(waiting up to 60s in all, --wait\)\n/,
    );
    expect(await stateOf(r, name)).toContain('state:  reset');
  }, 90_000);

  it.each([['-1'], ['abc'], ['']])('--wait %j is a usage error (exit 1)', async (value) => {
    const res = await cli(
      'create',
      '--job-id',
      '1',
      `--wait=${value}`,
      '--socket',
      socketOf(R.byHand),
    );
    expect(res.status).toBe(2); // a usage error
    expect(res.stderr).toContain('expected a number of seconds, 0 or more');
    expect(res.stdout).toBe('');
  });
});
