import { WorkflowFailedError } from '@temporalio/client';
import {
  checkpointWorkflowId,
  releaseSignal,
  retrySignal,
  stateQuery,
} from '../../common/checkpoint';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { waitFor } from '../helpers/wait';

const INVENTORY = `runners:
  - runner_id: op-1
    backend: bare_metal
    token: tok-op-1
    reset_cmd: /opt/reset.sh
  - runner_id: op-2
    backend: bare_metal
    token: tok-op-2
    reset_cmd: /opt/reset.sh
  - runner_id: op-3
    backend: bare_metal
    token: tok-op-3
    reset_cmd: /opt/reset.sh
`;

describe('operators: needs_attention, retry, release, query, search attributes', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let failing = new Set<string>();
  const as = (token: string) => restClient(() => c.api.url, token);

  beforeAll(async () => {
    for (const r of ['op-1', 'op-2', 'op-3']) agents.connect(r, new Date(0));
    agents.onExec = (runnerId) =>
      failing.has(runnerId)
        ? { exitCode: 7, stdout: '', stderr: 'disk on fire' }
        : { exitCode: 0, stdout: 'ok', stderr: '' };
    c = await startTestController({
      inventory: INVENTORY,
      agents,
      env: { E2EPOOL_RESET_MAX_ATTEMPTS: '2' },
    });
  });
  afterAll(async () => c?.stop());

  async function stuck(runnerId: string, token: string) {
    failing.add(runnerId);
    const name = (await as(token).create(runnerId, `${runnerId}-job`)).body.name as string;
    expect((await as(token).finalize(name, 'failure')).status).toBe(202);
    await waitFor(
      'needs_attention',
      async () => (await as(token).status(name)).body.state === 'needs_attention',
    );
    return { name, handle: c.client.workflow.getHandle(checkpointWorkflowId(runnerId)) };
  }

  it('parks a reset that exhausts its retries in needs_attention, visible by query and search attribute, until `retry`', async () => {
    const { name, handle } = await stuck('op-1', 'tok-op-1');
    // Two attempts (the budget), then it waits for an operator.
    expect(agents.commandsFor('op-1')).toEqual(['/opt/reset.sh', '/opt/reset.sh']);
    const view = await handle.query(stateQuery);
    expect(view).toMatchObject({
      phase: 'needs_attention',
      state: 'needs_attention',
      name,
      lastError: 'CommandFailed: reset_cmd exited with 7; stdout: ; stderr: disk on fire',
    });
    const found = await waitFor('the search attribute', async () => {
      const hits = [];
      for await (const wf of c.client.workflow.list({
        query: `E2eState = 'needs_attention' AND E2eRunnerId = 'op-1'`,
      }))
        hits.push(wf);
      return hits.length ? hits : undefined;
    });
    expect(found[0]!.workflowId).toBe(checkpointWorkflowId('op-1'));
    const row = (
      await c.ds.query(`SELECT error_detail, reset_attempts FROM checkpoints WHERE name = $1`, [
        name,
      ])
    )[0];
    expect(row.error_detail).toContain('disk on fire');
    expect(row.reset_attempts).toBe(1);
    // Still active: a new create is refused.
    expect((await as('tok-op-1').create('op-1', 'next')).status).toBe(409);

    const metrics = await (await fetch(`${c.api.url}/metrics`)).text();
    expect(metrics).toMatch(
      /^e2epool_checkpoints_active\{state="needs_attention",service="e2epool-api"\} 1$/m,
    );
    expect(metrics).toMatch(
      /^e2epool_checkpoints_needs_attention_oldest_seconds\{service="e2epool-api"\} \d/m,
    );

    failing.delete('op-1');
    await handle.signal(retrySignal);
    await waitFor(
      'reset after retry',
      async () => (await as('tok-op-1').status(name)).body.state === 'reset',
    );
    const ops = (await operations(c.ds, name)).map((o) => `${o.operation}:${o.result}`);
    expect(ops).toEqual([
      'create:ok',
      'poller:skipped',
      'finalize_queued:ok',
      'reset_cmd:error',
      'needs_attention:error',
      'finalize_queued:ok',
      'reset_cmd:ok',
      'readiness:ok',
      'reset:ok',
    ]);
  });

  it('ends a needs_attention checkpoint as reset_failed on `release`', async () => {
    const { name, handle } = await stuck('op-2', 'tok-op-2');
    await handle.signal(releaseSignal);
    await waitFor(
      'reset_failed',
      async () => (await as('tok-op-2').status(name)).body.state === 'reset_failed',
    );
    expect(await handle.result()).toEqual({ name, state: 'reset_failed' });
    expect((await as('tok-op-2').create('op-2', 'after-release')).status).toBe(201);
  });

  it('finds checkpoints by runner, job id, name and state, and shows a summary', async () => {
    const name = (await as('tok-op-3').create('op-3', 'find-me')).body.name as string;
    const handle = c.client.workflow.getHandle(checkpointWorkflowId('op-3'));
    const hits = await waitFor('visibility', async () => {
      const out = [];
      for await (const wf of c.client.workflow.list({
        query: `E2eRunnerId = 'op-3' AND E2eJobId = 'find-me' AND E2eCheckpointName = '${name}' AND E2eState = 'created' AND E2eBackend = 'bare_metal'`,
      }))
        out.push(wf);
      return out.length ? out : undefined;
    });
    expect(hits).toHaveLength(1);
    const desc = await handle.describe();
    expect(await desc.staticSummary()).toBe('runner op-3 · job find-me · bare_metal');
    await as('tok-op-3').finalize(name, 'success');
    await waitFor(
      'deleted',
      async () => (await as('tok-op-3').status(name)).body.state === 'deleted',
    );
  });

  it('a canceled workflow ends its checkpoint as reset_failed and shows as canceled', async () => {
    failing = new Set();
    const name = (await as('tok-op-3').create('op-3', 'cancel-me')).body.name as string;
    const handle = c.client.workflow.getHandle(checkpointWorkflowId('op-3'));
    await handle.cancel();
    await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
    const row = await waitFor('reset_failed', async () => {
      const r = await as('tok-op-3').status(name);
      return r.body.state === 'reset_failed' ? r.body : undefined;
    });
    expect(row.name).toBe(name);
  });
});
