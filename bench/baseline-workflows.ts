import {
  condition,
  defineUpdate,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
} from '@temporalio/workflow';
import type * as acts from './baseline-activities';

/** The same options as the checkpoint workflow's bookkeeping (`records`) and reset steps. */
const local = proxyLocalActivities<typeof acts>({
  startToCloseTimeout: '30 seconds',
  localRetryThreshold: '10 seconds',
});
const remote = proxyActivities<typeof acts>({
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '15 seconds',
});

export const baselineCreate = defineUpdate<string, [string]>('create');
export const baselineFinalize = defineUpdate<string, [string]>('finalize');

/**
 * How the baseline runs its activities: `remote` every one an ordinary
 * (task-queue) activity, the engine floor the bench's targets are set
 * against; `same` of the same kinds as the checkpoint workflow's (its
 * Postgres bookkeeping is local activities), which leaves only e2epool's
 * own cost (API, Postgres, its workflow code) in the ratio.
 */
export type BaselineKinds = 'remote' | 'same';

/**
 * The baseline: the checkpoint workflow's message pattern on a bare-metal
 * runner (update-with-start "create" that runs one activity and answers,
 * then an update "finalize") and as many activities, each doing nothing:
 * the create's record, the job end's bookkeeping, two reset steps (reset
 * command, readiness), the terminal state.
 */
export async function baselineWorkflow(kinds: BaselineKinds = 'remote'): Promise<string> {
  const bookkeeping = kinds === 'same' ? local : remote;
  let name: string | null = null;
  let finalized = false;
  setHandler(baselineCreate, async (jobId: string) => {
    name = `job-${jobId}`;
    await bookkeeping.noop();
    return name;
  });
  setHandler(baselineFinalize, async () => {
    finalized = true;
    return 'Finalize queued';
  });
  await condition(() => finalized);
  await bookkeeping.noop();
  await remote.noop();
  await remote.noop();
  await bookkeeping.noop();
  return name!;
}
