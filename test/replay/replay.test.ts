import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeterminismViolationError } from '@temporalio/workflow';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { workflowBundle } from '../workflow/harness';

/**
 * Replays the recorded histories of every release (test/replay/histories/
 * <release>/) against today's code. A change that would make a running
 * checkpoint non-deterministic fails here, not in production: gate it with
 * `patched()` and record its new path (see "Versioning" in CONTRIBUTING.md).
 */
const ROOT = join(__dirname, 'histories');
/** `<release>/<scenario>.json`, every release's fixtures. */
const FIXTURES = readdirSync(ROOT, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .flatMap((d) =>
    readdirSync(join(ROOT, d.name))
      .filter((f) => f.endsWith('.json'))
      .map((f) => `${d.name}/${f}`),
  )
  .sort();
const DIR = ROOT;
/** The workflow id the replay names a fixture by. */
const replayIdOf = (fixture: string) => fixture.replace(/\.json$/, '').replace('/', '-');

describe('replay of recorded workflow histories', () => {
  beforeAll(() => {
    try {
      Runtime.install({ logger: new DefaultLogger('ERROR') });
    } catch {
      /* installed already in this process */
    }
  });

  it('has the 1.0.0 baseline: a recording of every workflow path', () => {
    expect(FIXTURES).toEqual(
      expect.arrayContaining(
        [
          'adopted-by-reconciler',
          'adopted-github',
          'bare-metal-failure-reset',
          'bare-metal-success-cleanup',
          'canceled-while-paused',
          'continue-as-new-first-run',
          'continue-as-new-resumed-run',
          'create-deadline-cut-off',
          'create-failure',
          'finalize-cancels-poll',
          'github-label-pause',
          'github-label-restore-refused',
          'hold-expired',
          'hold-released',
          'needs-attention-release',
          'needs-attention-retry',
          'no-pause-target',
          'pause-check-failed',
          'poller-job-failed',
          'poller-rate-limited',
          'proxmox-failure-reset',
          'reconcile-pass',
          'ttl-gc-reset',
          'unpause-refused-then-released',
          'unpause-refused-then-retried',
        ].map((n) => `1.0.0/${n}.json`),
      ),
    );
  });

  it('has the 1.1.0 paths: golden baseline and proof of reset (PATCH_PROOF_OF_RESET)', () => {
    expect(FIXTURES).toEqual(
      expect.arrayContaining(
        [
          'bare-metal-verify-cmd',
          'golden-canary-required-create-failure',
          'golden-success-verified',
          'golden-verify-failed-then-retried',
          'proxmox-per-job-canary',
          'verify-required-unverifiable-released',
        ].map((n) => `1.1.0/${n}.json`),
      ),
    );
  });

  it('has the 1.1.0 baseline refresh and rollout paths (new workflow types)', () => {
    expect(FIXTURES).toEqual(
      expect.arrayContaining(
        [
          'baseline-refresh-restore-failed-quarantined',
          'baseline-refresh-success',
          'baseline-refresh-update-failed',
          'baseline-rollout-canary-failed',
          'baseline-rollout-success',
        ].map((n) => `1.1.0/${n}.json`),
      ),
    );
  });

  it('has the 2.0.0 path: one GitLab queue by priority (PATCH_GITLAB_PRIORITY)', () => {
    expect(FIXTURES).toEqual(
      expect.arrayContaining(
        ['gitlab-priority-polled-reset', 'gitlab-priority-reconcile-pass'].map(
          (n) => `2.0.0/${n}.json`,
        ),
      ),
    );
  });

  it('has the 2.0.0 path: the first poll spread over an interval (PATCH_POLL_SPREAD)', () => {
    expect(FIXTURES).toContain('2.0.0/poll-spread-polled-reset.json');
  });

  it('has the 2.0.0 paths: refresh pause and agent readiness (PATCH_REFRESH_HOLD_AND_AGENT), idle quarantine', () => {
    expect(FIXTURES).toEqual(
      expect.arrayContaining(
        [
          'baseline-refresh-agent-missing-restored',
          'baseline-refresh-hold-and-agent',
          'runner-quarantine-hold',
        ].map((n) => `2.0.0/${n}.json`),
      ),
    );
  });

  it.each(FIXTURES)('%s replays without non-determinism', async (file) => {
    const history: unknown = JSON.parse(readFileSync(join(DIR, file), 'utf8'));
    await Worker.runReplayHistory(
      { workflowBundle: { code: await workflowBundle() }, replayName: file },
      history,
      replayIdOf(file),
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
          replayIdOf(file),
        );
        await expect(replay).rejects.toBeInstanceOf(DeterminismViolationError);
      },
    );
  });
});
