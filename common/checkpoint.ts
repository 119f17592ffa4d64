/**
 * The checkpoint workflow's contract: its input, its messages and the
 * shapes that cross the workflow boundary. Plain JSON only (dates as ISO
 * strings), never secrets: workflow inputs and results are stored in history.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { Backend, CheckpointState, FinalizeStatus } from './states';
import type { VerifyMode } from './verify-mode';

/** The checkpoint object REST and the agent WebSocket answer with, field for field. */
export interface CheckpointDto {
  name: string;
  runner_id: string;
  job_id: string;
  state: CheckpointState;
  finalize_status: FinalizeStatus | null;
  finalize_source: string | null;
  created_at: string;
  finalized_at: string | null;
  /**
   * Proof of reset (docs/operators.md, "Proof of reset"): true once the reset was
   * verified, false when the check failed, null while there is no answer
   * (not reset yet, verification off, or not verifiable; `verify_detail` says).
   */
  verified: boolean | null;
  verify_detail: string | null;
}

/** What a checkpoint DTO is made of: a checkpoint row (store/checkpoints.ts), or the workflow's own. */
export interface CheckpointDtoSource {
  name: string;
  runnerId: string;
  jobId: string;
  state: CheckpointState;
  finalizeStatus: FinalizeStatus | null;
  finalizeSource: string | null;
  createdAt: Date;
  finalizedAt: Date | null;
  /** Unset (a source that predates verification): null. */
  verified?: boolean | null;
  verifyDetail?: string | null;
}

/** The one mapping of a checkpoint to the DTO REST and the agent WebSocket answer with. */
export function checkpointDto(c: CheckpointDtoSource): CheckpointDto {
  return {
    name: c.name,
    runner_id: c.runnerId,
    job_id: c.jobId,
    state: c.state,
    finalize_status: c.finalizeStatus,
    finalize_source: c.finalizeSource,
    created_at: c.createdAt.toISOString(),
    finalized_at: c.finalizedAt ? c.finalizedAt.toISOString() : null,
    verified: c.verified ?? null,
    verify_detail: c.verifyDetail ?? null,
  };
}

/**
 * The durations the workflow itself reads (seconds), from the settings of the
 * API that starts it. Activities read theirs (readiness, command and Proxmox
 * task timeouts) from the worker's settings; whether a job is polled is the
 * worker's decision too (recordCheckpoint answers it).
 */
export interface CheckpointTiming {
  ttlSeconds: number;
  pollerIntervalSeconds: number;
  pollerMinAgeSeconds: number;
  cooldownSeconds: number;
  /** How long a hook finalize waits for the GitLab pause before answering anyway. */
  finalizeAckSeconds: number;
  /** Attempts of each reset step before the checkpoint needs an operator. */
  resetMaxAttempts: number;
  /** How often an unpause the CI system refused is tried again. */
  unpauseRetrySeconds: number;
}

/** Where a GitHub self-hosted runner is registered: a repository (owner/name) or an organization. */
export type GitHubRunnerScope = { repo: string } | { org: string };

/**
 * How the CI system is kept from giving the runner a job during a reset.
 * GitLab: the runner is paused. GitHub has no pause for self-hosted runners:
 * the custom `labels` the e2e jobs select it by are removed, then restored.
 */
export type PauseTarget =
  | { kind: 'gitlab'; gitlabRunnerId: number }
  | { kind: 'github'; githubRunnerId: number; scope: GitHubRunnerScope; labels: string[] };

/** Non-secret facts about the runner, fixed for the life of one checkpoint. */
export interface RunnerPlan {
  runnerId: string;
  backend: Backend;
  /** What keeps jobs off the runner during a reset, in GitLab or GitHub; null: nothing. */
  pause: PauseTarget | null;
  resetOnSuccess: boolean;
  /**
   * After a failed job, keep the runner paused and un-reset this long for
   * debugging (`hold_on_failure_seconds`; 0: no hold).
   */
  holdOnFailureSeconds: number;
  /**
   * New in 1.1.0 (absent in older inputs: no proof, per-job snapshots).
   * Proxmox: the golden baseline every reset rolls back to; absent: a
   * snapshot per checkpoint.
   */
  baselineSnapshot?: string;
  /** The effective proof of reset (config/runner-schema.ts verifyModeOf). */
  verifyReset?: VerifyResetMode;
  /** Proxmox: where the canary nonce is written in the guest. */
  canaryPath?: string;
}

