import { checkpointWorkflowId, retrySignal } from '../../common/checkpoint';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { scrape, sumOf } from '../helpers/metrics';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * Proof of reset on bare metal (docs/operators.md, "Proof of reset"): `verify_cmd` runs
 * through the agent after `reset_cmd` and readiness; exit 0 proves the reset,
 * anything else parks the checkpoint in needs_attention with the runner paused.
 */
const R = testRunners(['verified', 'refuted', 'noVerify']);
const GITLAB = { verified: 61, refuted: 62, noVerify: 63 } as const;
const VERIFY = '/opt/verify.sh';
const INVENTORY = `runners:\n${[
  bareMetalRunnerYaml(R.verified, {
    reset_cmd: '/opt/reset.sh',
    verify_cmd: VERIFY,
    gitlab_runner_id: GITLAB.verified,
  }),
  bareMetalRunnerYaml(R.noVerify, {
    reset_cmd: '/opt/reset.sh',
    gitlab_runner_id: GITLAB.noVerify,
  }),
  // An inventory-file runner is quarantined as a registry one is (runner_state, keyed by id).
  bareMetalRunnerYaml(R.refuted, {
    reset_cmd: '/opt/reset.sh',
    verify_cmd: VERIFY,
    gitlab_runner_id: GITLAB.refuted,
  }),
].join('')}`;
const ADMIN = 'admin-token-proof-of-reset-test-0123456789abcdef';

describe('proof of reset, bare metal (real Temporal, real Postgres)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gitlab: GitLabStandIn;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);
  const admin = () => restClient(() => c.api.url, ADMIN).call;
  /** The verify_cmd's exit code per runner (default 0). */
  const verifyExit = new Map<string, number>();

  beforeAll(async () => {
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    agents.onExec = (runnerId, cmd) => {
      const code = cmd === VERIFY ? (verifyExit.get(runnerId) ?? 0) : 0;
      return { exitCode: code, stdout: `ran ${cmd}\n`, stderr: code ? 'tmp not empty\n' : '' };
    };
    gitlab = await startGitLabStandIn();
    for (const id of Object.values(GITLAB)) gitlab.addRunner(id);
    c = await startTestController({
      inventory: INVENTORY,
      agents,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
      },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await gitlab?.close();
  });

  const until = (r: TestRunner, name: string, state: string) =>
    waitFor(`${name} to reach ${state}`, async () => {
      const res = await as(r).status(name);
      return res.body?.state === state ? res.body : undefined;
    });
  const resets = async (verified: string) =>
    sumOf(await scrape(c.worker.metricsUrl), 'e2epool_resets_total', {
      backend: 'bare_metal',
      verified,
    });

  it('verify_cmd exiting 0 proves the reset: verified true in the checkpoint object, counted once', async () => {
    const r = R.verified;
    const before = await resets('true');
    const created = await as(r).create(r.id, '6101');
    expect(created.body).toMatchObject({ verified: null, verify_detail: null });
    const name = created.body.name as string;
    await as(r).finalize(name, 'failure');
    const done = await until(r, name, 'reset');
    expect(done).toMatchObject({ verified: true, verify_detail: 'verify_cmd exited 0' });
    expect(agents.commandsFor(r.id)).toEqual(['/opt/reset.sh', VERIFY]);
    await runEnded(c, r.id);
    const steps = (await operations(c.ds, name)).map((o) => `${o.operation}:${o.result}`);
    expect(steps).toEqual(
      expect.arrayContaining(['reset_cmd:ok', 'readiness:ok', 'verify_reset:ok', 'unpause:ok']),
    );
    expect(steps.indexOf('verify_reset:ok')).toBeGreaterThan(steps.indexOf('readiness:ok'));
    expect(steps.indexOf('unpause:ok')).toBeGreaterThan(steps.indexOf('verify_reset:ok'));
    expect(await resets('true')).toBe(before + 1);
    expect(gitlab.runner(GITLAB.verified)).toMatchObject({ paused: false });
  });

  it('verify_cmd failing parks the checkpoint in needs_attention, still paused, and quarantines the (inventory-file) runner; `retry` verifies again, the runner stays paused', async () => {
    const r = R.refuted;
    verifyExit.set(r.id, 3);
    const before = await resets('false');
    const name = (await as(r).create(r.id, '6201')).body.name as string;
    await as(r).finalize(name, 'failure');
    const parked = await until(r, name, 'needs_attention');
    expect(parked).toMatchObject({ verified: false, finalize_status: 'failure' });
    expect(parked.verify_detail).toMatch(/^verify_cmd exited with 3; .*stderr: tmp not empty/);
    const [row] = await c.ds.query(`SELECT error_detail FROM checkpoints WHERE name = $1`, [name]);
    expect(row.error_detail).toBe(`ResetNotVerified: ${parked.verify_detail}`);
    expect(gitlab.runner(GITLAB.refuted)).toMatchObject({ paused: true, pausedHistory: [true] });
    expect(await resets('false')).toBe(before + 1);
    // One attempt: a failed proof is an answer, not a failure to retry.
    expect(agents.commandsFor(r.id).filter((x) => x === VERIFY)).toHaveLength(1);
    expect((await admin()('GET', `/api/runners/${r.id}`)).body).toMatchObject({
      source: 'inventory',
      quarantined: true,
      quarantine_source: 'verification',
      quarantine_reason: expect.stringContaining(
        `reset not verified (${name}): verify_cmd exited with 3`,
      ),
    });

    verifyExit.set(r.id, 0);
    await c.client.workflow.getHandle(checkpointWorkflowId(r.id)).signal(retrySignal);
    const done = await until(r, name, 'reset');
    expect(done).toMatchObject({ verified: true, verify_detail: 'verify_cmd exited 0' });
    expect(agents.commandsFor(r.id)).toEqual(['/opt/reset.sh', VERIFY, '/opt/reset.sh', VERIFY]);
    // Quarantined: kept paused, and its next create is refused until an operator unquarantines it.
    await runEnded(c, r.id);
    expect(gitlab.runner(GITLAB.refuted)).toMatchObject({ paused: true });
    expect(await as(r).create(r.id, '6202')).toEqual({
      status: 423,
      body: { detail: `Runner '${r.id}' is quarantined` },
    });
    expect(await sumOf(await scrape(`${c.api.url}/metrics`), 'e2epool_runners_quarantined')).toBe(
      1,
    );
    expect((await admin()('POST', `/api/runners/${r.id}/unquarantine`)).body).toMatchObject({
      source: 'inventory',
      quarantined: false,
    });
    const next = await as(r).create(r.id, '6203');
    expect(next.status).toBe(201);
    await as(r).finalize(next.body.name as string, 'success');
    await runEnded(c, r.id);
  });

  it('without verify_cmd nothing is verified (verify_reset off): verified stays null, no verify step', async () => {
    const r = R.noVerify;
    const name = (await as(r).create(r.id, '6301')).body.name as string;
    await as(r).finalize(name, 'failure');
    const done = await until(r, name, 'reset');
    expect(done).toMatchObject({ verified: null, verify_detail: null });
    expect(agents.commandsFor(r.id)).toEqual(['/opt/reset.sh']);
    await runEnded(c, r.id);
    const ops = await operations(c.ds, name);
    expect(ops.map((o) => o.operation)).not.toContain('verify_reset');
  });
});
