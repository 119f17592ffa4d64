import { randomUUID } from 'node:crypto';
import {
  ServiceError,
  WithStartWorkflowOperation,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type Client,
} from '@temporalio/client';
import {
  CHECKPOINT_WORKFLOW,
  checkpointDto,
  checkpointWorkflowId,
  createUpdate,
  finalizeUpdate,
  type CheckpointDto,
  type FinalizeReply,
} from '../common/checkpoint';
import { applicationFailureOf, failureTypeOf, retryAfterOf } from '../common/fail';
import type { FailureType } from '../common/failures';
import { SA_RUNNER_ID } from '../common/search-attributes';
import { isActiveState, type FinalizeStatus } from '../common/states';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import { checkpointInput, runnerSearchAttributes } from '../config/checkpoint-input';
import type { CheckpointStore } from '../store/checkpoints';
import {
  BackendUnavailable,
  CheckpointNotFound,
  Conflict,
  CooldownActive,
  DeadlinePassed,
  DomainError,
  InternalFailure,
  InvalidInput,
  NotAuthorized,
  RunClosing,
  RunnerDraining,
  RunnerNotFound,
  RunnerQuarantined,
  TemporalUnavailable,
} from './errors';

type Refusal = new (detail: string, retryAfterSeconds?: number) => DomainError;

/**
 * The workflow's answers to an update that callers receive (common/failures.ts
 * lists them), as domain errors carrying the workflow's message. A failure
 * type not listed here is a fault (500).
 */
export const WORKFLOW_REFUSALS: Partial<Record<FailureType, Refusal>> = {
  BackendTimeout: DeadlinePassed,
  BackendUnavailable: BackendUnavailable,
  CheckpointConflict: Conflict,
  CooldownActive: CooldownActive,
  CheckpointNotActive: Conflict,
  InvalidRequest: InvalidInput,
  RunClosing: RunClosing,
};

/** How long past its deadline the API still waits for the run's own answer to a create. */
const CREATE_ANSWER_GRACE_MS = 3000;
const CREATE_TIMEOUT_DETAIL = 'Checkpoint could not be created before the create deadline';

export interface CheckpointServiceDeps {
  client: Client;
  records: CheckpointStore;
  inventory: InventoryStore;
  settings: Settings;
  log: Logger;
}

/**
 * Checkpoint operations shared by REST and the agent gateway. It only starts,
 * updates and reads workflows, and reads Postgres; it refuses with the
 * DomainErrors of ./errors, which each edge maps to its own answer.
 */
export class CheckpointService {
  constructor(private readonly d: CheckpointServiceDeps) {}

