import { checkpointWorkflowId, stateQuery } from '../../common/checkpoint';
import type { DevServer } from '../../temporal-dev/dev-server';
import { FakeAgents } from '../helpers/fake-agents';
import { restClient, startTestController, type TestController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunner } from '../helpers/env';
import { startContinueAsNewDevServer } from '../helpers/temporal';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

/**
 * A checkpoint that waits long (a long TTL, polled all along) continues as a
 * new run when Temporal suggests it, and stays whole: same checkpoint, same
 * search attributes, finalize still reaches it.
 */
describe('continue-as-new while waiting for the job', () => {
  let temporal: DevServer;
  let gitlab: GitLabStandIn;
  let c: TestController;
  const agents = new FakeAgents();
  const r = testRunner('can');

  beforeAll(async () => {
    temporal = await startContinueAsNewDevServer(60);
    gitlab = await startGitLabStandIn();
    agents.connect(r.id, new Date(0));
    c = await startTestController({
      temporalAddress: temporal.address,
      agents,
      inventory: `runners:\n${bareMetalRunnerYaml(r, { reset_cmd: '/opt/reset.sh' })}`,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.05',
        // A GitLab budget whose poll share lets every runner here poll that often
        // (a smaller fleet budget would stretch the interval: config/checkpoint-input.ts).
        E2EPOOL_GITLAB_MAX_RPS: '1000',
        E2EPOOL_POLLER_MIN_AGE_SECONDS: '0',
      },
    });
  }, 60_000);
  afterAll(async () => {
    await c?.stop();
    await Promise.all([temporal?.stop(), gitlab?.close()]);
  });

  it('carries the waiting checkpoint into new runs, and finalize still reaches it', async () => {
    gitlab.setJob(5, 55, 'running');
    const rest = restClient(() => c.api.url, r.token);
    const name = (await rest.create(r.id, '55', { project_id: 5 })).body.name as string;
    const runs = await waitFor(
      'a continued-as-new run',
      async () => {
        const found: string[] = [];
        for await (const wf of c.client.workflow.list({
          query: `WorkflowId = '${checkpointWorkflowId(r.id)}'`,
        }))
          found.push(wf.status.name);
        return found.filter((s) => s === 'CONTINUED_AS_NEW').length >= 2 ? found : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    expect(runs.filter((s) => s === 'RUNNING')).toHaveLength(1);

    const handle = c.client.workflow.getHandle(checkpointWorkflowId(r.id));
    expect(await handle.query(stateQuery)).toMatchObject({
      phase: 'waiting_for_job',
      name,
      jobId: '55',
      state: 'created',
    });
    const attrs = (await handle.describe()).typedSearchAttributes;
    expect(
      attrs
        .getAll()
        .filter((p) => p.key.name.startsWith('E2e'))
        .map((p) => [p.key.name, p.value])
        .sort(),
    ).toEqual(
      [
        ['E2eBackend', 'bare_metal'],
        ['E2eCheckpointName', name],
        ['E2eJobId', '55'],
        ['E2eRunnerId', r.id],
        ['E2eState', 'created'],
      ].sort(),
    );

    expect(await rest.create(r.id, '56')).toMatchObject({ status: 409 });
    expect(await rest.finalize(name, 'failure')).toEqual({
      status: 202,
      body: { detail: 'Finalize queued', checkpoint_name: name },
    });
    await waitFor('reset', async () => (await rest.status(name)).body.state === 'reset');
    expect(agents.commandsFor(r.id)).toEqual(['/opt/reset.sh']);
    const [{ n }] = await c.ds.query(
      `SELECT count(*)::int AS n FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
        WHERE c.name = $1 AND o.operation = 'poller'`,
      [name],
    );
    expect(n).toBe(0); // polled: no "not polled" note, in any run
  }, 60_000);
});
