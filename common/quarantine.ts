/**
 * The quarantine's workflow (docs/operators.md, "Quarantine"): names shared by the API
 * and the worker. Import-free, so workflows may use it.
 */

export const RUNNER_QUARANTINE_WORKFLOW = 'runnerQuarantineWorkflow';

/** The quarantine workflow of a runner: one at a time; a start while one runs joins it. */
export function quarantineWorkflowId(runnerId: string): string {
  return `e2epool-quarantine-${runnerId}`;
}