  /**
   * Creates a checkpoint: update-with-start on the runner's workflow, so two
   * API instances racing for one runner get one 201 and 409s.
   */
  async create(
    tokenRunnerId: string,
    req: { runner_id: string; job_id: string; caller?: string | null; project_id: string | null },
  ): Promise<CheckpointDto> {
    const runner = this.d.inventory.inventory.get(req.runner_id);
    if (req.runner_id !== tokenRunnerId) {
      if (!runner) throw new RunnerNotFound();
      throw new NotAuthorized('Token not authorized for this runner');
    }
    if (!runner) throw new RunnerNotFound();
    // Quarantined (see docs/protocol.md#runner-registry): refused before anything else, even while draining.
    if (this.d.inventory.inventory.isQuarantined(runner.runner_id)) {
      throw new RunnerQuarantined(`Runner '${runner.runner_id}' is quarantined`);
    }
    // Draining (see docs/protocol.md#runner-registry): the current checkpoint finishes, no new one starts.
    if (this.d.inventory.inventory.isDraining(runner.runner_id)) {
      throw new RunnerDraining(`Runner '${runner.runner_id}' is draining`);
    }
    const input = checkpointInput(runner, this.d.settings, this.d.inventory.inventory);
    // The job's repository polls a GitHub job; a repository's runner knows its
    // own (an organization's serves many: only the job can say which).
    const projectId =
      req.project_id ?? (runner.ci_adapter === 'github' ? (runner.github_repo ?? null) : null);
    const ci = runner.ci_adapter === 'github' ? 'GitHub' : 'GitLab';
    // Past the deadline the run compensates the create and answers 504; the
    // API stops waiting a little later in case no worker answers at all (the
    // run then refuses the stale request when a worker picks it up).
    const deadline = Date.now() + this.d.settings.createTimeoutSeconds * 1000;
    const giveUp = deadline + CREATE_ANSWER_GRACE_MS;
    // A run that just finished is closing; it is gone within moments, so try again briefly.
    for (;;) {
      try {
        return await this.beforeGivingUp(
          giveUp,
          this.d.client.workflow.executeUpdateWithStart(createUpdate, {
            args: [
              {
                jobId: req.job_id,
                caller: req.caller ?? null,
                projectId,
                deadline: new Date(deadline).toISOString(),
              },
            ],
            startWorkflowOperation: new WithStartWorkflowOperation(CHECKPOINT_WORKFLOW, {
              workflowId: checkpointWorkflowId(runner.runner_id),
              taskQueue: this.d.settings.taskQueue,
              args: [input],
              workflowIdConflictPolicy: 'USE_EXISTING',
              workflowIdReusePolicy: 'ALLOW_DUPLICATE',
              typedSearchAttributes: runnerSearchAttributes(runner),
              staticSummary: `runner ${runner.runner_id} · job ${req.job_id} · ${runner.backend}`,
              staticDetails: `Checkpoint of ${ci} job ${req.job_id}${projectId ? ` (${ci === 'GitHub' ? 'repository' : 'project'} ${projectId})` : ''} on runner ${runner.runner_id} (${runner.backend})`,
            }),
          }),
        );
      } catch (err) {
        if (Date.now() < deadline && (await this.endingRun(err, runner.runner_id))) {
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
        throw this.mapError(err, 'create');
      }
    }
  }

  /** `p`, or DeadlinePassed (504) once `giveUp` passes (the caller's own timeout is near). */
  private async beforeGivingUp<T>(giveUp: number, p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new DeadlinePassed(CREATE_TIMEOUT_DETAIL)),
        Math.max(0, giveUp - Date.now()),
      );
    });
    p.catch(() => undefined); // answered after we gave up: nobody is listening
    try {
      return await Promise.race([p, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Whether a refused create met a run that is finishing, so a retry in a
   * moment gets a real answer: the run is closing, or it refused as still
   * holding a checkpoint whose row is already terminal (the workflow learns
   * that its last write landed a moment after the database has it).
   */
  private async endingRun(err: unknown, runnerId: string): Promise<boolean> {
    const type = failureTypeOf(err);
    if (type === 'RunClosing') return true;
    if (type !== 'CheckpointConflict') return false;
    // Unsure (database unreachable): answer the conflict as it is.
    return !(await this.d.records.hasActive(runnerId).catch(() => true));
  }

  /**
   * Finalizes a checkpoint: the workflow answers once the runner is paused
   * (bounded). Temporal is asked first, at the token's runner's workflow (one
   * per runner), so a finalize is answered, and the runner paused, while
   * Postgres is unreachable; the run refuses a name it does not hold, and
   * only then does Postgres tell 404, 403 and "Already finalized" apart.
   */
  async finalize(
    tokenRunnerId: string,
    req: { checkpoint_name: string; status: FinalizeStatus; source: string },
  ): Promise<FinalizeReply> {
    try {
      return await this.d.client.workflow
        .getHandle(checkpointWorkflowId(tokenRunnerId))
        .executeUpdate(finalizeUpdate, {
          args: [{ checkpointName: req.checkpoint_name, status: req.status, source: req.source }],
        });
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError) && failureTypeOf(err) !== 'CheckpointNotActive')
        throw this.mapError(err, 'finalize');
    }
    const row = await this.d.records.findByName(req.checkpoint_name);
    if (!row) throw new CheckpointNotFound();
    if (row.runnerId !== tokenRunnerId)
      throw new NotAuthorized('Token not authorized for this checkpoint');
    if (!isActiveState(row.state)) return { detail: 'Already finalized', state: row.state };
    throw new Conflict(
      `Checkpoint '${row.name}' is not held by a running workflow (state ${row.state}); an operator must release it`,
    );
  }

  /** Asks the worker (through a short workflow) whether the runner is ready now. */
  async readiness(
    runnerId: string,
  ): Promise<{ runner_id: string; ready: boolean; detail: string | null }> {
    try {
      const r = await this.d.client.workflow.execute('readinessWorkflow', {
        taskQueue: this.d.settings.taskQueue,
        workflowId: `e2epool-readiness-${runnerId}-${randomUUID()}`,
        args: [runnerId],
        workflowExecutionTimeout: '60 seconds',
        typedSearchAttributes: [{ key: SA_RUNNER_ID, value: runnerId }],
      });
      return { runner_id: runnerId, ready: r.ready, detail: r.detail };
    } catch (err) {
      const failure = applicationFailureOf(err);
      if (failure) return { runner_id: runnerId, ready: false, detail: failure.message };
      throw this.mapError(err, 'readiness');
    }
  }

  async status(tokenRunnerId: string, name: string): Promise<CheckpointDto> {
    const row = await this.d.records.findByName(name);
    if (!row) throw new CheckpointNotFound();
    if (row.runnerId !== tokenRunnerId)
      throw new NotAuthorized('Token not authorized for this checkpoint');
    return checkpointDto(row);
  }

  private mapError(err: unknown, op: string): DomainError {
    if (err instanceof DomainError) return err;
    // A workflow's answer to an update, of a type callers receive: its message.
    const type = failureTypeOf(err);
    const Refused = type === undefined ? undefined : WORKFLOW_REFUSALS[type];
    if (err instanceof WorkflowUpdateFailedError && Refused !== undefined) {
      // The cooldown's time left, rounded up: a caller that waits that long is past it.
      const ms = retryAfterOf(err);
      const retryAfter = ms === undefined ? undefined : Math.max(1, Math.ceil(ms / 1000));
      return new Refused(applicationFailureOf(err)!.message, retryAfter);
    }
    if (err instanceof ServiceError || (err as { code?: number }).code === 14) {
      this.d.log.warn({ op, err: (err as Error).message }, 'Temporal unavailable');
      return new TemporalUnavailable();
    }
    this.d.log.error({ op, err }, 'checkpoint operation failed');
    return new InternalFailure();
  }
}
