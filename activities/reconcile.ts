import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import {
  CHECKPOINT_WORKFLOW,
  describePauseTarget,
  isKeptPausedForDrain,
  labelsRemovedDetail,
  labelsRemovedIn,
  snapshotNameFor,
  stateQuery,
  type CheckpointWorkflowInput,
  type FinalizeRequest,
  type GitHubPauseTarget,
  type PauseTarget,
} from '../common/checkpoint';
import { eachLimited } from '../common/each-limited';
import { describeFailure, fail } from '../common/fail';
import { SA_CHECKPOINT_NAME, SA_JOB_ID } from '../common/search-attributes';
import { isActiveState, type Backend } from '../common/states';
import { checkpointInput, pauseTarget, runnerSearchAttributes } from '../config/checkpoint-input';
import type { ProxmoxRunner } from '../config/runner-schema';
import { createStore } from '../store';
import type { ActiveCheckpoint } from '../store/checkpoints';
import type { OperationResult } from '../store/operation-log';
import { heartbeat } from './context';
import { pollsJobsOf, type ActivityDeps } from './deps';
import { carried } from './github/steps';
import { activityKey, writeOperation } from './operation-log';
import { OURS, proxmoxClientFactory, runProxmoxTask } from './proxmox/steps';

/** Rows deleted per statement by retention. */
const PRUNE_BATCH = 1000;

/** A checkpoint this young may still be in its create: the reconciler leaves it alone. */
export const RECONCILE_MIN_AGE_SECONDS = 30;

export interface ReconcileInput {
  repair: boolean;
  /** Leave younger checkpoints alone (default RECONCILE_MIN_AGE_SECONDS). */
  minAgeSeconds?: number;
}

/** A runner e2epool paused that no unpause followed (reconcilePausedRunners). */
export interface PausedCandidate {
  runnerId: string;
  checkpointId: number;
  checkpointName: string;
  /** When the pause was logged (ISO). */
  at: string;
  detail: string | null;
  target: PauseTarget;
}

export interface ReconcileFinding {
  kind: 'orphan_checkpoint' | 'paused_runner' | 'orphan_snapshot';
  checkpoint: string;
  runnerId: string;
  action: 'adopted' | 'ended' | 'unpaused' | 'deleted' | 'reported' | 'skipped' | 'failed';
  detail: string;
}

/** How a finding's action lands in the operation log (and so in the findings metric). */
const RESULT_OF: Record<ReconcileFinding['action'], OperationResult> = {
  adopted: 'ok',
  ended: 'ok',
  unpaused: 'ok',
  deleted: 'ok',
  reported: 'skipped',
  skipped: 'skipped',
  failed: 'error',
};

/** Live systems asked at once by one pass (GitLab, Proxmox hosts). */
const LIVE_CONCURRENCY = 8;

/**
 * The reconciler's comparisons of what Postgres believes with what Temporal
 * runs; each repair is a compare-and-set and leaves a `reconcile:<kind>` row
 * in the checkpoint's operation log.
 */
