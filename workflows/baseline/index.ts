export { baselineRefreshWorkflow } from './refresh';
export { baselineRolloutWorkflow } from './rollout';
