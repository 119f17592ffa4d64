import { InitialSchema1795305600000 } from './1795305600000-InitialSchema';
import { AgentSessions1795392000000 } from './1795392000000-AgentSessions';
import { AgentCommandExpiry1795478400000 } from './1795478400000-AgentCommandExpiry';
import { OperationLogPauseEvents1795564800000 } from './1795564800000-OperationLogPauseEvents';
import { CheckpointLogs1795651200000 } from './1795651200000-CheckpointLogs';
import { AgentSessionClosedAt1795737600000 } from './1795737600000-AgentSessionClosedAt';
import { RunnerRegistry1795824000000 } from './1795824000000-RunnerRegistry';
import { AgentTokens1795910400000 } from './1795910400000-AgentTokens';
import { RunnerPausesHeldUntil1795996800000 } from './1795996800000-RunnerPausesHeldUntil';
import { RunnerQuarantine1796083200000 } from './1796083200000-RunnerQuarantine';
import { CheckpointVerification1796097600000 } from './1796097600000-CheckpointVerification';
import { RunnerCurrentBaseline1796184000000 } from './1796184000000-RunnerCurrentBaseline';
import { RunnerState1796270400000 } from './1796270400000-RunnerState';

/** Every migration, oldest first. Listed explicitly so bundlers and tsc see them. */
export const MIGRATIONS = [
  InitialSchema1795305600000,
  AgentSessions1795392000000,
  AgentCommandExpiry1795478400000,
  OperationLogPauseEvents1795564800000,
  CheckpointLogs1795651200000,
  AgentSessionClosedAt1795737600000,
  RunnerRegistry1795824000000,
  AgentTokens1795910400000,
  RunnerPausesHeldUntil1795996800000,
  RunnerQuarantine1796083200000,
  CheckpointVerification1796097600000,
  RunnerCurrentBaseline1796184000000,
  RunnerState1796270400000,
];