/** How a reset is proven (the runner field `verify_reset`, defaults resolved: verify-mode.ts). */
export type VerifyResetMode = VerifyMode;

export interface CheckpointWorkflowInput {
  runner: RunnerPlan;
  timing: CheckpointTiming;
  /** Set when a waiting checkpoint continues as a new run (long TTLs grow the history). */
  resume?: ResumedCheckpoint;
}

/** A created checkpoint still waiting for its job, carried into a new run. */
export interface ResumedCheckpoint {
  name: string;
  jobId: string;
  projectId: string | null;
  checkpointId: number;
  createdAt: string;
  /** Whether the worker polls the CI system for this job's end. */
  pollJobs: boolean;
  /**
   * Set when the reconciler adopts a checkpoint whose run ended without
   * finishing it: the row's state, and how its job ended if that is known.
   */
  adopted?: {
    state: 'created' | 'finalize_queued' | 'needs_attention';
    jobEnd: { status: FinalizeStatus; source: string; at: string } | 'ttl' | null;
  };
}

/**
 * The memo a checkpoint run keeps of what it did before the Postgres write
 * that records it: a run pauses the runner, and accepts a finalize, before
 * its first write (so both work while Postgres is down). Each entry is set
 * just before the act and names the checkpoint. The reconciler reads it
 * (describe) when it adopts a checkpoint whose run ended before that write.
 */
export interface CheckpointMemo {
  /** Set just before the pause is sent: what is paused (GitHub: the labels being removed). */
  pause?: { checkpoint: string; target: PauseTarget; labels: string[] };
  /** Set when the run accepts a finalize. */
  finalize?: { checkpoint: string; status: FinalizeStatus; source: string };
}

export interface CreateRequest {
  jobId: string;
  caller: string | null;
  projectId: string | null;
  /**
   * ISO instant after which nobody waits for this create: the run compensates
   * it and answers BackendTimeout.
   */
  deadline: string;
}

/**
 * The pause step's log detail once a pause request was sent, for operators.
 * Nothing reads it back: runner_pauses (state `sent`) is the record.
 */
export const PAUSE_SENT = 'pause request sent';

/**
 * The unpause step's log detail for a draining runner (see docs/protocol.md#runner-registry): it stays
 * paused (runner_pauses state `kept_for_drain`), and the reconciler unpauses it after `undrain`.
 */
export function keptPausedForDrain(runnerId: string, what: string): string {
  return `runner '${runnerId}' is draining: ${what} stays paused until it is undrained`;
}

/**
 * The unpause step's log detail for a quarantined runner (see docs/protocol.md#runner-registry): it
 * stays paused (runner_pauses state `kept_for_quarantine`), and the reconciler unpauses it after
 * `unquarantine`.
 */
export function keptPausedForQuarantine(runnerId: string, what: string): string {
  return `runner '${runnerId}' is quarantined: ${what} stays paused until it is unquarantined`;
}

/** The target as operators read it: `GitLab runner 42`, `GitHub runner 7 of o/r`. */
export function describePauseTarget(t: PauseTarget): string {
  if (t.kind === 'gitlab') return `GitLab runner ${t.gitlabRunnerId}`;
  const where = 'repo' in t.scope ? t.scope.repo : `organization ${t.scope.org}`;
  return `GitHub runner ${t.githubRunnerId} of ${where}`;
}

/** A GitHub pause target: a runner and the labels its e2e jobs select it by. */
export type GitHubPauseTarget = Extract<PauseTarget, { kind: 'github' }>;

/**
 * The detail of a GitHub `pause` log row, for operators: the labels e2epool
 * removed (or, `sent`, asked GitHub to remove without hearing back). Which
 * labels are e2epool's to put back is runner_pauses.labels, never this text.
 */
