/**
 * Proof of reset (docs/operators.md, "Proof of reset"): after a reset, show that the
 * machine went back. Bare metal: the runner's `verify_cmd` through its agent.
 * Proxmox: a canary nonce written into the guest at the create must be gone
 * after the rollback, and the VM must descend from the snapshot rolled back to.
 *
 * An answer is true (verified), false (the check failed: the machine may still
 * hold the job's leftovers) or null (cannot tell: no guest agent, nothing to
 * verify with). Each round's answer is recorded on the checkpoint row and
 * counted once in e2epool_resets_total; a false one quarantines the runner.
 */
import { fail } from '../common/fail';
import type { VerifyMode } from '../config/runner-schema';
import { createStore } from '../store';
import { activityBounds, heartbeating } from './context';
import { inventoryRunner, type ActivityDeps } from './deps';
import { activityKey, withOperation, type StepInput, type StepMeta } from './operation-log';
import { checkCanary, writeCanaryFile } from './proxmox/canary';
import { proxmoxClientFactory } from './proxmox/steps';
import { quarantineRunner } from './quarantine';
import { tail } from './runner';
import type { OperationResult } from '../store/operation-log';

/** A reset's proof: verified, failed, or not verifiable (null), and why. */
export interface ResetProof {
  verified: boolean | null;
  detail: string;
}

/**
 * How long the create waits for the guest agent before writing the canary:
 * the guest runs (its job's agent asked for the create), so qemu-ga answers
 * at once or not at all; the create's deadline is short.
 */
const CANARY_AGENT_WAIT_MS = 5000;

/** What the verifyReset step is told by its workflow (the runner plan's, fixed at the create). */
export interface VerifyResetInput extends StepInput {
  /** The effective mode (never `off`: then the step does not run). */
  mode: VerifyMode;
  /** Proxmox: the snapshot the reset rolled back to (the checkpoint's, or the baseline). */
  snapshotName?: string;
  /** Proxmox: where the canary was written. */
  canaryPath?: string;
}

function verifySteps(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);
  const clientFor = proxmoxClientFactory(deps);
  return {
    deps,
    store,
    log: { operations: store.operations, metrics: deps.metrics },
    /** The runner's Proxmox client (credentials never cross the workflow boundary). */
    guest: (runnerId: string) => {
      const r = inventoryRunner(deps, runnerId);
      if (r.backend !== 'proxmox')
        throw fail('RunnerNotInInventory', `runner '${runnerId}' is not a proxmox runner`);
      return clientFor(r);
    },
  };
}

type VerifySteps = ReturnType<typeof verifySteps>;

function meta(i: StepInput, backend: StepMeta['backend'], operation: string): StepMeta {
  return {
    checkpointId: i.checkpointId,
    runnerId: i.runnerId,
    backend,
    operation,
    key: activityKey(operation, `${i.checkpointName}:${operation}:${i.round}`),
  };
}

/** Bare metal: `verify_cmd` through the agent; exit 0 proves the reset. */
async function verifyBareMetal(c: VerifySteps, i: VerifyResetInput): Promise<ResetProof> {
  const r = inventoryRunner(c.deps, i.runnerId);
  const cmd = r.backend === 'bare_metal' ? r.verify_cmd : undefined;
  if (!cmd) return { verified: null, detail: 'no verify_cmd configured: nothing to verify with' };
  const res = await heartbeating(
    // Withdrawn when the activity is cancelled or times out: it never runs later.
    c.deps.agents.exec(i.runnerId, cmd, c.deps.settings.commandTimeoutSeconds, {
      commandId: activityKey('exec:verify_cmd', `${i.checkpointName}:verify_cmd:${i.round}`),
      checkpointId: i.checkpointId,
      ...activityBounds(),
    }),
  );
  if (res.exitCode === 0) return { verified: true, detail: 'verify_cmd exited 0' };
  return {
    verified: false,
    detail: `verify_cmd exited with ${res.exitCode}; stdout: ${tail(res.stdout)}; stderr: ${tail(res.stderr)}`,
  };
}

