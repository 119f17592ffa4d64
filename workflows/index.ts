// Every workflow the worker registers. Bundled for the Temporal sandbox:
// only @temporalio/workflow and types may be imported (lint enforces it).
export { selfTestWorkflow } from './self-test';
export { checkpointWorkflow } from './checkpoint';
export { readinessWorkflow } from './readiness';
export { reconcileWorkflow } from './reconcile';
export { baselineRefreshWorkflow, baselineRolloutWorkflow } from './baseline';
export { runnerQuarantineWorkflow } from './quarantine';