export function labelsRemovedDetail(
  target: GitHubPauseTarget,
  labels: string[],
  sent = false,
): string {
  const what = `labels ${JSON.stringify(labels)} from ${describePauseTarget(target)}`;
  return sent ? `${PAUSE_SENT}: remove ${what}` : `removed ${what}`;
}

/** The `hold` operation-log note (and the run's current details) when a hold for debugging starts. */
export function holdStartedNote(untilIso: string): string {
  return `held for debugging until ${untilIso}; signal release-hold to reset now`;
}

/** The `hold` note when `release-hold` ends a hold early. */
export function holdReleasedNote(untilIso: string): string {
  return `release-hold: the hold ended early (it was to last until ${untilIso}); resetting now`;
}

export interface FinalizeRequest {
  checkpointName: string;
  status: FinalizeStatus;
  source: string;
}

export type FinalizeReply =
  | { detail: 'Finalize queued'; checkpoint_name: string }
  | { detail: 'Already finalized'; state: CheckpointState };

/** What `temporal workflow query --type state` shows: the live view. */
export interface CheckpointView {
  phase:
    | 'waiting_for_create'
    | 'creating'
    | 'waiting_for_job'
    | 'finalizing'
    | 'held'
    | 'needs_attention'
    | 'cooldown'
    | 'done';
  state: CheckpointState | null;
  name: string | null;
  runnerId: string;
  jobId: string | null;
  backend: Backend;
  finalizeStatus: FinalizeStatus | null;
  finalizeSource: string | null;
  runnerPaused: boolean;
  resetRounds: number;
  lastError: string | null;
  /** ISO instant a hold for debugging ends (phase `held`); null when the runner is not held. */
  heldUntil: string | null;
  /** Proof of reset (the last round's answer; null: none yet, or not verifiable). */
  verified?: boolean | null;
  verifyDetail?: string | null;
}

/** How a checkpoint workflow run ended. */
export interface CheckpointOutcome {
  name: string | null;
  state: CheckpointState | null;
}

export const CHECKPOINT_WORKFLOW = 'checkpointWorkflow';

/** One workflow id per runner: Temporal's id uniqueness makes "one active checkpoint per runner" atomic. */
export function checkpointWorkflowId(runnerId: string): string {
  return `e2epool-runner-${runnerId}`;
}

export const createUpdate = defineUpdate<CheckpointDto, [CreateRequest]>('create');
export const finalizeUpdate = defineUpdate<FinalizeReply, [FinalizeRequest]>('finalize');
/** Operator: run the reset of a `needs_attention` checkpoint again. */
export const retrySignal = defineSignal<[]>('retry');
/** Operator: give up on a `needs_attention` checkpoint: unpause, end as `reset_failed`. */
export const releaseSignal = defineSignal<[]>('release');
/** Operator: end a hold for debugging now (phase `held`): reset and unpause the runner. */
export const releaseHoldSignal = defineSignal<[]>('release-hold');
export const stateQuery = defineQuery<CheckpointView>('state');

/** Proxmox snapshot names: letter first, letters/digits/_/-, 2-40 characters. */
const PROXMOX_SNAPNAME_RE = /^[A-Za-z][A-Za-z0-9_-]{1,39}$/;

/**
 * The Proxmox snapshot name for a checkpoint: the checkpoint name itself when
 * Proxmox accepts it (as the Python implementation did), else a derived one.
 */
export function snapshotNameFor(checkpointName: string): string {
  if (PROXMOX_SNAPNAME_RE.test(checkpointName)) return checkpointName;
  const m = /-(\d+)-([0-9a-f]{8})$/.exec(checkpointName);
  return m
    ? `e2epool-${m[1]}-${m[2]}`
    : `e2epool-${checkpointName.replace(/[^A-Za-z0-9_-]/g, '').slice(-31)}`;
}

/** Description marking a snapshot as e2epool's (same text as the Python implementation). */
export function snapshotDescription(checkpointName: string): string {
  return `e2epool checkpoint ${checkpointName}`;
}