/** An answer as e2epool_resets_total's `verified` label and as its log row's result. */
const PROOF_LABEL: Record<string, string> = { true: 'true', false: 'false', null: 'unverified' };
const STEP_RESULT: Record<string, OperationResult> = {
  true: 'ok',
  false: 'error',
  null: 'skipped',
};

/**
 * Records the answer on the checkpoint row and, the first time for this
 * round, counts it; a false answer quarantines the runner.
 */
async function recordProof(
  c: VerifySteps,
  i: VerifyResetInput,
  backend: string,
  proof: ResetProof,
): Promise<void> {
  // One transaction: a retry finds the answer and the quarantine both there, or neither.
  const first = await c.store.transaction(async (tx) => {
    const isFirst = await tx.verification.record(
      i.checkpointId,
      i.round,
      proof.verified,
      proof.detail,
    );
    // Whatever the quarantine cap: the machine may still hold the last job's leftovers.
    if (proof.verified === false)
      await quarantineRunner(
        tx,
        i.runnerId,
        {
          // As long as an operator's reason may be (the checkpoint row has all of the detail).
          reason: `reset not verified (${i.checkpointName}): ${proof.detail}`.slice(0, 500),
          source: 'verification',
        },
        c.deps.log,
      );
    return isFirst;
  });
  if (first) c.deps.metrics.resets.inc({ backend, verified: PROOF_LABEL[String(proof.verified)] });
}

/** Proxmox: the canary is gone and the VM descends from the snapshot rolled back to. */
async function verifyProxmox(c: VerifySteps, i: VerifyResetInput): Promise<ResetProof> {
  if (!i.snapshotName || !i.canaryPath)
    return { verified: null, detail: 'no snapshot or canary path given: nothing to verify' };
  // Heartbeats while it waits for qemu-ga (up to the readiness timeout).
  return heartbeating(
    checkCanary(c.guest(i.runnerId), c.store.verification, {
      checkpointId: i.checkpointId,
      canaryPath: i.canaryPath,
      snapshotName: i.snapshotName,
      waitMs: c.deps.settings.readinessTimeoutSeconds * 1000,
    }),
  );
}

/**
 * Verifies the reset of this round and records the answer (idempotent: a
 * retry checks again and overwrites the round's answer, counted once).
 */
async function verifyReset(c: VerifySteps, i: VerifyResetInput): Promise<ResetProof> {
  const r = inventoryRunner(c.deps, i.runnerId);
  return withOperation(c.log, meta(i, r.backend, 'verify_reset'), async () => {
    const proof = r.backend === 'proxmox' ? await verifyProxmox(c, i) : await verifyBareMetal(c, i);
    await recordProof(c, i, r.backend, proof);
    return { value: proof, detail: proof.detail, result: STEP_RESULT[String(proof.verified)] };
  });
}

/**
 * Create, Proxmox: writes a fresh canary nonce into the guest and records
 * its SHA-256. A retry writes a new nonce and records its hash: the last
 * write wins in both places. A guest agent that cannot take it is recorded
 * (the reset will not be verifiable) and fails the create only when the
 * proof is `required`.
 */
async function writeCanary(
  c: VerifySteps,
  i: StepInput & { mode: VerifyMode; canaryPath: string },
): Promise<void> {
  await withOperation(c.log, meta(i, 'proxmox', 'canary'), async () => {
    const out = await heartbeating(
      writeCanaryFile(c.guest(i.runnerId), c.store.verification, {
        checkpointId: i.checkpointId,
        canaryPath: i.canaryPath,
        mode: i.mode,
        waitMs: CANARY_AGENT_WAIT_MS,
      }),
    );
    return { value: undefined, detail: out.detail, result: out.written ? 'ok' : 'skipped' };
  });
}

/** The proof-of-reset steps. */
export function verifyActivities(deps: ActivityDeps) {
  const c = verifySteps(deps);
  return {
    verifyReset: (i: VerifyResetInput): Promise<ResetProof> => verifyReset(c, i),
    writeCanary: (i: StepInput & { mode: VerifyMode; canaryPath: string }): Promise<void> =>
      writeCanary(c, i),
  };
}
