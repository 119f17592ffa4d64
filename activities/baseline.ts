/**
 * Baseline refresh (docs/operators.md, "Baseline refresh"): the side effects of
 * baselineRefreshWorkflow. Each looks at the VM or the registry first, so a
 * retry (or a worker that died mid-call) does no harm: a snapshot that exists
 * is not taken again, a runner already drained is not drained again, and the
 * update runs again from the rolled-back baseline, never on top of itself.
 */
import { randomBytes } from 'node:crypto';
import { isRefreshBaseline } from '../common/baseline';
import { fail } from '../common/fail';
import { canaryPathOf, type ProxmoxRunner } from '../config/runner-schema';
import { createStore } from '../store';
import { currentBaselineOf } from '../config/runner-state';
import type { Stores } from '../store';
import { heartbeat } from './context';
import { inventoryRunner, type ActivityDeps } from './deps';
import type { ProxmoxClient } from './proxmox/client';
import { proxmoxClientFactory, runProxmoxTask } from './proxmox/steps';
import { quarantineRunner } from './quarantine';
import { readyAfterReboot, tail } from './runner';
import { holdIdleRunner, releaseIdleRunner } from './runner-hold';

/** Who the registry's audit names for a refresh's changes. */
const ACTOR = 'baseline-refresh';

/** What a refresh starts from: the registry's view of the runner. */
export interface RefreshStart {
  previous: string | null;
  wasDraining: boolean;
  canaryPath: string;
}

function baselineSteps(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);
  const clientFor = proxmoxClientFactory(deps);
  const vm = (runnerId: string): { r: ProxmoxRunner; client: ProxmoxClient } => {
    const r = inventoryRunner(deps, runnerId);
    if (r.backend !== 'proxmox')
      throw fail('PermanentFailure', `runner '${runnerId}' is not a proxmox runner`);
    return { r, client: clientFor(r) };
  };
  const task = (client: ProxmoxClient, start: () => Promise<string>, tolerate?: RegExp) =>
    runProxmoxTask(deps, client, start, tolerate);
  /**
   * Stops the VM (when running), rolls it back to `snapshot` and starts it;
   * then waits for qemu-ga. Returns the runner's e2epool agent session read
   * once the VM was down (null: none): it does not count as the agent's
   * return (see readyAfterReboot).
   */
  const restoreTo = async (
    client: ProxmoxClient,
    snapshot: string,
    runnerId: string,
  ): Promise<string | null> => {
    const snaps = await client.listSnapshots();
    if (!snaps.some((s) => s.name === snapshot))
      throw fail('PermanentFailure', `snapshot '${snapshot}' does not exist: cannot roll back`);
    if ((await client.vmStatus()).status === 'running') await task(client, () => client.stop());
    const staleSession = (await deps.agents.session(runnerId))?.sessionId ?? null;
    await task(client, () => client.rollback(snapshot));
    await startAndWait(client);
    return staleSession;
  };
  /**
   * Starts the VM (unless it runs) and waits for its guest agent: the
   * refresh's readiness, since everything it does next goes through qemu-ga.
   */
  const startAndWait = async (client: ProxmoxClient): Promise<void> => {
    if ((await client.vmStatus()).status !== 'running')
      await task(client, () => client.start(), /already running/);
    await client.waitGuestAgent({
      timeoutMs: deps.settings.readinessTimeoutSeconds * 1000,
      onPoll: heartbeat,
    });
  };
  return { deps, store, vm, task, restoreTo, startAndWait };
}

type Steps = ReturnType<typeof baselineSteps>;

/**
 * Where the runner is defined and its configured baseline_snapshot: a
 * registry runner is read from Postgres now (a PATCH of moments ago counts),
 * an inventory-file runner from the file. Throws (permanent) for neither.
 */
async function definition(
  c: Steps,
  tx: Pick<Stores, 'runners'>,
  runnerId: string,
): Promise<{ registry: { draining: boolean } | null; configured: string | null }> {
  if (c.deps.inventory.inventory.inFile(runnerId))
    return { registry: null, configured: c.vm(runnerId).r.baseline_snapshot ?? null };
  const stored = await tx.runners.get(runnerId);
  if (!stored || stored.fields.backend !== 'proxmox')
    throw fail('PermanentFailure', `runner '${runnerId}' is not a Proxmox runner`);
  const configured = stored.fields.baseline_snapshot;
  return { registry: stored, configured: typeof configured === 'string' ? configured : null };
}

/** The runner's baseline now (config/runner-state.ts: a refresh's, else the configured one). */
async function currentOf(c: Steps, tx: Stores, runnerId: string): Promise<string | null> {
  const { configured } = await definition(c, tx, runnerId);
  return currentBaselineOf(await tx.runnerState.get(runnerId), configured);
}

