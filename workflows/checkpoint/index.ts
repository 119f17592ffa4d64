export { checkpointWorkflow } from './workflow';
