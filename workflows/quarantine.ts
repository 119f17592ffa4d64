/**
 * runnerQuarantineWorkflow (README, "Quarantine"): pauses a runner an
 * operator quarantined in its CI system when no checkpoint will (an idle
 * runner), so its CI system hands it no job that would get 423. Workflow id
 * `e2epool-quarantine-<runner_id>`, started by the API after each quarantine;
 * the activity checks the registry and the CI system first, so a second
 * start, or a retry, changes nothing. The unquarantine's reconciler pass
 * undoes the pause (runner_pauses: `kept_for_quarantine`).
 */
import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { NON_RETRYABLE_TYPES } from '../common/failures';

/**
 * GitLab or GitHub may be down a while: retried with backoff for an hour;
 * then the run fails (the Web UI and the worker's log say why) and a second
 * quarantine call starts it again.
 */
const { quarantineHoldRunner } = proxyActivities<Activities>({
  startToCloseTimeout: '1 minute',
  scheduleToCloseTimeout: '1 hour',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '1 minute',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
});

export async function runnerQuarantineWorkflow(input: { runnerId: string }): Promise<string> {
  setCurrentDetails(`**Quarantine of \`${input.runnerId}\`**: pausing it in its CI system`);
  const done = await quarantineHoldRunner({ runnerId: input.runnerId });
  setCurrentDetails(`**Quarantine of \`${input.runnerId}\`**: ${done}`);
  return done;
}
