import {
  CancelledFailure,
  WorkflowFailedError,
  type WorkflowExecutionStatusName,
} from '@temporalio/client';
import {
  checkpointWorkflowId,
  releaseSignal,
  retrySignal,
  stateQuery,
} from '../../common/checkpoint';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  stepsBesidesPollerNote,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

// One runner (so one workflow id on the shared Temporal server) per test.
const R = testRunners(['retry', 'release', 'find', 'cancel']);
const CANCEL_GITLAB_RUNNER = 61;

describe('operators: needs_attention, retry, release, query, search attributes', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gitlab: GitLabStandIn;
  const failing = new Set<string>();
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);

  beforeAll(async () => {
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    agents.onExec = (runnerId) =>
      failing.has(runnerId)
        ? { exitCode: 7, stdout: '', stderr: 'disk on fire' }
        : { exitCode: 0, stdout: 'ok', stderr: '' };
    gitlab = await startGitLabStandIn();
    gitlab.addRunner(CANCEL_GITLAB_RUNNER);
    c = await startTestController({
      inventory: `runners:\n${Object.values(R)
        .map((r) =>
          bareMetalRunnerYaml(r, {
            reset_cmd: '/opt/reset.sh',
            ...(r === R.cancel ? { gitlab_runner_id: CANCEL_GITLAB_RUNNER } : {}),
          }),
        )
        .join('')}`,
      agents,
      env: {
        E2EPOOL_RESET_MAX_ATTEMPTS: '2',
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
      },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await gitlab?.close();
  });

  /** A handle on the run that holds `name` (pinned by run id: never a later or earlier run). */
  async function runOf(r: TestRunner, name: string) {
    const latest = c.client.workflow.getHandle(checkpointWorkflowId(r.id));
    const { runId } = await latest.describe();
    const handle = c.client.workflow.getHandle(checkpointWorkflowId(r.id), runId);
    expect((await handle.query(stateQuery)).name).toBe(name);
    return { handle, runId };
  }

  async function stuck(r: TestRunner) {
    failing.add(r.id);
    const created = await as(r).create(r.id, `${r.id}-job`);
    expect(created.status).toBe(201);
    const name = created.body.name as string;
    const { handle, runId } = await runOf(r, name);
    expect((await as(r).finalize(name, 'failure')).status).toBe(202);
    await waitFor(
      'needs_attention',
      async () => (await as(r).status(name)).body.state === 'needs_attention',
    );
    return { name, handle, runId };
  }

  it('parks a reset that exhausts its retries in needs_attention, visible by query and search attribute, until `retry`', async () => {
    const r = R.retry;
    const { name, handle, runId } = await stuck(r);
    // Two attempts (the budget), then it waits for an operator.
    expect(agents.commandsFor(r.id)).toEqual(['/opt/reset.sh', '/opt/reset.sh']);
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
        query: `E2eState = 'needs_attention' AND E2eRunnerId = '${r.id}'`,
      }))
        hits.push(wf);
      return hits.length ? hits : undefined;
    });
    expect(found.map((wf) => [wf.workflowId, wf.runId])).toEqual([
      [checkpointWorkflowId(r.id), runId],
    ]);
    const row = (
      await c.ds.query(`SELECT error_detail, reset_attempts FROM checkpoints WHERE name = $1`, [
        name,
      ])
    )[0];
    expect(row.error_detail).toContain('disk on fire');
    expect(row.reset_attempts).toBe(1);
    // Still active: a new create is refused.
    expect((await as(r).create(r.id, 'next')).status).toBe(409);

    // The metric counts the whole database (other tests' rows too): it must agree with it.
    const [{ n }] = await c.ds.query(
      `SELECT count(*)::int AS n FROM checkpoints WHERE state = 'needs_attention'`,
    );
    expect(n).toBeGreaterThanOrEqual(1);
    const metrics = await (await fetch(`${c.api.url}/metrics`)).text();
    expect(metrics).toMatch(
      new RegExp(
        `^e2epool_checkpoints_active\\{state="needs_attention",service="e2epool-api"\\} ${n}$`,
        'm',
      ),
    );
    expect(metrics).toMatch(
      /^e2epool_checkpoints_needs_attention_oldest_seconds\{service="e2epool-api"\} \d/m,
    );

    failing.delete(r.id);
    await handle.signal(retrySignal);
    await waitFor(
      'reset after retry',
      async () => (await as(r).status(name)).body.state === 'reset',
    );
    // The row says `reset` just before the run logs it: the run's end is when the log is whole.
    expect(await handle.result()).toEqual({ name, state: 'reset' });
    const { steps, pollerNotes } = await stepsBesidesPollerNote(c.ds, name);
    expect(pollerNotes).toBe(1);
    expect(steps).toEqual([
      'create:ok',
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
    const r = R.release;
    const { name, handle } = await stuck(r);
    await handle.signal(releaseSignal);
    await waitFor(
      'reset_failed',
      async () => (await as(r).status(name)).body.state === 'reset_failed',
    );
    expect(await handle.result()).toEqual({ name, state: 'reset_failed' });
    // The same runner takes a new checkpoint once that run has ended.
    const next = await as(r).create(r.id, 'after-release');
    expect(next.status).toBe(201);
    failing.delete(r.id);
    await as(r).finalize(next.body.name, 'success');
    await waitFor(
      'the next checkpoint to end',
      async () => (await as(r).status(next.body.name)).body.state === 'deleted',
    );
  });

  it('finds checkpoints by runner, job id, name and state, and shows a summary', async () => {
    const r = R.find;
    const created = await as(r).create(r.id, 'find-me');
    expect(created.status).toBe(201);
    const name = created.body.name as string;
    const { handle, runId } = await runOf(r, name);
    const hits = await waitFor('visibility', async () => {
      const out = [];
      for await (const wf of c.client.workflow.list({
        query: `E2eRunnerId = '${r.id}' AND E2eJobId = 'find-me' AND E2eCheckpointName = '${name}' AND E2eState = 'created' AND E2eBackend = 'bare_metal'`,
      }))
        out.push(wf);
      return out.length ? out : undefined;
    });
    expect(hits.map((wf) => wf.runId)).toEqual([runId]);
    const desc = await handle.describe();
    expect(await desc.staticSummary()).toBe(`runner ${r.id} · job find-me · bare_metal`);
    await as(r).finalize(name, 'success');
    await waitFor('deleted', async () => (await as(r).status(name)).body.state === 'deleted');
  });

  it('a canceled workflow unpauses its runner, ends its checkpoint as reset_failed and shows as canceled', async () => {
    const r = R.cancel;
    // Stuck in needs_attention: the GitLab runner was paused before the reset and stays paused.
    const { name, handle } = await stuck(r);
    expect(gitlab.runner(CANCEL_GITLAB_RUNNER)).toMatchObject({
      paused: true,
      pausedHistory: [true],
    });

    await handle.cancel();
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
    // Temporal's CANCELED status; the TypeScript SDK spells its name 'CANCELLED'.
    const canceled: WorkflowExecutionStatusName = 'CANCELLED';
    expect((await handle.describe()).status.name).toBe(canceled);

    // The compensation ran before the run ended: unpaused, and the row is terminal.
    expect(gitlab.runner(CANCEL_GITLAB_RUNNER)).toMatchObject({
      paused: false,
      pausedHistory: [true, false],
    });
    const puts = gitlab.calls.filter(
      (x) => x.method === 'PUT' && x.path === `/api/v4/runners/${CANCEL_GITLAB_RUNNER}`,
    );
    expect(puts.map((p) => [String(p.body.paused), p.status])).toEqual([
      ['true', 200],
      ['false', 200],
    ]);
    const status = await as(r).status(name);
    expect(status.body).toMatchObject({ name, state: 'reset_failed', finalize_status: 'failure' });
    const [row] = await c.ds.query(`SELECT error_detail FROM checkpoints WHERE name = $1`, [name]);
    expect(row.error_detail).toBe('workflow canceled by an operator');
    const ops = (await operations(c.ds, name)).map((o) => `${o.operation}:${o.result}`);
    expect(ops).toContain('pause:ok');
    expect(ops).toContain('unpause:ok');
  });
});