export function reconcileActivities(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);
  const proxmoxClient = proxmoxClientFactory(deps);
  const minAge = (i: ReconcileInput) => i.minAgeSeconds ?? RECONCILE_MIN_AGE_SECONDS;

  /** Logs the finding in its checkpoint's operation log and the worker's log; returns it. */
  async function record(
    f: ReconcileFinding,
    c: { id: number; backend: Backend | null },
  ): Promise<ReconcileFinding> {
    const now = new Date();
    await writeOperation(
      store.operations,
      {
        checkpointId: c.id,
        runnerId: f.runnerId,
        backend: c.backend,
        operation: `reconcile:${f.kind}`,
        key: activityKey(
          `reconcile:${f.kind}:${c.id}`,
          `reconcile:${f.kind}:${c.id}:${now.getTime()}`,
        ),
      },
      {
        result: RESULT_OF[f.action],
        detail: f.action === 'failed' ? null : f.detail,
        error: f.action === 'failed' ? f.detail : null,
        startedAt: now,
        finishedAt: now,
      },
    );
    deps.log[f.action === 'failed' ? 'error' : 'warn'](
      { kind: f.kind, checkpoint: f.checkpoint, runnerId: f.runnerId, action: f.action },
      f.detail,
    );
    return f;
  }

  /** Whether an open run of the checkpoint's workflow holds it. */
  async function held(c: ActiveCheckpoint): Promise<boolean> {
    const t = deps.temporal!;
    const handle = t.client.workflow.getHandle(c.workflowId);
    try {
      const d = await handle.describe();
      if (d.status.name !== 'RUNNING') return false;
      // A run names the checkpoint it creates in a search attribute, which
      // describe reads from the run's own state: no query, so no replay of a
      // run the worker has evicted from its cache (a pass asks about every
      // waiting checkpoint). A run an earlier version adopted a checkpoint
      // with carries only the runner's attributes: that one is asked.
      const named = d.typedSearchAttributes.get(SA_CHECKPOINT_NAME);
      if (named !== undefined) return named === c.name;
      return (await handle.query(stateQuery)).name === c.name;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  }

  /**
   * What the checkpoint's last run did that Postgres may never have seen: a
   * run pauses the runner, and accepts a finalize, before its first Postgres
   * write (so both work while Postgres is down); terminated before that write
   * landed, it left them only in its history. Only a run that held this
   * checkpoint counts (its create's answer or its resume input names it).
   */
  async function unrecorded(c: ActiveCheckpoint): Promise<{
    pauseSent: boolean;
    labelsSent: { target: GitHubPauseTarget; labels: string[] } | null;
    finalize: FinalizeRequest | null;
  }> {
    const none = { pauseSent: false, labelsSent: null, finalize: null };
    if (c.state !== 'created') return none; // finalize_queued was written with its pause
    let events;
    try {
      events =
        (await deps.temporal!.client.workflow.getHandle(c.workflowId).fetchHistory()).events ?? [];
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return none; // past retention
      throw err;
    }
    const payload = (p: unknown): unknown =>
      p ? defaultPayloadConverter.fromPayload(p as Payload) : undefined;
    let held = false;
    let pauseSent = false;
    let labelsSent: { target: GitHubPauseTarget; labels: string[] } | null = null;
    let finalize: FinalizeRequest | null = null;
    for (const e of events) {
      const started = e.workflowExecutionStartedEventAttributes;
      if (started) {
        const input = payload(started.input?.payloads?.[0]) as CheckpointWorkflowInput | undefined;
        held ||= input?.resume?.name === c.name;
      }
      const created = e.workflowExecutionUpdateCompletedEventAttributes;
      if (created?.meta?.updateId && created.outcome?.success) {
        const dto = payload(created.outcome.success.payloads?.[0]) as { name?: string } | undefined;
        held ||= dto?.name === c.name;
      }
      const scheduled = e.activityTaskScheduledEventAttributes;
      if (scheduled?.activityType?.name === 'sendPause') pauseSent = true;
      if (scheduled?.activityType?.name === 'removeRunnerLabels') {
        labelsSent = payload(scheduled.input?.payloads?.[0]) as typeof labelsSent;
      }
      const accepted = e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input;
      if (accepted?.name === 'finalize' && finalize === null) {
        const req = payload(accepted.args?.payloads?.[0]) as FinalizeRequest | undefined;
        if (req?.checkpointName === c.name) finalize = req;
      }
    }
    return held ? { pauseSent, labelsSent, finalize } : none;
  }

  /** A new run that resumes the checkpoint: it resets the runner and unpauses it. */
  async function adopt(c: ActiveCheckpoint): Promise<ReconcileFinding['action']> {
    const t = deps.temporal!;
    const runner = deps.inventory.inventory.forReset(c.runnerId);
    if (!runner) {
      const outcome = await store.checkpoints.transition({
        checkpointId: c.id,
        from: [c.state],
        to: 'reset_failed',
        errorDetail:
          'its workflow run ended without finishing it, and the runner left the inventory',
      });
      return outcome.changed ? 'ended' : 'skipped';
    }
    const lost = await unrecorded(c);
    const now = new Date();
    if (lost.labelsSent) {
      // Logged as sent: the adopting run puts back exactly these (if GitHub removed them).
      await writeOperation(
        store.operations,
        {
          checkpointId: c.id,
          runnerId: c.runnerId,
          backend: null,
          operation: 'pause',
          key: activityKey(`recovered-pause:${c.id}`, `recovered-pause:${c.id}`),
        },
        {
          result: 'ok',
          detail: `${labelsRemovedDetail(lost.labelsSent.target, lost.labelsSent.labels, true)} (by its ended run, before Postgres recorded it: from the run's history)`,
          startedAt: now,
          finishedAt: now,
        },
      );
    } else if (lost.pauseSent && !(await store.operations.pausedByCheckpoint(c.id))) {
      await writeOperation(
        store.operations,
        {
          checkpointId: c.id,
          runnerId: c.runnerId,
          backend: null,
          operation: 'pause',
          key: activityKey(`recovered-pause:${c.id}`, `recovered-pause:${c.id}`),
        },
        {
          result: 'ok',
          detail: `its ended run sent the pause of GitLab runner ${runner.gitlab_runner_id} before Postgres recorded it (from the run's history)`,
          startedAt: now,
          finishedAt: now,
        },
      );
    }
    const input: CheckpointWorkflowInput = {
      ...checkpointInput(runner, deps.settings, deps.inventory.inventory),
      resume: {
        name: c.name,
        jobId: c.jobId,
        projectId: c.projectId,
        checkpointId: c.id,
        createdAt: new Date(c.createdAt).toISOString(),
        pollJobs: pollsJobsOf(deps, c.runnerId),
        adopted: lost.finalize
          ? {
              // The job ended (the finalize is in the run's history): reset now.
              state: 'finalize_queued',
              jobEnd: {
                status: lost.finalize.status,
                source: lost.finalize.source,
                at: now.toISOString(),
              },
            }
          : {
              state: c.state,
              jobEnd:
                c.state === 'created'
                  ? null
                  : c.finalizeStatus
                    ? {
                        status: c.finalizeStatus,
                        source: c.finalizeSource ?? 'reconciler',
                        at: new Date(c.finalizedAt ?? c.createdAt).toISOString(),
                      }
                    : 'ttl',
            },
      },
    };
    try {
      await t.client.workflow.start(CHECKPOINT_WORKFLOW, {
        workflowId: c.workflowId,
        taskQueue: t.taskQueue,
        args: [input],
        // Never displace a run: one that started meanwhile owns the runner.
        workflowIdConflictPolicy: 'FAIL',
        workflowIdReusePolicy: 'ALLOW_DUPLICATE',
        // Named from the start, as a created run names itself: operators find
        // it by checkpoint and job, and the next pass reads it without a query.
        typedSearchAttributes: [
          ...runnerSearchAttributes(runner),
          { key: SA_CHECKPOINT_NAME, value: c.name },
          { key: SA_JOB_ID, value: c.jobId },
        ],
        staticSummary: `runner ${runner.runner_id} · job ${c.jobId} · adopted by the reconciler`,
      });
      return 'adopted';
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return 'skipped';
      throw err;
    }
  }

  /**
   * How to look at and undo a pause in the runner's CI system; null when
   * there is nothing of e2epool's to undo (a GitHub pause row naming no label).
   */
  function liveRunner(
    target: PauseTarget,
    pauseDetail: string | null,
  ): {
    paused(): Promise<boolean>;
    unpause(): Promise<void>;
    pausedBy: string;
    cannotAsk: string;
    unpaused: string;
    unpausedElsewhere: string;
  } | null {
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
    const removed = labelsRemovedIn(pauseDetail);
    if (removed.length === 0) return null;
    const missing = async () => {
      const has = (await github.runnerLabels(target.scope, target.githubRunnerId)).map(
        (l) => l.name,
      );
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
   * Runners e2epool paused with no newer unpause, of runners whose CI system
   * this worker can reach, paused longer ago than the minimum age.
   */
  async function pausedCandidates(i: ReconcileInput): Promise<PausedCandidate[]> {
    const targets = new Map<string, PauseTarget>();
    for (const r of deps.inventory.inventory.runners) {
      // A draining runner stays paused on purpose (see docs/protocol.md#runner-registry): after `undrain` it is a candidate again.
      if (deps.inventory.inventory.isDraining(r.runner_id)) continue;
      const t = pauseTarget(r);
      if (t?.kind === 'gitlab' ? deps.gitlab : t?.kind === 'github' ? deps.github : null)
        targets.set(r.runner_id, t!);
    }
    const oldEnough = Date.now() - minAge(i) * 1000;
    return (await store.operations.latestPauseEvents([...targets.keys()]))
      .filter((e) => e.operation === 'pause' && new Date(e.at).getTime() < oldEnough)
      .map((e) => ({
        runnerId: e.runnerId,
        checkpointId: e.checkpointId,
        checkpointName: e.checkpointName,
        at: new Date(e.at).toISOString(),
        detail: e.detail,
        target: targets.get(e.runnerId)!,
      }));
  }

  function candidateFinding(
    c: PausedCandidate,
    action: ReconcileFinding['action'],
    detail: string,
  ) {
    return record(
      { kind: 'paused_runner', checkpoint: c.checkpointName, runnerId: c.runnerId, action, detail },
      { id: c.checkpointId, backend: null },
    );
  }

  /**
   * Whether the candidate is still e2epool's to unpause: no active
   * checkpoint holds it and its CI system says it is still paused (one
   * request). Returns the findings made on the way and, when it should be
   * unpaused now, why.
   */
  async function checkPaused(
    c: PausedCandidate,
    i: ReconcileInput,
  ): Promise<{ findings: ReconcileFinding[]; unpauseWhy: string | null }> {
    const none = { findings: [], unpauseWhy: null };
    if (await store.checkpoints.hasActive(c.runnerId)) return none; // that checkpoint's run unpauses it
    const what = describePauseTarget(c.target);
    const live = liveRunner(c.target, c.detail);
    if (!live) return none; // a GitHub pause row that names no label: nothing of e2epool's to put back
    let paused: boolean;
    try {
      paused = await live.paused();
    } catch (err) {
      return {
        findings: [
          await candidateFinding(c, 'failed', `cannot ask about ${what}: ${describeFailure(err)}`),
        ],
        unpauseWhy: null,
      };
    }
    if (!paused) {
      const now = new Date();
      await writeOperation(
        store.operations,
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
        {
          result: 'ok',
          detail: `${what} ${live.unpausedElsewhere}`,
          startedAt: now,
          finishedAt: now,
        },
      );
      return none;
    }
    const drained = (await store.operations.latestDetails([c.checkpointId], 'unpause')).get(
      c.checkpointId,
    );
    const why =
      drained && isKeptPausedForDrain(drained)
        ? `${what} was kept paused after checkpoint ${c.checkpointName} while its runner drained; it is undrained now`
        : `${what} was ${live.pausedBy} checkpoint ${c.checkpointName}, and no active checkpoint is responsible for it`;
    if (!i.repair) {
      return {
        findings: [
          await candidateFinding(
            c,
            'reported',
            `${why} (E2EPOOL_RECONCILE_REPAIR=false: not unpaused)`,
          ),
        ],
        unpauseWhy: null,
      };
    }
    return { findings: [], unpauseWhy: why };
  }

  /** Unpauses the candidate checkPaused chose and records the finding. */
  async function unpausePaused(c: PausedCandidate, why: string): Promise<ReconcileFinding> {
    const live = liveRunner(c.target, c.detail);
    if (!live) throw fail('PermanentFailure', `nothing of e2epool's to undo on ${c.runnerId}`);
    try {
      await live.unpause();
      deps.metrics.runnerPausedSeconds.inc(
        { runner_id: c.runnerId },
        Math.max(0, (Date.now() - new Date(c.at).getTime()) / 1000),
      );
      return await candidateFinding(c, 'unpaused', `${why}: ${live.unpaused}`);
    } catch (err) {
      return await candidateFinding(
        c,
        'failed',
        `${why}; unpausing it failed: ${describeFailure(err)}`,
      );
    }
  }

  return {
    /**
     * Active checkpoint rows that no open run holds (its run was terminated,
     * failed or timed out) are adopted by a new run, which resets and unpauses
     * the runner; with repair off they are only reported.
     */
    async reconcileCheckpoints(i: ReconcileInput): Promise<ReconcileFinding[]> {
      if (!deps.temporal)
        throw fail('PermanentFailure', 'this worker has no Temporal client for the reconciler');
      const findings: ReconcileFinding[] = [];
      for (const c of await store.checkpoints.listActive(minAge(i))) {
        if (await held(c)) continue;
        // A pass over many rows takes a while: the run may have finished this
        // checkpoint since the list was read (a run moves its row before it
        // closes, so a row still as listed after the look at Temporal is
        // orphaned). Adopting a finished one would fail on its row, or
        // collide with the runner's next checkpoint.
        if ((await store.checkpoints.stateOf(c.id)) !== c.state) continue;
        const action = i.repair ? await adopt(c) : 'reported';
        const detail =
          action === 'adopted'
            ? `no open run held this ${c.state} checkpoint: a new run adopted it`
            : action === 'ended'
              ? 'no open run held it and its runner left the inventory: ended reset_failed'
              : action === 'reported'
                ? `no open run holds this ${c.state} checkpoint (E2EPOOL_RECONCILE_REPAIR=false: not repaired)`
                : 'a run started for it meanwhile';
        findings.push(
          await record(
            { kind: 'orphan_checkpoint', checkpoint: c.name, runnerId: c.runnerId, action, detail },
            c,
          ),
        );
      }
      return findings;
    },

    /**
     * Runners e2epool paused (per the operation log: GitLab runners paused,
     * GitHub runners with their pause labels removed) with no active
     * checkpoint responsible for them any more are unpaused, after asking
     * their CI system that they are still paused. A pause somebody else
     * made, or one an operator's `release` left in place on purpose, is never
     * an event of e2epool's, so those runners are never touched. A runner
     * e2epool paused that somebody then unpaused is noted once
     * (`unpaused_elsewhere`). Of a GitHub runner only the labels the pause
     * row names are put back.
     *
     * Race: a new checkpoint could start between the check and the unpause,
     * but only from a caller outside CI: a paused runner gets no job.
     */
    async reconcilePausedRunners(
      i: ReconcileInput & { gitlabApart?: boolean },
    ): Promise<ReconcileFinding[]> {
      const findings: ReconcileFinding[] = [];
      const all = await pausedCandidates(i);
      const mine = i.gitlabApart ? all.filter((c) => c.target.kind !== 'gitlab') : all;
      await eachLimited(mine, LIVE_CONCURRENCY, async (c) => {
        heartbeat();
        const checked = await checkPaused(c, i);
        findings.push(...checked.findings);
        if (checked.unpauseWhy !== null) findings.push(await unpausePaused(c, checked.unpauseWhy));
      });
      return findings;
    },

    /**
     * The GitLab runners reconcilePausedRunners would look at (GITLAB_BUDGET_PATCH):
     * from Postgres only. The workflow asks GitLab about each on the GitLab
     * queue, one request per activity (checkPausedGitlabRunner, unpausePausedGitlabRunner).
     */
    async pausedGitlabCandidates(i: ReconcileInput): Promise<PausedCandidate[]> {
      return (await pausedCandidates(i)).filter((c) => c.target.kind === 'gitlab');
    },

    /** Asks GitLab whether the candidate is still paused (one request); see reconcilePausedRunners. */
    async checkPausedGitlabRunner(
      i: ReconcileInput & { candidate: PausedCandidate },
    ): Promise<{ findings: ReconcileFinding[]; unpauseWhy: string | null }> {
      return checkPaused(i.candidate, i);
    },

    /** Unpauses the candidate (one request), recording the finding; see reconcilePausedRunners. */
    async unpausePausedGitlabRunner(i: {
      candidate: PausedCandidate;
      why: string;
    }): Promise<ReconcileFinding> {
      return unpausePaused(i.candidate, i.why);
    },

    /**
     * Snapshots e2epool made (its description, naming a checkpoint of this
     * runner whose snapshot name it is) whose checkpoint has ended are
     * deleted: a reset that died before its cleanup left them. Any other
     * snapshot, including one whose description merely looks like ours, is
     * never touched.
     */
    async reconcileSnapshots(i: ReconcileInput): Promise<ReconcileFinding[]> {
      const runners = deps.inventory.inventory.runners.filter(
        (r): r is ProxmoxRunner => r.backend === 'proxmox',
      );
      const oldEnough = Date.now() - minAge(i) * 1000;
      const findings: ReconcileFinding[] = [];
      await eachLimited(runners, LIVE_CONCURRENCY, async (r) => {
        heartbeat();
        const client = proxmoxClient(r);
        let snapshots;
        try {
          snapshots = await client.listSnapshots();
        } catch (err) {
          deps.log.warn(
            { runnerId: r.runner_id, error: describeFailure(err) },
            "reconciler: cannot list the snapshots of this runner's VM",
          );
          return;
        }
        for (const s of snapshots) {
          if (!s.description?.startsWith(OURS)) continue;
          const owner = await store.checkpoints.refByName(s.description.slice(OURS.length).trim());
          if (!owner || owner.runnerId !== r.runner_id || snapshotNameFor(owner.name) !== s.name) {
            deps.log.warn(
              { runnerId: r.runner_id, snapshot: s.name },
              "reconciler: a snapshot described as e2epool's that no checkpoint of this runner made: left alone",
            );
            continue;
          }
          if (isActiveState(owner.state)) continue;
          if (owner.endedAt && new Date(owner.endedAt).getTime() >= oldEnough) continue;
          const why = `snapshot '${s.name}' of VM ${r.proxmox_vmid} on ${r.proxmox_node} outlived its checkpoint (${owner.state})`;
          const finding = (action: ReconcileFinding['action'], detail: string) =>
            record(
              {
                kind: 'orphan_snapshot',
                checkpoint: owner.name,
                runnerId: r.runner_id,
                action,
                detail,
              },
              owner,
            );
          if (!i.repair) {
            findings.push(
              await finding('reported', `${why} (E2EPOOL_RECONCILE_REPAIR=false: not deleted)`),
            );
            continue;
          }
          try {
            await runProxmoxTask(
              deps,
              client,
              () => client.deleteSnapshot(s.name),
              /does not exist/,
            );
            findings.push(await finding('deleted', `${why}: deleted`));
          } catch (err) {
            findings.push(
              await finding('failed', `${why}; deleting it failed: ${describeFailure(err)}`),
            );
          }
        }
      });
      return findings;
    },

    /**
     * Retention: finished agent commands (with their output) and the logs of
     * ended checkpoints older than E2EPOOL_RETENTION_DAYS go, in batches so no
     * statement holds many locks. With repair off nothing is deleted.
     */
    async pruneRetention(i: { repair: boolean }): Promise<{ commands: number; logs: number }> {
      if (!i.repair) return { commands: 0, logs: 0 };
      const days = deps.settings.retentionDays;
      let commands = 0;
      let logs = 0;
      for (let n = PRUNE_BATCH; n === PRUNE_BATCH; commands += n) {
        heartbeat();
        n = await store.commands.pruneFinished(days, PRUNE_BATCH);
      }
      for (let n = PRUNE_BATCH; n === PRUNE_BATCH; logs += n) {
        heartbeat();
        n = await store.operations.pruneEnded(days, PRUNE_BATCH);
      }
      // The checkpoints' own logs (step events and command output) go the same way.
      for (let n = PRUNE_BATCH; n === PRUNE_BATCH; logs += n) {
        heartbeat();
        n = await store.logs.pruneEnded(days, PRUNE_BATCH);
      }
      if (commands || logs) deps.log.info({ commands, logs, days }, 'retention: pruned old rows');
      return { commands, logs };
    },
  };
}
