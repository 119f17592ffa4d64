/**
 * Checkpoint states: the active ones hold the runner, the others are terminal.
 * Plain data: imported by workflows, the API and the stores, so it must stay
 * free of I/O.
 */
/** States that hold the runner: at most one such checkpoint per runner. */
export const ACTIVE_STATES = ['created', 'finalize_queued', 'needs_attention'] as const;
export type ActiveState = (typeof ACTIVE_STATES)[number];

export const TERMINAL_STATES = [
  'reset',
  'deleted',
  'gc_reset',
  'reset_failed',
  'create_failed',
] as const;
export type TerminalState = (typeof TERMINAL_STATES)[number];

export const CHECKPOINT_STATES = [...ACTIVE_STATES, ...TERMINAL_STATES] as const;
export type CheckpointState = (typeof CHECKPOINT_STATES)[number];

export const FINALIZE_STATUSES = ['success', 'failure', 'canceled'] as const;
export type FinalizeStatus = (typeof FINALIZE_STATUSES)[number];

export const BACKENDS = ['proxmox', 'bare_metal'] as const;
export type Backend = (typeof BACKENDS)[number];

export function isActiveState(state: string): state is ActiveState {
  return (ACTIVE_STATES as readonly string[]).includes(state);
}

export function isTerminalState(state: string): state is TerminalState {
  return (TERMINAL_STATES as readonly string[]).includes(state);
}
