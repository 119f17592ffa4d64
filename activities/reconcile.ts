import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import {
  CHECKPOINT_WORKFLOW,
  stateQuery,
  type CheckpointWorkflowInput,
} from '../common/checkpoint';
import { fail } from '../common/fail';
import { checkpointInput, runnerSearchAttributes } from '../config/checkpoint-input';
import { createStore } from '../store';
import type { ActiveCheckpoint } from '../store/checkpoints';
import { heartbeat } from './context';
import type { ActivityDeps } from './deps';
import { activityKey, writeOperation } from './operation-log';

/** Rows deleted per statement by retention. */
const PRUNE_BATCH = 1000;

/** A checkpoint this young may still be in its create: the reconciler leaves it alone. */
export const RECONCILE_MIN_AGE_SECONDS = 30;

export interface ReconcileInput {
  repair: boolean;
  /** Leave younger checkpoints alone (default RECONCILE_MIN_AGE_SECONDS). */
  minAgeSeconds?: number;
}

export interface ReconcileFinding {
  kind: 'orphan_checkpoint';
  checkpoint: string;
  runnerId: string;
  action: 'adopted' | 'ended' | 'reported' | 'skipped';
  detail: string;
}

/**
 * The reconciler's comparisons of what Postgres believes with what Temporal
 * runs; each repair is a compare-and-set and leaves a `reconcile:<kind>` row
 * in the checkpoint's operation log.
 */
export function reconcileActivities(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);

  /** Whether an open run of the checkpoint's workflow holds it. */
  async function held(c: ActiveCheckpoint): Promise<boolean> {
    const t = deps.temporal!;
    const handle = t.client.workflow.getHandle(c.workflowId);
    try {
      const d = await handle.describe();
      if (d.status.name !== 'RUNNING') return false;
      return (await handle.query(stateQuery)).name === c.name;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  }

  /** A new run that resumes the checkpoint: it resets the runner and unpauses it. */
  async function adopt(c: ActiveCheckpoint): Promise<ReconcileFinding['action']> {
    const t = deps.temporal!;
    const runner = deps.inventory.inventory.get(c.runnerId);
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
    const input: CheckpointWorkflowInput = {
      ...checkpointInput(runner, deps.settings),
      resume: {
        name: c.name,
        jobId: c.jobId,
        projectId: c.projectId,
        checkpointId: c.id,
        createdAt: new Date(c.createdAt).toISOString(),
        pollJobs: deps.gitlab !== null && deps.settings.pollerEnabled,
        adopted: {
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
        typedSearchAttributes: runnerSearchAttributes(runner),
        staticSummary: `runner ${runner.runner_id} · job ${c.jobId} · adopted by the reconciler`,
      });
      return 'adopted';
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return 'skipped';
      throw err;
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
      for (const c of await store.checkpoints.listActive(
        i.minAgeSeconds ?? RECONCILE_MIN_AGE_SECONDS,
      )) {
        if (await held(c)) continue;
        const action = i.repair ? await adopt(c) : 'reported';
        const detail =
          action === 'adopted'
            ? `no open run held this ${c.state} checkpoint: a new run adopted it`
            : action === 'ended'
              ? 'no open run held it and its runner left the inventory: ended reset_failed'
              : action === 'reported'
                ? `no open run holds this ${c.state} checkpoint (E2EPOOL_RECONCILE_REPAIR=false: not repaired)`
                : 'a run started for it meanwhile';
        const now = new Date();
        await writeOperation(
          store.operations,
          {
            checkpointId: c.id,
            runnerId: c.runnerId,
            backend: c.backend,
            operation: 'reconcile:orphan_checkpoint',
            key: activityKey(`reconcile:${c.id}`, `reconcile:${c.id}:${now.getTime()}`),
          },
          {
            result: action === 'reported' || action === 'skipped' ? 'skipped' : 'ok',
            detail,
            startedAt: now,
            finishedAt: now,
          },
        );
        deps.log.warn({ checkpoint: c.name, runnerId: c.runnerId, action }, detail);
        findings.push({
          kind: 'orphan_checkpoint',
          checkpoint: c.name,
          runnerId: c.runnerId,
          action,
          detail,
        });
      }
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
      if (commands || logs) deps.log.info({ commands, logs, days }, 'retention: pruned old rows');
      return { commands, logs };
    },
  };
}
