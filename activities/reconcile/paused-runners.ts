import { describePauseTarget, type PauseTarget } from '../../common/checkpoint';
import { eachLimited } from '../../common/each-limited';
import { describeFailure, fail } from '../../common/fail';
import { pauseTarget } from '../../config/checkpoint-input';
import { heartbeat } from '../context';
import type { ActivityDeps } from '../deps';
import { carried } from '../github/steps';
import { activityKey, writeOperation } from '../operation-log';
import {
  LIVE_CONCURRENCY,
  minAge,
  type PausedCandidate,
  type ReconcileContext,
  type ReconcileFinding,
  type ReconcileInput,
} from './record';

/** How to look at and undo a pause in the runner's CI system. */
interface LiveRunner {
  paused(): Promise<boolean>;
  unpause(): Promise<void>;
  pausedBy: string;
  cannotAsk: string;
  unpaused: string;
  unpausedElsewhere: string;
}

/** What checkPaused found, and why the candidate should be unpaused now (null: it should not). */
interface Checked {
  findings: ReconcileFinding[];
  unpauseWhy: string | null;
}

/**
 * How to look at and undo a pause in the runner's CI system; null when
 * there is nothing of e2epool's to undo (a GitHub pause that removed no label).
 */
function liveRunner(deps: ActivityDeps, target: PauseTarget, removed: string[]): LiveRunner | null {
  if (target.kind === 'gitlab') {
    const gitlab = deps.gitlab!;
    return {
      paused: () => gitlab.runnerPaused(target.gitlabRunnerId),
      unpause: () => gitlab.setPaused(target.gitlabRunnerId, false),
      pausedBy: 'paused by',
      cannotAsk: `cannot ask GitLab about runner ${target.gitlabRunnerId}`,
      unpaused: 'unpaused',
      unpausedElsewhere: 'is no longer paused: someone else unpaused it',
    };
  }
  const github = deps.github!;
  if (removed.length === 0) return null;
  const missing = async () => {
    const has = (await github.runnerLabels(target.scope, target.githubRunnerId)).map((l) => l.name);
    return removed.filter((l) => carried([l], has).length === 0);
  };
  const labels = JSON.stringify(removed);
  return {
    paused: async () => (await missing()).length > 0,
    unpause: async () => {
      const gone = await missing();
      if (gone.length > 0) await github.addLabels(target.scope, target.githubRunnerId, gone);
    },
    pausedBy: `left without its labels ${labels} by`,
    cannotAsk: `cannot read the labels of ${describePauseTarget(target)}`,
    unpaused: `put back labels ${labels}`,
    unpausedElsewhere: `carries its labels ${labels} again: someone else put them back`,
  };
}

/**
 * Runners whose newest pause (runner_pauses) is still e2epool's, of runners
 * whose CI system this worker can reach, unchanged for longer than the
 * minimum age. A pause made in another CI system than the runner's now is
 * not one this worker can undo.
 */
async function pausedCandidates(
  { deps, store }: ReconcileContext,
  i: ReconcileInput,
): Promise<PausedCandidate[]> {
  const targets = new Map<string, PauseTarget>();
  // Read now, not from the inventory's copy: a pass started by `unquarantine` must see it.
  const quarantined = new Set(await store.quarantine.quarantinedIds());
  for (const r of deps.inventory.inventory.runners) {
    // A draining or quarantined runner stays paused on purpose (see
    // docs/protocol.md#runner-registry): after `undrain` / `unquarantine` it is a candidate again.
    if (deps.inventory.inventory.isDraining(r.runner_id) || quarantined.has(r.runner_id)) continue;
    const t = pauseTarget(r);
    if (t?.kind === 'gitlab' ? deps.gitlab : t?.kind === 'github' ? deps.github : null)
      targets.set(r.runner_id, t!);
  }
  const oldEnough = Date.now() - minAge(i) * 1000;
  return (await store.pauses.latestByRunner([...targets.keys()]))
    .filter(
      (p) => p.owned && p.ci === targets.get(p.runnerId)!.kind && p.changedAt.getTime() < oldEnough,
    )
    .map((p) => ({
      runnerId: p.runnerId,
      checkpointId: p.checkpointId,
      checkpointName: p.checkpointName,
      at: p.pausedAt.toISOString(),
      labels: p.labels,
      keptForDrain: p.state === 'kept_for_drain',
      keptForQuarantine: p.state === 'kept_for_quarantine',
      target: targets.get(p.runnerId)!,
    }));
}

function candidateFinding(
  { record }: ReconcileContext,
  c: PausedCandidate,
  action: ReconcileFinding['action'],
  detail: string,
) {
  return record(
    { kind: 'paused_runner', checkpoint: c.checkpointName, runnerId: c.runnerId, action, detail },
    { id: c.checkpointId, backend: null },
  );
}

/** Notes once that somebody else undid e2epool's pause of the candidate: the pause is no longer e2epool's. */
async function noteUnpausedElsewhere(
  { store }: ReconcileContext,
  c: PausedCandidate,
  detail: string,
): Promise<void> {
  const now = new Date();
  await store.transaction(async (tx) => {
    await tx.pauses.closed(c.checkpointId, 'unpaused_elsewhere');
    await writeOperation(
      tx.operations,
      {
        checkpointId: c.checkpointId,
        runnerId: c.runnerId,
        backend: null,
        operation: 'unpaused_elsewhere',
        key: activityKey(
          `unpaused_elsewhere:${c.checkpointId}`,
          `unpaused_elsewhere:${c.checkpointId}:${now.getTime()}`,
        ),
      },
      { result: 'ok', detail, startedAt: now, finishedAt: now },
    );
  });
}