/** What the refresh starts from: a Proxmox runner of the inventory file or the registry. */
async function refreshStart(c: Steps, runnerId: string): Promise<RefreshStart> {
  const { r } = c.vm(runnerId);
  const { registry, configured } = await definition(c, c.store, runnerId);
  const state = await c.store.runnerState.get(runnerId);
  return {
    previous: currentBaselineOf(state, configured),
    wasDraining: registry ? registry.draining : state.draining,
    canaryPath: canaryPathOf(r),
  };
}

/**
 * Drains or undrains, audited (as the admin API's drain); a runner already so
 * is left alone. A registry runner's drain is its `draining` column; an
 * inventory-file runner's is its runner_state row (the file holds no drain).
 */
async function setDraining(c: Steps, runnerId: string, draining: boolean): Promise<void> {
  await c.store.transaction(async (tx) => {
    const { registry } = await definition(c, tx, runnerId);
    if (registry) {
      if (registry.draining === draining) return;
      await tx.runners.set(runnerId, { draining });
    } else if (!(await tx.runnerState.setDraining(runnerId, draining))) return;
    await tx.audit.record({ actor: ACTOR, action: draining ? 'drain' : 'undrain', runnerId });
  });
}

/**
 * Rolls back to the current baseline (if any), starts, and runs `update_cmd`
 * in the guest (`sh -c`). A non-zero exit fails the refresh (permanent).
 * Without a baseline a retry runs the update again on the running VM: the
 * one step that cannot be made repeatable, so update_cmd should be.
 */
async function prepare(
  c: Steps,
  i: { runnerId: string; from: string | null; updateCmd?: string },
): Promise<string> {
  const { client } = c.vm(i.runnerId);
  if (i.from) await c.restoreTo(client, i.from, i.runnerId);
  else await c.startAndWait(client);
  if (!i.updateCmd) return i.from ? `rolled back to '${i.from}'` : 'started';
  const res = await client.guestExec(['sh', '-c', i.updateCmd], {
    timeoutMs: c.deps.settings.commandTimeoutSeconds * 1000,
    onPoll: heartbeat,
  });
  if (res.exitCode !== 0)
    throw fail(
      'PermanentFailure',
      `update_cmd exited with ${res.exitCode}; stdout: ${tail(res.stdout)}; stderr: ${tail(res.stderr)}`,
    );
  return `update_cmd exited 0; stdout: ${tail(res.stdout)}`;
}

/** Takes the new baseline; one already taken (by an earlier attempt) is kept, a half-made one made again. */
async function takeBaseline(c: Steps, i: { runnerId: string; name: string }): Promise<string> {
  const { client } = c.vm(i.runnerId);
  const mine = (await client.listSnapshots()).find((s) => s.name === i.name);
  if (mine && !mine.snapstate) return `snapshot '${i.name}' already taken`;
  if (mine) {
    if ((await client.vmStatus()).lock === 'snapshot')
      throw fail('BackendTimeout', `an earlier snapshot task for '${i.name}' is still running`);
    await c.task(client, () => client.deleteSnapshot(i.name), /does not exist/);
  }
  await c.task(
    client,
    () => client.createSnapshot(i.name, `e2epool baseline (refresh of ${i.runnerId})`),
    /already used/,
  );
  return `snapshot '${i.name}' taken`;
}

/**
 * The new baseline's canary round trip: roll back to it and start (the
 * state every reset will give), write a fresh nonce, roll back again, and
 * read: the nonce must be gone and the VM must descend from the new
 * baseline. This proves the snapshot restores the disk, as the checkpoints'
 * proof of reset will rely on. The nonce is never logged or returned.
 * Returns the detail, and the agent session from before the last stop (for
 * refreshAwaitAgent; runs from before 2.0.0 ignore the result).
 */
async function verifyBaseline(
  c: Steps,
  i: { runnerId: string; name: string; canaryPath: string },
): Promise<{ detail: string; staleSession: string | null }> {
  const { client } = c.vm(i.runnerId);
  await c.restoreTo(client, i.name, i.runnerId);
  const nonce = randomBytes(32).toString('hex');
  await client.guestFileWrite(i.canaryPath, nonce);
  const staleSession = await c.restoreTo(client, i.name, i.runnerId);
  const parent = await client.currentParent();
  if (parent !== i.name)
    throw fail(
      'ResetNotVerified',
      `after the rollback the VM descends from ${parent === null ? 'no snapshot' : `'${parent}'`}, not from '${i.name}'`,
    );
  const content = await client.guestFileRead(i.canaryPath);
  if (content !== null && content.trim() === nonce)
    throw fail(
      'ResetNotVerified',
      `the canary ${i.canaryPath} survived the rollback to '${i.name}': the snapshot does not restore the disk`,
    );
  return {
    detail: `canary ${content === null ? 'gone' : 'replaced'} and the VM descends from '${i.name}'`,
    staleSession,
  };
}

