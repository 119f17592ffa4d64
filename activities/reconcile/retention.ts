import { heartbeat } from '../context';
import type { ReconcileContext } from './record';

/** Rows deleted per statement by retention. */
const PRUNE_BATCH = 1000;

export function retentionActivities({ deps, store }: ReconcileContext) {
  return {
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
