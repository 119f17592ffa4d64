/** Outcome of one step in `operation_logs` (the values its CHECK constraint allows). */
export type OperationResult = 'running' | 'ok' | 'error' | 'skipped';
