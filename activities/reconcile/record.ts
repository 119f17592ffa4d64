import type { PauseTarget } from '../../common/checkpoint';
import type { Backend } from '../../common/states';
import type { Store } from '../../store';
import type { OperationResult } from '../../store/operation-log';
import type { ActivityDeps } from '../deps';
import { activityKey, writeOperation } from '../operation-log';

/** A checkpoint this young may still be in its create: the reconciler leaves it alone. */
export const RECONCILE_MIN_AGE_SECONDS = 30;

/** Live systems asked at once by one pass (GitLab, Proxmox hosts). */
export const LIVE_CONCURRENCY = 8;

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
  /** When the pause began (ISO). */
  at: string;
  /** GitHub: the labels e2epool removed, to put back (runner_pauses.labels). */
  labels: string[];
  /** The run's unpause left it paused because the runner drained (runner_pauses state kept_for_drain). */
  keptForDrain: boolean;
  /** The same because the runner was quarantined (kept_for_quarantine); absent in older histories. */
  keptForQuarantine?: boolean;
  target: PauseTarget;
}

export interface ReconcileFinding {
  kind: 'orphan_checkpoint' | 'paused_runner' | 'orphan_snapshot';
  checkpoint: string;
  runnerId: string;
  action: 'adopted' | 'ended' | 'unpaused' | 'deleted' | 'reported' | 'skipped' | 'failed';
  detail: string;
}

/** Logs the finding in its checkpoint's operation log and the worker's log; returns it. */
export type RecordFinding = (
  f: ReconcileFinding,
  c: { id: number; backend: Backend | null },
) => Promise<ReconcileFinding>;

/** What every kind of finding's activities share within one worker. */
export interface ReconcileContext {
  deps: ActivityDeps;
  store: Store;
  record: RecordFinding;
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

export const minAge = (i: ReconcileInput) => i.minAgeSeconds ?? RECONCILE_MIN_AGE_SECONDS;

/**
 * Each finding leaves a `reconcile:<kind>` row in its checkpoint's operation
 * log (keyed by the activity call, so a retry rewrites the same row) and a
 * line in the worker's log.
 */
export function findingRecorder(deps: ActivityDeps, store: Store): RecordFinding {
  return async (f, c) => {
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
  };
}
