/**
 * The run's messages: the create and finalize updates (with validators that
 * reject before anything is written to history), the operator's retry,
 * release and release-hold signals, and the `state` query.
 */
import { condition, setHandler, upsertMemo } from '@temporalio/workflow';
import {
  createUpdate,
  finalizeUpdate,
  releaseHoldSignal,
  releaseSignal,
  retrySignal,
  stateQuery,
  type CheckpointMemo,
  type CreateRequest,
  type FinalizeReply,
  type FinalizeRequest,
} from '../../common/checkpoint';
import { fail } from '../../common/fail';
import { isActiveState } from '../../common/states';
import { createCheckpoint } from './create';
import type { CheckpointRun } from './run';

export function installHandlers(run: CheckpointRun): void {
  setHandler(stateQuery, () => run.view());

  setHandler(createUpdate, (req: CreateRequest) => createCheckpoint(run, req), {
    validator: (req: CreateRequest) => {
      if (run.phase === 'done') {
        // Finished and about to close; a new run can start in a moment.
        throw fail('RunClosing', 'Previous checkpoint is closing, try again');
      }
      if (run.phase === 'cooldown') {
        // Workflow time: this activation's instant. Until the timer has fired
        // (it may be a moment late) the cooldown holds: the API rounds up to 1 s.
        const left = run.cooldownUntil ? run.cooldownUntil.getTime() - Date.now() : 0;
        throw fail('CooldownActive', 'Cooldown period active, try again later', {
          retryAfterMs: Math.max(0, left),
        });
      }
      if (run.cooledDown && run.phase !== 'needs_attention') {
        // Unpausing and recording the end: the runner may be unpaused already.
        throw fail('RunClosing', 'Previous checkpoint is closing, try again');
      }
      if (run.held !== null && run.state !== null && !isActiveState(run.state)) {
        throw fail('CooldownActive', 'Cooldown period active, try again later');
      }
      if (run.held !== null) {
        throw fail(
          'CheckpointConflict',
          `Active checkpoint '${run.held.name}' already exists for runner '${run.runner.runnerId}'`,
        );
      }
      if (!req || typeof req.jobId !== 'string' || req.jobId.length === 0) {
        throw fail('InvalidRequest', 'job_id is required');
      }
      if (req.deadline !== undefined && Date.now() >= Date.parse(req.deadline)) {
        // It waited for a worker past its caller's patience: nobody would get the answer.
        throw fail('BackendTimeout', 'Checkpoint could not be created before the create deadline');
      }
    },
  });

  setHandler(
    finalizeUpdate,
    async (req: FinalizeRequest): Promise<FinalizeReply> => {
      if (run.jobEnd !== null || (run.state !== null && run.state !== 'created')) {
        return { detail: 'Already finalized', state: run.state ?? 'created' };
      }
      run.jobEnd = { status: req.status, source: req.source, at: new Date() };
      // Accepted before the finalize_queued write: the reconciler finds it here if the run ends first.
      const memo: CheckpointMemo = {
        finalize: { checkpoint: req.checkpointName, status: req.status, source: req.source },
      };
      upsertMemo(memo as Record<string, unknown>);
      // Answer once the runner is paused, so GitLab cannot hand it a new job
      // meanwhile; but never keep the caller waiting on a slow GitLab.
      await condition(() => run.pauseSettled, `${run.input.timing.finalizeAckSeconds} seconds`);
      return { detail: 'Finalize queued', checkpoint_name: run.checkpoint.name };
    },
    {
      validator: (req: FinalizeRequest) => {
        if (run.held === null || req.checkpointName !== run.held.name) {
          throw fail('CheckpointNotActive', 'Checkpoint is not held by this workflow run');
        }
        if (run.createResult !== 'ok') {
          throw fail('CheckpointNotActive', 'Checkpoint was not created');
        }
      },
    },
  );

  // Operators: only a checkpoint waiting for them takes a decision.
  setHandler(retrySignal, () => {
    if (run.phase === 'needs_attention') run.operatorDecision = 'retry';
  });
  setHandler(releaseSignal, () => {
    if (run.phase === 'needs_attention') run.operatorDecision = 'release';
  });
  // Only a runner held for debugging has a hold to end.
  setHandler(releaseHoldSignal, () => {
    if (run.heldUntil !== null) run.holdReleased = true;
  });
}
