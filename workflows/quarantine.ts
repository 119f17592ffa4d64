/**
 * runnerQuarantineWorkflow (docs/operators.md, "Quarantine"): pauses a runner an
 * operator quarantined in its CI system when no checkpoint will (an idle
 * runner), so its CI system hands it no job that would get 423. Workflow id
 * `e2epool-quarantine-<runner_id>`, started by the API after each quarantine;
 * the activity checks the registry and the CI system first, so a second
 * start, or a retry, changes nothing. The unquarantine's reconciler pass
 * undoes the pause (runner_pauses: `kept_for_quarantine`).
 */
import { proxyActivities, setCurrentDetails, type ActivityOptions } from '@temporalio/workflow';
import type { Activities } from '../activities';
import { NON_RETRYABLE_TYPES } from '../common/failures';
import { GITLAB_PRIORITY } from '../common/gitlab-budget';
import { gitlabBudget } from './checkpoint/activities';

/**
 * GitLab or GitHub may be down a while: retried with backoff for an hour
 * (waits for the GitLab budget included); then the run fails (the Web UI and
 * the worker's log say why) and a second quarantine call starts it again.
 */
const HOLD: ActivityOptions = {
  startToCloseTimeout: '1 minute',
  scheduleToCloseTimeout: '1 hour',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '1 minute',
    nonRetryableErrorTypes: NON_RETRYABLE_TYPES,
  },
};

/**
 * The hold's activity on the GitLab budget (common/gitlab-budget.ts) at a
 * reset's priority: until the pause lands, GitLab may hand the quarantined
 * runner jobs that meet 423, the hazard a reset's pause guards against.
 * New in 2.0.0 (no 1.1 history has it): ungated.
 */
function holder() {
  return proxyActivities<Activities>({ ...HOLD, ...gitlabBudget(GITLAB_PRIORITY.reset) });
}

export async function runnerQuarantineWorkflow(input: { runnerId: string }): Promise<string> {
  setCurrentDetails(`**Quarantine of \`${input.runnerId}\`**: pausing it in its CI system`);
  const done = await holder().quarantineHoldRunner({ runnerId: input.runnerId });
  setCurrentDetails(`**Quarantine of \`${input.runnerId}\`**: ${done}`);
  return done;
}