/** Makes `name` the runner's baseline, audited; its next checkpoint resets to it. */
async function commitBaseline(
  c: Steps,
  i: { runnerId: string; name: string; previous: string | null },
): Promise<void> {
  await c.store.transaction(async (tx) => {
    // Current while the configured baseline_snapshot stays the one it replaces.
    const { configured } = await definition(c, tx, i.runnerId);
    if (!(await tx.runnerState.setCurrentBaseline(i.runnerId, i.name, configured))) return;
    await tx.audit.record({
      actor: ACTOR,
      action: 'baseline',
      runnerId: i.runnerId,
      detail: { baseline: i.name, previous: i.previous },
    });
  });
}

/**
 * Deletes the refresh baselines (`e2epool-baseline-<14 digits>`) beyond the
 * `keep` newest; never `current`, never a snapshot of another name (the
 * configured baseline_snapshot, per-job snapshots, an operator's).
 */
async function pruneBaselines(
  c: Steps,
  i: { runnerId: string; keep: number; current: string },
): Promise<string[]> {
  const { client } = c.vm(i.runnerId);
  const ours = (await client.listSnapshots())
    .map((s) => s.name)
    .filter(isRefreshBaseline)
    .sort()
    .reverse();
  const kept = new Set([i.current, ...ours.filter((n) => n !== i.current).slice(0, i.keep - 1)]);
  const gone = ours.filter((n) => !kept.has(n));
  for (const name of gone)
    await c.task(client, () => client.deleteSnapshot(name), /does not exist/);
  return gone;
}

/**
 * After a failure: deletes the new snapshot when it is not the current
 * baseline (ZFS rolls back only to the latest snapshot), then rolls back to
 * the previous baseline and starts (without one: starts). Returns the
 * detail and the agent session from before the stop, as verifyBaseline.
 */
async function restorePrevious(
  c: Steps,
  i: { runnerId: string; previous: string | null; attempted: string | null },
): Promise<{ detail: string; staleSession: string | null }> {
  const { client } = c.vm(i.runnerId);
  const attempted = i.attempted;
  if (attempted && (await currentOf(c, c.store, i.runnerId)) !== attempted) {
    if ((await client.listSnapshots()).some((s) => s.name === attempted))
      await c.task(client, () => client.deleteSnapshot(attempted), /does not exist/);
  }
  if (i.previous)
    return {
      detail: `rolled back to '${i.previous}'`,
      staleSession: await c.restoreTo(client, i.previous, i.runnerId),
    };
  await c.startAndWait(client);
  return { detail: 'started (no previous baseline)', staleSession: null };
}

/** Quarantines the runner whose previous baseline could not be restored (whatever the cap). */
async function quarantineAfterRefresh(
  c: Steps,
  i: { runnerId: string; reason: string },
): Promise<void> {
  await c.store.transaction(async (tx) => {
    await quarantineRunner(tx, i.runnerId, { reason: i.reason, source: 'refresh' }, c.deps.log);
  });
}

/** The refresh's activities (names start with `refresh` so the worker's list reads as one group). */
export function baselineActivities(deps: ActivityDeps) {
  const c = baselineSteps(deps);
  type Runner = { runnerId: string };
  return {
    refreshStart: (i: Runner) => refreshStart(c, i.runnerId),
    refreshSetDraining: (i: Runner & { draining: boolean }) =>
      setDraining(c, i.runnerId, i.draining),
    refreshHasActiveCheckpoint: (i: Runner): Promise<boolean> =>
      c.store.checkpoints.hasActive(i.runnerId),
    refreshPrepare: (i: Runner & { from: string | null; updateCmd?: string }) => prepare(c, i),
    refreshTakeBaseline: (i: Runner & { name: string }) => takeBaseline(c, i),
    refreshVerify: (i: Runner & { name: string; canaryPath: string }) => verifyBaseline(c, i),
    refreshCommit: (i: Runner & { name: string; previous: string | null }) => commitBaseline(c, i),
    refreshPrune: (i: Runner & { keep: number; current: string }) => pruneBaselines(c, i),
    refreshRestore: (i: Runner & { previous: string | null; attempted: string | null }) =>
      restorePrevious(c, i),
    refreshQuarantine: (i: Runner & { reason: string }) => quarantineAfterRefresh(c, i),
    /** Pauses the drained runner in its CI system (kept_for_drain; see holdIdleRunner). */
    refreshHoldRunner: (i: Runner) =>
      holdIdleRunner(deps, c.store, {
        runnerId: i.runnerId,
        kept: 'kept_for_drain',
        why: `runner '${i.runnerId}' is drained for a baseline refresh`,
      }),
    /** Unpauses it at the refresh's end, unless it is quarantined or still drains (releaseIdleRunner). */
    refreshReleaseRunner: (i: Runner) => releaseIdleRunner(deps, c.store, i),
    /** Waits for the runner's e2epool agent after the refresh's last reboot (readyAfterReboot). */
    refreshAwaitAgent: (i: Runner & { staleSession: string | null }) =>
      readyAfterReboot(deps, i.runnerId, i.staleSession),
  };
}
