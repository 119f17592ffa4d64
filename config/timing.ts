import type { CheckpointTiming } from '../common/checkpoint';
import type { Settings } from './settings';

/** The durations a checkpoint workflow reads, from the settings of the process that starts it. */
export function checkpointTiming(s: Settings): CheckpointTiming {
  return {
    ttlSeconds: s.checkpointTtlSeconds,
    pollerIntervalSeconds: s.pollerIntervalSeconds,
    pollerMinAgeSeconds: s.pollerMinAgeSeconds,
    cooldownSeconds: s.finalizeCooldownSeconds,
    unpauseRetrySeconds: s.unpauseRetrySeconds,
    finalizeAckSeconds: s.finalizeAckSeconds,
    resetMaxAttempts: s.resetMaxAttempts,
  };
}
