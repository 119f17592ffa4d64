import { WorkflowUpdateFailedError } from '@temporalio/client';
import { workflowMetadataQuery } from '@temporalio/workflow';
import {
  checkpointWorkflowId,
  finalizeUpdate,
  stateQuery,
  type CheckpointTiming,
  type CheckpointView,
  type CheckpointWorkflowInput,
  type FinalizeReply,
} from '../../common/checkpoint';
import { applicationFailureOf } from '../../common/fail';
import type { FinalizeStatus } from '../../common/states';
import { uniqueId } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import type { RunnerSpec, WorkflowHarness } from './harness';

/** Short durations: dev-server timers have about one second of resolution. */
export function timing(o: Partial<CheckpointTiming> = {}): CheckpointTiming {
  return {
    ttlSeconds: 3600,
    pollerIntervalSeconds: 1,
    pollerMinAgeSeconds: 0,
    cooldownSeconds: 0,
    finalizeAckSeconds: 30,
    resetMaxAttempts: 2,
    unpauseRetrySeconds: 300,
    ...o,
  };
}

/** A runner of this test only: its own id, so its own workflow id. */
export function runner(
  backend: RunnerSpec['backend'],
  o: Partial<Omit<RunnerSpec, 'runnerId' | 'backend'>> = {},
): RunnerSpec {
  return {
    runnerId: uniqueId(`wf-${backend === 'proxmox' ? 'pm' : 'bm'}`),
    backend,
    gitlabRunnerId: o.gitlabRunnerId === undefined ? 40 : o.gitlabRunnerId,
    ...(o.pause !== undefined ? { pause: o.pause } : {}),
    resetOnSuccess: o.resetOnSuccess ?? false,
    ...(o.holdOnFailureSeconds !== undefined
      ? { holdOnFailureSeconds: o.holdOnFailureSeconds }
      : {}),
    ...(o.baselineSnapshot !== undefined ? { baselineSnapshot: o.baselineSnapshot } : {}),
    ...(o.verifyReset !== undefined ? { verifyReset: o.verifyReset } : {}),
    ...(o.canaryPath !== undefined ? { canaryPath: o.canaryPath } : {}),
  };
}

export function input(r: RunnerSpec, t: Partial<CheckpointTiming> = {}): CheckpointWorkflowInput {
  return {
    runner: {
      runnerId: r.runnerId,
      backend: r.backend,
      pause:
        r.pause !== undefined
          ? r.pause
          : r.gitlabRunnerId !== null
            ? { kind: 'gitlab', gitlabRunnerId: r.gitlabRunnerId }
            : null,
      resetOnSuccess: r.resetOnSuccess ?? false,
      holdOnFailureSeconds: r.holdOnFailureSeconds ?? 0,
      ...(r.baselineSnapshot !== undefined ? { baselineSnapshot: r.baselineSnapshot } : {}),
      ...(r.verifyReset !== undefined ? { verifyReset: r.verifyReset } : {}),
      ...(r.canaryPath !== undefined ? { canaryPath: r.canaryPath } : {}),
    },
    timing: timing(t),
  };
}

export function handle(h: WorkflowHarness, r: RunnerSpec) {
  return h.client.workflow.getHandle(checkpointWorkflowId(r.runnerId));
}

export function finalize(
  h: WorkflowHarness,
  r: RunnerSpec,
  checkpointName: string,
  status: FinalizeStatus,
): Promise<FinalizeReply> {
  return handle(h, r).executeUpdate(finalizeUpdate, {
    args: [{ checkpointName, status, source: 'hook' }],
  });
}

export async function waitPhase(
  h: WorkflowHarness,
  r: RunnerSpec,
  phase: CheckpointView['phase'],
): Promise<CheckpointView> {
  return waitFor(`phase ${phase}`, async () => {
    const v = await handle(h, r).query(stateQuery);
    return v.phase === phase ? v : undefined;
  });
}

/**
 * The run's current details as the Temporal Web UI reads them: the SDK's
 * built-in `__temporal_workflow_metadata` query, answered through the server
 * (DescribeWorkflowExecution carries only the static summary and details).
 */
export async function currentDetails(h: WorkflowHarness, r: RunnerSpec): Promise<string> {
  return (await handle(h, r).query(workflowMetadataQuery)).currentDetails ?? '';
}

/** Waits until the current details say `expected` (they follow the run as it moves). */
export async function waitDetails(
  h: WorkflowHarness,
  r: RunnerSpec,
  expected: string,
): Promise<string> {
  return waitFor(`current details ${JSON.stringify(expected)}`, async () => {
    const d = await currentDetails(h, r);
    if (d !== expected) throw new Error(`they say ${JSON.stringify(d)}`);
    return d;
  });
}

/** Waits until the run waits for an operator: the phase, then the row and the state. */
export async function waitNeedsAttention(
  h: WorkflowHarness,
  r: RunnerSpec,
): Promise<CheckpointView> {
  return waitFor('needs_attention', async () => {
    const v = await handle(h, r).query(stateQuery);
    return v.phase === 'needs_attention' && v.state === 'needs_attention' ? v : undefined;
  });
}

/** The failure type and message an update was rejected or failed with. */
export async function updateFailure(
  p: Promise<unknown>,
): Promise<{ type: string; message: string }> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
    const f = applicationFailureOf(err);
    return { type: f?.type ?? '(none)', message: f?.message ?? String(err) };
  }
  throw new Error('the update succeeded');
}

/** States the workflow moved the checkpoint row to, in order. */
export function transitions(calls: Array<{ name: string; input: Record<string, unknown> }>) {
  return calls.filter((c) => c.name === 'transitionCheckpoint').map((c) => c.input.to);
}

/** Side-effect steps in order (bookkeeping left out). */
export function steps(calls: Array<{ name: string }>): string[] {
  const bookkeeping = new Set(['recordCheckpoint', 'transitionCheckpoint', 'noteOperation']);
  return calls.map((c) => c.name).filter((n) => !bookkeeping.has(n));
}

/** A promise with its resolver: lets a stub wait for the test. */
export function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}
