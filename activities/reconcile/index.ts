import { createStore } from '../../store';
import type { ActivityDeps } from '../deps';
import { orphanCheckpointActivities } from './orphan-checkpoints';
import { orphanSnapshotActivities } from './orphan-snapshots';
import { pausedRunnerActivities } from './paused-runners';
import { findingRecorder, type ReconcileContext } from './record';
import { retentionActivities } from './retention';

export {
  RECONCILE_MIN_AGE_SECONDS,
  type PausedCandidate,
  type ReconcileFinding,
  type ReconcileInput,
} from './record';

/**
 * The reconciler's comparisons of what Postgres believes with what Temporal
 * and the live systems run, one module per kind of finding; each repair is a
 * compare-and-set and leaves a `reconcile:<kind>` row in the checkpoint's
 * operation log. The keys of the returned object are activity names that
 * workflows/reconcile.ts calls and recorded histories name: never rename them.
 */
export function reconcileActivities(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);
  const ctx: ReconcileContext = { deps, store, record: findingRecorder(deps, store) };
  return {
    ...orphanCheckpointActivities(ctx),
    ...pausedRunnerActivities(ctx),
    ...orphanSnapshotActivities(ctx),
    ...retentionActivities(ctx),
  };
}
