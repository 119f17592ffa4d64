/**
 * The state of one checkpoint workflow run, with its DTO (what REST and the
 * agent see), its view (what the `state` query shows operators) and its
 * current details (what the Temporal Web UI shows).
 */
import { setCurrentDetails, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type {
  CheckpointDto,
  CheckpointView,
  CheckpointWorkflowInput,
  ResumedCheckpoint,
  RunnerPlan,
} from '../../common/checkpoint';
import { checkpointDto } from '../../common/checkpoint';
import { SA_STATE } from '../../common/search-attributes';
import type { CheckpointState, FinalizeStatus } from '../../common/states';
import type { JobEndPath } from '../../activities/metrics';
import type { StepInput } from '../../activities/operation-log';
import type { TransitionRequest } from '../../activities/records';
import { records } from './activities';

/** The checkpoint this run holds: claimed by the create handler before its first await. */
export interface HeldCheckpoint {
  name: string;
  jobId: string;
  projectId: string | null;
  createdAt: Date;
  /** The Postgres row; null until recordCheckpoint answered. */
  id: number | null;
  /** Whether the worker polls GitLab for this job's end (decided when the row is recorded). */
  pollJobs: boolean;
}

/** Search attributes to upsert, as key-value pairs. */
export type SearchAttributePairs = Extract<Parameters<typeof upsertSearchAttributes>[0], unknown[]>;

/** How the job ended: a finalize or the poller saw a status, or the TTL ran out. */
export type JobEnd = { status: FinalizeStatus; source: string; at: Date } | 'ttl';

/** Longest error text the current details show (the `state` query has all of it). */
const DETAILS_ERROR_MAX = 300;

function clip(s: string): string {
  return s.length > DETAILS_ERROR_MAX ? `${s.slice(0, DETAILS_ERROR_MAX)}…` : s;
}

export class CheckpointRun {
  readonly runner: RunnerPlan;
  readonly workflowId = workflowInfo().workflowId;
  private currentPhase: CheckpointView['phase'] = 'waiting_for_create';
  private currentError: string | null = null;
  /** The step running now, as the current details say it (e.g. `reset_cmd`). */
  private currentStep = 'waiting for a create';
  state: CheckpointState | null = null;
  held: HeldCheckpoint | null = null;
  createResult: 'ok' | 'failed' | null = null;
  /** The create handler is done, its compensation included. */
  createSettled = false;
  jobEnd: JobEnd | null = null;
  /** The GitLab pause attempt has finished (either way): finalize may answer. */
  pauseSettled = false;
  /** We paused the runner and have not unpaused it yet. */
  runnerPaused = false;
  /** GitHub: the labels e2epool removed to "pause" the runner, to put back at the unpause. */
  removedLabels: string[] = [];
  resetRounds = 0;
  operatorDecision: 'retry' | 'release' | null = null;
  /** While the runner is held for debugging after a failed job: when the hold ends. */
  heldUntil: Date | null = null;
  /** An operator ended the hold early (`release-hold`). */
  holdReleased = false;
  /** The terminal state the run ends in, once decided. */
  outcome: CheckpointState | null = null;
  /** When the cooldown ends, once it started: until then creates get 429 and its seconds left. */
  cooldownUntil: Date | null = null;
  /**
   * The cooldown ran before the unpause: from here the run only unpauses and
   * records its end, and the run that closes does not sleep it again.
   */
  cooledDown = false;
  /** Proof of reset of the last round that reached it (verifyReset); null: no answer. */
  private verifiedAnswer: { verified: boolean | null; detail: string | null } | null = null;

  constructor(readonly input: CheckpointWorkflowInput) {
    this.runner = input.runner;
    if (input.resume) this.resume(input.resume);
    this.showDetails();
  }

  get phase(): CheckpointView['phase'] {
    return this.currentPhase;
  }

  set phase(p: CheckpointView['phase']) {
    this.currentPhase = p;
    this.showDetails();
  }

  get lastError(): string | null {
    return this.currentError;
  }

  set lastError(e: string | null) {
    this.currentError = e;
    this.showDetails();
  }

  /** The proof of reset's answer (verifyReset), shown in the DTO, the view and the details. */
  get verification(): { verified: boolean | null; detail: string | null } | null {
    return this.verifiedAnswer;
  }

  set verification(v: { verified: boolean | null; detail: string | null } | null) {
    this.verifiedAnswer = v;
    this.showDetails();
  }

  /** Says which step runs now (a step's operation-log name where it has one). */
  doing(step: string): void {
    this.currentStep = step;
    this.showDetails();
  }

  /**
   * The markdown the Temporal Web UI shows as this run's current details.
   * It lives in the worker's memory only (the `__temporal_workflow_metadata`
   * query reads it): setting it adds no command to the history.
   */
  details(): string {
    const err = this.currentError;
    const shown = err === null ? 'none' : clip(err);
    const v = this.verifiedAnswer;
    const proof =
      v === null
        ? []
        : [
            `- **reset verified:** ${v.verified === null ? 'not verifiable' : v.verified ? 'yes' : 'NO'}${v.detail ? ` (${clip(v.detail)})` : ''}`,
          ];
    return [
      `- **phase:** ${this.currentPhase}${this.state ? ` (state \`${this.state}\`)` : ''}`,
      `- **now:** ${this.currentStep}`,
      `- **last error:** ${shown}`,
      ...proof,
    ].join('\n');
  }

  private showDetails(): void {
    setCurrentDetails(this.details());
  }

  /** A waiting checkpoint carried over from the previous run (continue-as-new). */
  private resume(r: ResumedCheckpoint): void {
    this.held = {
      name: r.name,
      jobId: r.jobId,
      projectId: r.projectId,
      createdAt: new Date(r.createdAt),
      id: r.checkpointId,
      pollJobs: r.pollJobs,
    };
    this.state = 'created';
    this.createResult = 'ok';
    this.createSettled = true;
    this.phase = 'waiting_for_job';
    const end = r.adopted?.jobEnd;
    if (r.adopted && r.adopted.state !== 'created') {
      // The job is over: the adopting run goes straight to the reset.
      this.jobEnd =
        end && end !== 'ttl'
          ? { status: end.status, source: end.source, at: new Date(end.at) }
          : 'ttl';
    }
  }

  /** The held checkpoint, once recorded. Every step after the create needs it. */
  get checkpoint(): HeldCheckpoint & { id: number } {
    const h = this.held;
    if (!h || h.id === null) throw new Error('no recorded checkpoint in this run');
    return h as HeldCheckpoint & { id: number };
  }

  get finalizeStatus(): FinalizeStatus | null {
    return this.jobEnd && this.jobEnd !== 'ttl' ? this.jobEnd.status : null;
  }

  get finalizeSource(): string | null {
    return this.jobEnd && this.jobEnd !== 'ttl' ? this.jobEnd.source : null;
  }

  get finalizedAt(): Date | null {
    return this.jobEnd && this.jobEnd !== 'ttl' ? this.jobEnd.at : null;
  }

  /**
   * When and how the job's end was seen: a finalize or a poll (`poller`) at
   * its instant; the TTL at its expiry. Null while the job runs.
   */
  jobEndSeen(): { jobEndedAt: string; path: JobEndPath } | null {
    const end = this.jobEnd;
    if (end === null || this.held === null) return null;
    if (end === 'ttl') {
      const ttlMs = this.input.timing.ttlSeconds * 1000;
      return {
        jobEndedAt: new Date(this.held.createdAt.getTime() + ttlMs).toISOString(),
        path: 'ttl',
      };
    }
    return {
      jobEndedAt: end.at.toISOString(),
      path: end.source === 'poller' ? 'poller' : 'finalize',
    };
  }

  /** Identity of a side-effect step: part of its operation-log idempotency key. */
  step(): StepInput {
    const cp = this.checkpoint;
    return {
      checkpointId: cp.id,
      checkpointName: cp.name,
      runnerId: this.runner.runnerId,
      round: this.resetRounds,
    };
  }

  /** Sets the state shown to operators (search attribute E2eState), with `also` in the same upsert. */
  setState(s: CheckpointState, also: SearchAttributePairs = []): void {
    this.state = s;
    upsertSearchAttributes([...also, { key: SA_STATE, value: s }]);
    this.showDetails();
  }

  /** Moves the Postgres row (compare-and-set), then the run's own state. */
  async moveTo(
    to: CheckpointState,
    from: CheckpointState[],
    extra: Omit<TransitionRequest, 'checkpointId' | 'from' | 'to'> = {},
  ): Promise<void> {
    await records.transitionCheckpoint({ checkpointId: this.checkpoint.id, from, to, ...extra });
    this.setState(to);
  }

  dto(): CheckpointDto {
    const cp = this.checkpoint;
    if (this.state === null) throw new Error('checkpoint has no state yet');
    return checkpointDto({
      name: cp.name,
      runnerId: this.runner.runnerId,
      jobId: cp.jobId,
      state: this.state,
      finalizeStatus: this.finalizeStatus,
      finalizeSource: this.finalizeSource,
      createdAt: cp.createdAt,
      finalizedAt: this.finalizedAt,
      verified: this.verifiedAnswer?.verified ?? null,
      verifyDetail: this.verifiedAnswer?.detail ?? null,
    });
  }

  view(): CheckpointView {
    return {
      phase: this.phase,
      state: this.state,
      name: this.held?.name ?? null,
      runnerId: this.runner.runnerId,
      jobId: this.held?.jobId ?? null,
      backend: this.runner.backend,
      finalizeStatus: this.finalizeStatus,
      finalizeSource: this.finalizeSource,
      runnerPaused: this.runnerPaused,
      resetRounds: this.resetRounds,
      lastError: this.lastError,
      heldUntil: this.heldUntil?.toISOString() ?? null,
      verified: this.verifiedAnswer?.verified ?? null,
      verifyDetail: this.verifiedAnswer?.detail ?? null,
    };
  }
}
