/**
 * The GitHub "pause" in the checkpoint workflow, with stubbed activities:
 * the runner's pause labels are read, the ones it carries removed before the
 * reset, and exactly those put back after; a refused restore waits for an
 * operator like a refused GitLab unpause. GitLab runs stay as they were.
 */
import { retrySignal, releaseSignal, type GitHubPauseTarget } from '../../common/checkpoint';
import {
  createCheckpoint,
  nonRetryable,
  startWorkflowHarness,
  type WorkflowHarness,
} from './harness';
import {
  finalize,
  gate,
  handle,
  input,
  runner,
  steps,
  transitions,
  waitNeedsAttention,
  waitPhase,
} from './fixtures';

let h: WorkflowHarness;
beforeEach(async () => {
  h = await startWorkflowHarness();
});
afterEach(async () => h?.stop());

const target = (labels = ['e2e']): GitHubPauseTarget => ({
  kind: 'github',
  githubRunnerId: 7,
  scope: { repo: 'acme/app' },
  labels,
});
const githubRunner = (labels?: string[]) =>
  runner('bare_metal', { gitlabRunnerId: null, pause: target(labels) });

describe('a GitHub runner', () => {
  it('its pause labels come off before the reset (logged with finalize_queued) and go back after readiness', async () => {
    const r = githubRunner();
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8001', projectId: 'acme/app' });
    await finalize(h, r, cp.name, 'failure');
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'checkRunnerLabels',
      'removeRunnerLabels',
      'runRunnerCommand',
      'waitUntilReady',
      'restoreRunnerLabels',
    ]);
    expect(h.stubs.callsOf('removeRunnerLabels')[0]!.input).toEqual({
      target: target(),
      labels: ['e2e'],
      runnerId: r.runnerId,
    });
    expect(h.stubs.callsOf('transitionCheckpoint')[0]!.input).toMatchObject({
      to: 'finalize_queued',
      pauseLog: {
        result: 'ok',
        detail: 'removed labels ["e2e"] from GitHub runner 7 of acme/app',
        fact: { target: target(), state: 'paused', labels: ['e2e'] },
      },
    });
    expect((await handle(h, r).describe()).memo).toMatchObject({
      pause: { checkpoint: cp.name, target: target(), labels: ['e2e'] },
    });
    expect(h.stubs.callsOf('restoreRunnerLabels')[0]!.input).toMatchObject({
      target: target(),
      labels: ['e2e'],
    });
    expect(transitions(h.stubs.calls)).toEqual(['finalize_queued', 'reset']);
  });

  it('finalize answers once the labels are off', async () => {
    const removal = gate();
    let removed = false;
    h.stubs.on('removeRunnerLabels', async (i: { labels: string[] }) => {
      await removal.promise;
      removed = true;
      return { removed: i.labels };
    });
    const r = githubRunner();
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8002' });
    const answered = finalize(h, r, cp.name, 'failure');
    await waitPhase(h, r, 'finalizing');
    removal.open();
    await answered;
    expect(removed).toBe(true);
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
  });

  it('removes only the pause labels the runner carries, and puts back only those GitHub removed', async () => {
    // gpu is gone already (an operator took it off); e2e goes meanwhile (GitHub: 404).
    h.stubs.on('checkRunnerLabels', () => ({ labels: ['self-hosted', 'E2E', 'nightly'] }));
    const r = githubRunner(['e2e', 'gpu', 'nightly']);
    h.stubs.on('removeRunnerLabels', () => ({ removed: ['nightly'] }));
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8003' });
    await finalize(h, r, cp.name, 'success');
    expect(await handle(h, r).result()).toMatchObject({ state: 'deleted' });
    // In the runner's own spelling: that is the label GitHub knows.
    expect(h.stubs.callsOf('removeRunnerLabels')[0]!.input).toMatchObject({
      labels: ['E2E', 'nightly'],
    });
    expect(h.stubs.callsOf('restoreRunnerLabels')[0]!.input).toMatchObject({
      labels: ['nightly'],
    });
  });

  it('a runner that carries none of its pause labels is left as it is: nothing removed, nothing put back', async () => {
    h.stubs.on('checkRunnerLabels', () => ({ labels: ['self-hosted', 'Linux', 'X64'] }));
    const r = githubRunner();
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8004' });
    await finalize(h, r, cp.name, 'failure');
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'checkRunnerLabels',
      'runRunnerCommand',
      'waitUntilReady',
    ]);
    expect(h.stubs.callsOf('transitionCheckpoint')[0]!.input).toMatchObject({
      pauseLog: {
        result: 'skipped',
        detail:
          'GitHub runner 7 of acme/app carries none of the labels ["e2e"]: someone else removed them; e2epool will not put them back',
      },
    });
  });

  it('labels that could not be read are not removed; a removal that failed is still undone', async () => {
    h.stubs.on('checkRunnerLabels', () => {
      throw nonRetryable('cannot read the labels of GitHub runner 7', 'PauseCheckFailed');
    });
    const a = githubRunner();
    const cpA = await createCheckpoint(h, a, input(a), { jobId: '8005' });
    await finalize(h, a, cpA.name, 'failure');
    expect(await handle(h, a).result()).toMatchObject({ state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'checkRunnerLabels',
      'runRunnerCommand',
      'waitUntilReady',
    ]);

    h.stubs.on('checkRunnerLabels', () => ({ labels: ['e2e'] }));
    h.stubs.on('removeRunnerLabels', () => {
      throw nonRetryable('GitHub DELETE .../labels/e2e: 502');
    });
    const b = githubRunner();
    const before = h.stubs.calls.length;
    const cpB = await createCheckpoint(h, b, input(b), { jobId: '8006' });
    await finalize(h, b, cpB.name, 'failure');
    expect(await handle(h, b).result()).toMatchObject({ state: 'reset' });
    const calls = h.stubs.calls.slice(before);
    expect(steps(calls)).toEqual([
      'checkRunnerLabels',
      'removeRunnerLabels',
      'runRunnerCommand',
      'waitUntilReady',
      'restoreRunnerLabels',
    ]);
    expect(calls.find((c) => c.name === 'transitionCheckpoint')!.input).toMatchObject({
      pauseLog: {
        result: 'error',
        detail: 'pause request sent: remove labels ["e2e"] from GitHub runner 7 of acme/app',
      },
    });
  });

  it('a restore GitHub refuses parks the checkpoint in needs_attention, saying how to fix it; `retry` after the fix ends it', async () => {
    let refused = true;
    h.stubs.on('restoreRunnerLabels', () => {
      if (refused)
        throw nonRetryable('GitHub POST .../labels: 403 Must have admin rights to Repository.');
    });
    const r = githubRunner();
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8007' });
    await finalize(h, r, cp.name, 'failure');
    const v = await waitNeedsAttention(h, r);
    expect(v.lastError).toMatch(
      /^GitHub runner 7 of acme\/app without its labels \["e2e"\]: putting them back failed \(PermanentFailure: GitHub POST .*403 Must have admin rights.*\)\. Fix GitHub access \(E2EPOOL_GITHUB_TOKEN needs admin rights/,
    );
    refused = false;
    await handle(h, r).signal(retrySignal);
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    expect(transitions(h.stubs.calls)).toEqual(['finalize_queued', 'needs_attention', 'reset']);
  });

  it('`release` with the restore refused leaves the labels off and says so', async () => {
    h.stubs.on('restoreRunnerLabels', () => {
      throw nonRetryable('GitHub POST .../labels: 404 Not Found');
    });
    const r = githubRunner();
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8008' });
    await finalize(h, r, cp.name, 'failure');
    await waitNeedsAttention(h, r);
    await handle(h, r).signal(releaseSignal);
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    expect(h.stubs.callsOf('transitionCheckpoint').at(-1)!.input).toMatchObject({
      to: 'reset',
      errorDetail:
        'released by an operator with GitHub runner 7 of acme/app without its labels ["e2e"]',
      leftPausedWhat: 'GitHub runner 7 of acme/app without its labels ["e2e"]',
    });
  });

  it('an adopted checkpoint removes and restores through the logged pause step', async () => {
    h.stubs.on('pauseRunnerLabels', () => ({ removed: ['e2e'] }));
    const r = githubRunner();
    await h.client.workflow.start('checkpointWorkflow', {
      workflowId: `e2epool-runner-${r.runnerId}`,
      taskQueue: h.taskQueue,
      args: [
        {
          ...input(r),
          resume: {
            name: 'job-8009-1795000000-abcdef12',
            jobId: '8009',
            projectId: 'acme/app',
            checkpointId: 8009,
            createdAt: new Date().toISOString(),
            pollJobs: false,
            adopted: {
              state: 'finalize_queued',
              jobEnd: { status: 'failure', source: 'hook', at: new Date().toISOString() },
            },
          },
        },
      ],
    });
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'pauseRunnerLabels',
      'runRunnerCommand',
      'waitUntilReady',
      'restoreRunnerLabels',
    ]);
    expect(h.stubs.callsOf('pauseRunnerLabels')[0]!.input).toMatchObject({ target: target() });
  });
});

describe('a GitLab runner', () => {
  it('is paused as before, with no GitHub step and no GitHub patch marker', async () => {
    const r = runner('bare_metal', {
      gitlabRunnerId: 41,
      pause: { kind: 'gitlab', gitlabRunnerId: 41 },
    });
    const cp = await createCheckpoint(h, r, input(r), { jobId: '8010' });
    await finalize(h, r, cp.name, 'failure');
    expect(await handle(h, r).result()).toMatchObject({ state: 'reset' });
    expect(steps(h.stubs.calls)).toEqual([
      'checkRunnerPaused',
      'sendPause',
      'runRunnerCommand',
      'waitUntilReady',
      'unpauseRunner',
    ]);
    expect(h.stubs.callsOf('sendPause')[0]!.input).toMatchObject({ gitlabRunnerId: 41 });
  });
});
