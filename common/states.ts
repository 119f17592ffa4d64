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

/**
 * Other spellings `e2epool finalize --status` accepts, sent as the canonical
 * status: GitLab's $CI_JOB_STATUS `failed`, GitHub's `cancelled` (its
 * job.status spells it so). REST and the agent WebSocket take the canonical
 * values only (the external contract's enum), so older agents and the Python
 * controller see nothing new.
 */
export const FINALIZE_STATUS_ALIASES = { failed: 'failure', cancelled: 'canceled' } as const;

/** The canonical finalize status of an accepted spelling; undefined for anything else. */
export function canonicalFinalizeStatus(value: unknown): FinalizeStatus | undefined {
  if (typeof value !== 'string') return undefined;
  if ((FINALIZE_STATUSES as readonly string[]).includes(value)) return value as FinalizeStatus;
  return Object.prototype.hasOwnProperty.call(FINALIZE_STATUS_ALIASES, value)
    ? FINALIZE_STATUS_ALIASES[value as keyof typeof FINALIZE_STATUS_ALIASES]
    : undefined;
}

export const BACKENDS = ['proxmox', 'bare_metal'] as const;
export type Backend = (typeof BACKENDS)[number];

export function isActiveState(state: string): state is ActiveState {
  return (ACTIVE_STATES as readonly string[]).includes(state);
}

export function isTerminalState(state: string): state is TerminalState {
  return (TERMINAL_STATES as readonly string[]).includes(state);
}
