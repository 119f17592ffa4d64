import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeterminismViolationError } from '@temporalio/workflow';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { workflowBundle } from '../workflow/harness';

/**
 * Replays recorded histories of earlier versions of the checkpoint workflow
 * against today's code. A change that would make a running checkpoint
 * non-deterministic fails here, not in production: gate it with `patched()`.
 * Record new scenarios with `npm run replay:record` (never overwrite old ones).
 */
const DIR = join(__dirname, 'histories');
const FIXTURES = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .sort();

describe('replay of recorded checkpoint histories', () => {
  beforeAll(() => {
    try {
      Runtime.install({ logger: new DefaultLogger('ERROR') });
    } catch {
      /* installed already in this process */
    }
  });

  it('has the recorded scenarios', () => {
    expect(FIXTURES).toEqual(
      expect.arrayContaining([
        'adopted-by-reconciler.json',
        'bare-metal-success-cleanup.json',
        'canceled-while-paused.json',
        'continue-as-new-first-run.json',
        'continue-as-new-resumed-run.json',
        'cooldown-before-unpause.json',
        'create-deadline-cut-off.json',
        'create-failure.json',
        'github-label-pause.json',
        'github-label-restore-refused.json',
        'gitlab-budget-adopted-pause.json',
        'gitlab-budget-finalize-cancels-poll.json',
        'gitlab-budget-poll-rate-limited.json',
        'gitlab-budget-reconcile.json',
        'hold-on-failure-expired.json',
        'hold-on-failure-released.json',
        'needs-attention-release.json',
        'needs-attention-retry.json',
        'pause-before-bookkeeping.json',
        'pause-check-failed.json',
        'poller-job-failed.json',
        'proxmox-failure-reset.json',
        'proxmox-reset-one-clock.json',
        'ttl-gc-reset.json',
        'unpause-refused-then-retried.json',
      ]),
    );
  });

  it.each(FIXTURES)('%s replays without non-determinism', async (file) => {
    const history: unknown = JSON.parse(readFileSync(join(DIR, file), 'utf8'));
    await Worker.runReplayHistory(
      { workflowBundle: { code: await workflowBundle() }, replayName: file },
      history,
      file.replace(/\.json$/, ''),
    );
  });

  describe('negative control: the workflow with an ungated new activity', () => {
    // A copy under test/ (negative-control/), bundled on its own: never in the product's bundle.
    let changed: Promise<string> | undefined;
    const changedBundle = () =>
      (changed ??= bundleWorkflowCode({
        workflowsPath: join(__dirname, 'negative-control', 'checkpoint-ungated.ts'),
        logger: new DefaultLogger('WARN'),
      }).then((b) => b.code));

    /** The fixtures of checkpoint runs (the others are of the reconciler's workflow). */
    const CHECKPOINT_FIXTURES = FIXTURES.filter((f) => {
      const h = JSON.parse(readFileSync(join(DIR, f), 'utf8')) as {
        events: Array<{
          workflowExecutionStartedEventAttributes?: { workflowType?: { name?: string } };
        }>;
      };
      return (
        h.events[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name ===
        'checkpointWorkflow'
      );
    });

    it('covers the checkpoint fixtures', () => {
      expect(CHECKPOINT_FIXTURES.length).toBeGreaterThanOrEqual(20);
    });

    it.each(CHECKPOINT_FIXTURES)(
      '%s fails to replay with a DeterminismViolationError',
      async (file) => {
        const history: unknown = JSON.parse(readFileSync(join(DIR, file), 'utf8'));
        const replay = Worker.runReplayHistory(
          { workflowBundle: { code: await changedBundle() }, replayName: `${file}-ungated` },
          history,
          file.replace(/\.json$/, ''),
        );
        await expect(replay).rejects.toBeInstanceOf(DeterminismViolationError);
      },
    );
  });
});
