import { condition, defineUpdate, proxyActivities, setHandler } from '@temporalio/workflow';
import type * as acts from './baseline-activities';

const { noop } = proxyActivities<typeof acts>({ startToCloseTimeout: '30 seconds' });

export const baselineCreate = defineUpdate<string, [string]>('create');
export const baselineFinalize = defineUpdate<string, [string]>('finalize');

/**
 * The baseline: the checkpoint workflow's message pattern (update-with-start
 * "create" that runs one activity and answers, then an update "finalize")
 * and the same number of activities, each doing nothing.
 */
export async function baselineWorkflow(): Promise<string> {
  let name: string | null = null;
  let finalized = false;
  setHandler(baselineCreate, async (jobId: string) => {
    name = `job-${jobId}`;
    await noop();
    return name;
  });
  setHandler(baselineFinalize, async () => {
    finalized = true;
    return 'Finalize queued';
  });
  await condition(() => finalized);
  for (let i = 0; i < 5; i++) await noop();
  return name!;
}
