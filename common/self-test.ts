/** Input and result of the self-test workflow (`e2epool selftest`). */
export interface SelfTestInput {
  probeId: string;
}

export interface SelfTestResult {
  probeId: string;
  database: string;
  serverTime: string;
  appliedMigrations: number;
  runners: number;
}

export const SELF_TEST_WORKFLOW = 'selfTestWorkflow';
