/**
 * Every failure type e2epool raises, in one table: how it is classified and
 * what a caller sees. Plain data that imports nothing: the workflow sandbox,
 * the controller and the lazy-loading agent CLI all read it.
 *
 * Kinds (decided where the failure is thrown, never re-derived from its text):
 * - transient: an activity retries it with backoff (a server may set the delay);
 * - permanent: no retry can fix it; the activity fails at once (non-retryable);
 * - conflict: the request clashes with existing state; not retried, and an
 *   operator may need to look.
 *
 * What callers see: the types the checkpoint workflow raises to its callers
 * become the service's domain errors (service/checkpoint-service.ts
 * WORKFLOW_REFUSALS), answered with one number on REST and the agent
 * WebSocket (service/errors.ts); the agent CLI prints an error reply's
 * detail and exits with `exitCodeForRefusal` of its code. The other types never reach a
 * caller as such: the workflow turns them into one of those (a failed create
 * is `BackendUnavailable`, a timed-out one `BackendTimeout`), or an operator
 * sees them in the operation log and the workflow's `lastError`.
 */
export type FailureKind = 'transient' | 'permanent' | 'conflict';

export interface FailureSpec {
  kind: FailureKind;
  meaning: string;
}

export const FAILURES = {
  // ---- raised by activities --------------------------------------------------
  PermanentFailure: {
    kind: 'permanent',
    meaning: 'a backend refused for good (credentials, permission, missing VM or snapshot)',
  },
  RunnerNotInInventory: {
    kind: 'permanent',
    meaning: 'the runner left the inventory (or changed backend) while its checkpoint ran',
  },
  ResetNotVerified: {
    kind: 'permanent',
    meaning:
      'the proof of reset failed (the machine may not be clean: the runner is quarantined), or none could be had and verify_reset is required',
  },
  StateConflict: {
    kind: 'conflict',
    meaning: 'the checkpoint row is not in the state the workflow expected (changed by hand?)',
  },
  CommandFailed: { kind: 'transient', meaning: 'reset_cmd or cleanup_cmd exited non-zero' },
  NotReady: { kind: 'transient', meaning: 'the runner did not pass readiness in time' },
  Cancelled: { kind: 'transient', meaning: 'the activity was asked to stop' },
  AgentNotConnected: { kind: 'transient', meaning: 'no agent connected for the runner' },
  AgentTimeout: { kind: 'transient', meaning: 'the agent did not answer a command in time' },
  GuestAgentUnavailable: {
    kind: 'permanent',
    meaning:
      'the QEMU guest agent did not answer (option not enabled, qemu-ga not running, or the VM is off): the reset cannot be verified, which is never the same as verified',
  },
  ProxmoxLocked: { kind: 'transient', meaning: 'the VM is locked by another Proxmox task' },
  ProxmoxUnavailable: { kind: 'transient', meaning: 'Proxmox did not answer, or answered 5xx' },
  GitLabUnavailable: { kind: 'transient', meaning: 'GitLab did not answer, or answered 5xx' },
  PauseCheckFailed: {
    kind: 'transient',
    meaning:
      'GitLab could not say whether the runner is paused (GitHub: which labels it has), so the pause was not sent',
  },
  GitLabRateLimited: {
    kind: 'transient',
    meaning: 'GitLab answered 429 (retried after Retry-After)',
  },
  GitHubUnavailable: { kind: 'transient', meaning: 'GitHub did not answer, or answered 5xx' },
  GitHubRateLimited: {
    kind: 'transient',
    meaning:
      'GitHub answered 403 or 429 for a rate limit (retried after retry-after, or when x-ratelimit-reset comes)',
  },
  BackendTimeout: {
    kind: 'transient',
    meaning: 'a backend call or task took too long; as a create answer: the snapshot timed out',
  },

  // ---- raised by the checkpoint workflow to its callers -----------------------
  BackendUnavailable: {
    kind: 'permanent',
    meaning: 'the checkpoint could not be created (its compensation ran)',
  },
  CheckpointConflict: {
    kind: 'conflict',
    meaning: 'the runner already holds an active checkpoint',
  },
  CooldownActive: {
    kind: 'conflict',
    meaning: 'the runner finished a checkpoint moments ago',
  },
  CheckpointNotActive: {
    kind: 'conflict',
    meaning: 'finalize for a checkpoint this workflow run does not hold',
  },
  InvalidRequest: { kind: 'permanent', meaning: 'a request the workflow cannot take' },
  RunClosing: {
    kind: 'transient',
    meaning: 'the runner’s previous run is closing; the API retries the create',
  },
} as const satisfies Record<string, FailureSpec>;

export type FailureType = keyof typeof FAILURES;

/** Types an activity must not retry: pass as `nonRetryableErrorTypes`. */
export const NON_RETRYABLE_TYPES: FailureType[] = (Object.keys(FAILURES) as FailureType[]).filter(
  (t) => FAILURES[t].kind !== 'transient',
);

export function isFailureType(t: unknown): t is FailureType {
  return typeof t === 'string' && Object.prototype.hasOwnProperty.call(FAILURES, t);
}

/**
 * Exit codes of every `e2epool` command (docs/reference.md, "Command line: output and exit codes"). The agent
 * commands keep the Python original's contract (0 success, 1 error, 2 agent
 * not running): CI scripts written for it keep working. 2 is also a usage
 * error, as with the original's argparse; a third code for "agent not
 * running" would break those scripts, so there is none. 75 and 78 are
 * sysexits.h's EX_TEMPFAIL and EX_CONFIG.
 */
export const CLI_EXIT = {
  ok: 0,
  /** Any error reply from the controller (its detail is printed), or a local error. */
  error: 1,
  /** The agent is not running (no socket, or connection refused). */
  agentNotRunning: 2,
  /** The command was called wrong (unknown flag, missing or bad value); nothing was done. */
  usage: 2,
  /**
   * A refusal that asking again later may turn into a success: a cooldown
   * still on after `create --wait`, the runner busy with another checkpoint
   * (409 on create), draining or quarantined (423), the controller or the
   * agent's link to it unavailable (503). The Python original exited 1 here.
   */
  temporary: 75,
  /** A configuration error (a setting, the inventory, the database schema behind): fix it, do not retry. */
  config: 78,
  /** Stopped by Ctrl-C (SIGINT), as a shell reports it: `e2epool logs --follow`. */
  interrupted: 130,
} as const;

/**
 * The exit code for an error answer with wire code `code` (REST status or the
 * agent's `error.code`) to a request of kind `request`: CLI_EXIT.temporary for
 * the refusals listed there, CLI_EXIT.error otherwise. A 409 is temporary
 * only for a create (another checkpoint holds the runner); a 409 on a
 * finalize or an admin action is a state clash that waiting does not fix.
 */
export function exitCodeForRefusal(code: number, request?: string): number {
  if (code === 423 || code === 429 || code === 503) return CLI_EXIT.temporary;
  if (code === 409 && request === 'create') return CLI_EXIT.temporary;
  return CLI_EXIT.error;
}
