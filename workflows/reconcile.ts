import { log, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { PausedCandidate, ReconcileFinding, ReconcileInput } from '../activities/reconcile';
import { describeFailure } from '../common/fail';
import { NON_RETRYABLE_TYPES } from '../common/failures';
import { GITLAB_PRIORITY, gitlabTaskQueue } from '../common/gitlab-budget';
import { gitlabPlacement } from './checkpoint/activities';

const RECONCILE_RETRY = {
  maximumAttempts: 3,
  initialInterval: '2 seconds',
  nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
};

const { reconcileCheckpoints, reconcilePausedRunners, reconcileSnapshots, pruneRetention } =
  proxyActivities<Activities>({
    // One pass over the active checkpoints; the schedule runs the next one soon anyway.
    startToCloseTimeout: '5 minutes',
    retry: RECONCILE_RETRY,
  });

const { pausedGitlabCandidates } = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  retry: RECONCILE_RETRY,
});

/** GitLab runners asked at once by one pass; the GitLab queue's rate limit paces them anyway. */
const GITLAB_CONCURRENCY = 8;

/**
 * One reconciler pass, started by the schedule `e2epool-reconcile`: compares
 * what Postgres believes with what Temporal runs, GitLab pauses and Proxmox
 * keeps, and repairs what differs. Orphan checkpoints come first: adopting
 * one makes its runner's pause someone's responsibility again.
 */
export async function reconcileWorkflow(
  input: ReconcileInput,
): Promise<{ findings: ReconcileFinding[]; pruned: { commands: number; logs: number } }> {
  const findings = await reconcileCheckpoints(input);
  findings.push(...(await reconcilePausedRunners(input)));
  findings.push(...(await reconcileGitlabPauses(input)));
  findings.push(...(await reconcileSnapshots(input)));
  const pruned = await pruneRetention({ repair: input.repair });
  return { findings, pruned };
}

/**
 * The GitLab part of reconcilePausedRunners: each
 * GitLab request in an activity of its own on the GitLab queue, so the
 * reconciler spends the fleet's GitLab budget like every other caller. A
 * candidate whose activities fail (Postgres down) is left to the next pass.
 */
async function reconcileGitlabPauses(input: ReconcileInput): Promise<ReconcileFinding[]> {
  const gitlab = proxyActivities<Activities>({
    // Behind a reset's requests, ahead of polls (PATCH_GITLAB_PRIORITY).
    ...gitlabPlacement(GITLAB_PRIORITY.reconcile, gitlabTaskQueue),
    // Includes the wait for the queue's rate limit.
    scheduleToCloseTimeout: '5 minutes',
    startToCloseTimeout: '1 minute',
    retry: RECONCILE_RETRY,
  });
  const candidates = await pausedGitlabCandidates(input);
  const findings: ReconcileFinding[] = [];
  const one = async (candidate: PausedCandidate) => {
    try {
      const checked = await gitlab.checkPausedGitlabRunner({ ...input, candidate });
      findings.push(...checked.findings);
      if (checked.unpauseWhy !== null)
        findings.push(
          await gitlab.unpausePausedGitlabRunner({ candidate, why: checked.unpauseWhy }),
        );
    } catch (err) {
      log.warn('reconciler: a paused GitLab runner is left to the next pass', {
        runnerId: candidate.runnerId,
        error: describeFailure(err),
      });
    }
  };
  for (let at = 0; at < candidates.length; at += GITLAB_CONCURRENCY)
    await Promise.all(candidates.slice(at, at + GITLAB_CONCURRENCY).map(one));
  return findings;
}