/**
 * Whether the candidate is still e2epool's to unpause: no active
 * checkpoint holds it and its CI system says it is still paused (one
 * request). Returns the findings made on the way and, when it should be
 * unpaused now, why.
 */
async function checkPaused(
  ctx: ReconcileContext,
  c: PausedCandidate,
  i: ReconcileInput,
): Promise<Checked> {
  const { deps, store } = ctx;
  const none = { findings: [], unpauseWhy: null };
  if (await store.checkpoints.hasActive(c.runnerId)) return none; // that checkpoint's run unpauses it
  if (await store.quarantine.isQuarantined(c.runnerId)) return none; // quarantined since the candidates were listed
  const what = describePauseTarget(c.target);
  const live = liveRunner(deps, c.target, c.labels);
  if (!live) return none; // a GitHub pause that removed no label: nothing of e2epool's to put back
  let paused: boolean;
  try {
    paused = await live.paused();
  } catch (err) {
    const detail = `cannot ask about ${what}: ${describeFailure(err)}`;
    return { findings: [await candidateFinding(ctx, c, 'failed', detail)], unpauseWhy: null };
  }
  if (!paused) {
    await noteUnpausedElsewhere(ctx, c, `${what} ${live.unpausedElsewhere}`);
    return none;
  }
  const why = c.keptForDrain
    ? `${what} was kept paused after checkpoint ${c.checkpointName} while its runner drained; it is undrained now`
    : c.keptForQuarantine
      ? `${what} was kept paused after checkpoint ${c.checkpointName} while its runner was quarantined; it is unquarantined now`
      : `${what} was ${live.pausedBy} checkpoint ${c.checkpointName}, and no active checkpoint is responsible for it`;
  if (!i.repair) {
    const detail = `${why} (E2EPOOL_RECONCILE_REPAIR=false: not unpaused)`;
    return { findings: [await candidateFinding(ctx, c, 'reported', detail)], unpauseWhy: null };
  }
  return { findings: [], unpauseWhy: why };
}

/** Unpauses the candidate checkPaused chose and records the finding. */
async function unpausePaused(
  ctx: ReconcileContext,
  c: PausedCandidate,
  why: string,
): Promise<ReconcileFinding> {
  const { deps, store } = ctx;
  const live = liveRunner(deps, c.target, c.labels);
  if (!live) throw fail('PermanentFailure', `nothing of e2epool's to undo on ${c.runnerId}`);
  try {
    await live.unpause();
    await store.pauses.closed(c.checkpointId, 'unpaused');
    deps.metrics.runnerPausedSeconds.inc(
      { runner_id: c.runnerId },
      Math.max(0, (Date.now() - new Date(c.at).getTime()) / 1000),
    );
    return await candidateFinding(ctx, c, 'unpaused', `${why}: ${live.unpaused}`);
  } catch (err) {
    const detail = `${why}; unpausing it failed: ${describeFailure(err)}`;
    return await candidateFinding(ctx, c, 'failed', detail);
  }
}

export function pausedRunnerActivities(ctx: ReconcileContext) {
  return {
    /**
     * Runners e2epool paused (per runner_pauses: GitLab runners paused,
     * GitHub runners with their pause labels removed) with no active
     * checkpoint responsible for them any more are unpaused, after asking
     * their CI system that they are still paused. A pause somebody else
     * made, or one an operator's `release` left in place on purpose, is never
     * an event of e2epool's, so those runners are never touched. A runner
     * e2epool paused that somebody then unpaused is noted once
     * (`unpaused_elsewhere`). Of a GitHub runner only the labels runner_pauses
     * names are put back.
     *
     * Race: a new checkpoint could start between the check and the unpause,
     * but only from a caller outside CI: a paused runner gets no job.
     */
    async reconcilePausedRunners(i: ReconcileInput): Promise<ReconcileFinding[]> {
      const findings: ReconcileFinding[] = [];
      // GitLab's go apart, one request per activity on the GitLab queue
      // (pausedGitlabCandidates and the workflow's reconcileGitlabPauses).
      const mine = (await pausedCandidates(ctx, i)).filter((c) => c.target.kind !== 'gitlab');
      await eachLimited(mine, LIVE_CONCURRENCY, async (c) => {
        heartbeat();
        const checked = await checkPaused(ctx, c, i);
        findings.push(...checked.findings);
        if (checked.unpauseWhy !== null)
          findings.push(await unpausePaused(ctx, c, checked.unpauseWhy));
      });
      return findings;
    },

    /**
     * The GitLab runners e2epool paused that reconcilePausedRunners leaves apart:
     * from Postgres only. The workflow asks GitLab about each on the GitLab
     * queue, one request per activity (checkPausedGitlabRunner, unpausePausedGitlabRunner).
     */
    async pausedGitlabCandidates(i: ReconcileInput): Promise<PausedCandidate[]> {
      return (await pausedCandidates(ctx, i)).filter((c) => c.target.kind === 'gitlab');
    },

    /** Asks GitLab whether the candidate is still paused (one request); see reconcilePausedRunners. */
    async checkPausedGitlabRunner(
      i: ReconcileInput & { candidate: PausedCandidate },
    ): Promise<{ findings: ReconcileFinding[]; unpauseWhy: string | null }> {
      return checkPaused(ctx, i.candidate, i);
    },

    /** Unpauses the candidate (one request), recording the finding; see reconcilePausedRunners. */
    async unpausePausedGitlabRunner(i: {
      candidate: PausedCandidate;
      why: string;
    }): Promise<ReconcileFinding> {
      return unpausePaused(ctx, i.candidate, i.why);
    },
  };
}
