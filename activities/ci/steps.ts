import { keptPausedForDrain, keptPausedForQuarantine } from '../../common/checkpoint';
import { fail } from '../../common/fail';
import type { Logger } from '../../config/logger';
import { createStore } from '../../store';
import type { KeptState } from '../../store/runner-pauses';
import type { ActivityDeps } from '../deps';
import { activityKey, withOperation, type StepInput, type StepMeta } from '../operation-log';
import { reportStreak, streakQuarantine, streakRule } from '../quarantine';
import { checkHold, type RunnerHold } from './system';

/** How many late holds one release undoes before it leaves the runner to whoever keeps holding it. */
export const LATE_PAUSE_UNDOS = 3;

/** The log, metrics and row keys the steps of both CI systems share. */
function ciBase(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);
  const { operations, pauses } = store;
  /** The runner's backend for the step metrics; CI steps log none (not a backend's step). */
  const backendOf = (runnerId: string | undefined) =>
    runnerId === undefined ? null : (deps.inventory.inventory.forReset(runnerId)?.backend ?? null);
  return {
    deps,
    store,
    operations,
    pauses,
    log: { operations, metrics: deps.metrics },
    meta: (i: StepInput, operation: string): StepMeta => ({
      checkpointId: i.checkpointId,
      runnerId: i.runnerId,
      backend: null,
      runnerBackend: backendOf(i.runnerId),
      operation,
      key: activityKey(operation, `${i.checkpointName}:${operation}:${i.round}`),
    }),
    /** Times a step that writes no log row (see pauseBeforeBookkeeping). */
    timed: <T>(step: string, runnerId: string | undefined, fn: () => Promise<T>) =>
      deps.metrics.timeStep(backendOf(runnerId), step, fn),
  };
}

type CiBase = ReturnType<typeof ciBase>;

/** What the steps of both CI systems share, the steps below bound to it. */
export function ciSteps(deps: ActivityDeps) {
  const c = ciBase(deps);
  return {
    ...c,
    skip: <T>(m: StepMeta, value: T, detail: string) => skipUnconfigured(c, m, value, detail),
    check: <S>(runnerId: string | undefined, hold: RunnerHold<S, unknown> | null) =>
      checkStep(c, runnerId, hold),
    send: <P>(
      runnerId: string | undefined,
      hold: RunnerHold<unknown, P> | null,
      part: P,
      setting: string,
    ) => sendStep(c, runnerId, hold, part, setting),
    release: (i: ReleaseInput, r: Release) => releaseStep(c, i, r),
    undoLate: <S, P>(hold: RunnerHold<S, P>, part: P, words: LateHoldWords<P>) =>
      undoLateHolds(deps.log, hold, part, words),
  };
}

export type CiSteps = ReturnType<typeof ciSteps>;

/** A logged step of a CI system that is not configured: skipped, with `detail`. */
function skipUnconfigured<T>(c: CiBase, m: StepMeta, value: T, detail: string) {
  return withOperation(c.log, m, async () => ({ value, detail, result: 'skipped' as const }));
}

/**
 * The runner now, for the workflow to decide on a hold (null: the CI system
 * is not configured). Writes nothing, so it works while Postgres is down; a
 * failure to ask is PauseCheckFailed: the caller must then hold nothing.
 */
async function checkStep<S>(
  c: CiBase,
  runnerId: string | undefined,
  hold: RunnerHold<S, unknown> | null,
): Promise<S | null> {
  return hold ? c.timed('pause_check', runnerId, () => checkHold(hold)) : null;
}

/**
 * Sends the hold the workflow decided on. Writes nothing: the workflow's
 * history is the record, logged with the checkpoint's next state change.
 */
async function sendStep<P>(
  c: CiBase,
  runnerId: string | undefined,
  hold: RunnerHold<unknown, P> | null,
  part: P,
  setting: string,
): Promise<P> {
  if (!hold) throw fail('PermanentFailure', `${setting} is not set`);
  return c.timed('pause', runnerId, () => hold.hold(part));
}

/**
 * What an unpause activity is called with. `endsResetFailed`: the run is
 * about to end `reset_failed` (an operator released it, or canceled it
 * mid-reset); absent in inputs of runs from before 2.0.0.
 */
export type ReleaseInput = StepInput & { endsResetFailed?: boolean };

/** A release: `release` null when the CI system is not configured; it returns the step's detail. */
interface Release {
  unconfigured: string;
  /** The runner, as keptPausedForDrain names it. */
  what: string;
  release: (() => Promise<string>) | null;
}

/**
 * The release step (unpause; put the labels back), logged as `unpause`:
 * skipped when the CI system is not configured (`release` null), or while
 * the runner is quarantined or drains (its pause stays open, see keptPaused,
 * and the reconciler releases it once that ends). Closes the checkpoint's
 * runner_pauses row, and adds how long the runner was held (since that row
 * opened) to e2epool_runner_paused_seconds_total. `release` returns the
 * step's detail.
 */
async function releaseStep(c: CiBase, i: ReleaseInput, r: Release): Promise<void> {
  const { deps, pauses } = c;
  const release = r.release;
  // After an earlier attempt that released (its completion lost) no pause
  // is open, so nothing is counted twice.
  const pausedSince = release
    ? await pauses
        .openOf(i.checkpointId)
        .then((open) => open?.pausedAt ?? null)
        .catch((err: unknown) => {
          deps.log.warn(
            { err: (err as Error).message, runnerId: i.runnerId },
            'metrics: cannot read when the runner was paused',
          );
          return null;
        })
    : null;
  await withOperation(c.log, c.meta(i, 'unpause'), async () => {
    if (!release) return { value: undefined, detail: r.unconfigured, result: 'skipped' as const };
    const kept = await keptPaused(c, i);
    if (kept) {
      await pauses.closed(i.checkpointId, kept);
      const detail =
        kept === 'kept_for_drain'
          ? keptPausedForDrain(i.runnerId, r.what)
          : keptPausedForQuarantine(i.runnerId, r.what);
      return { value: undefined, detail, result: 'skipped' as const };
    }
    const detail = await release();
    await pauses.closed(i.checkpointId, 'unpaused');
    if (pausedSince) {
      const seconds = Math.max(0, (Date.now() - pausedSince.getTime()) / 1000);
      deps.metrics.runnerPausedSeconds.inc({ runner_id: i.runnerId }, seconds);
    }
    return { value: undefined, detail };
  });
}

/**
 * Why the unpause must leave the runner paused, or null. Quarantined (read
 * from Postgres now: the inventory's copy may not have seen a quarantine of
 * moments ago); or about to be: a run that says it ends `reset_failed`
 * (released by an operator, or canceled, even mid-reset), or, for an input
 * from before that flag, a checkpoint still in needs_attention at its
 * release, ends `reset_failed`, and when that completes a failure streak the
 * runner is quarantined here, before it is unpaused (the terminal state's own
 * check then finds it quarantined). A checkpoint whose reset worked but whose
 * unpause waits in needs_attention reads the same and may quarantine one
 * checkpoint early, never too late. Else draining.
 */
async function keptPaused(c: CiBase, i: ReleaseInput): Promise<KeptState | null> {
  const { deps, store } = c;
  if (await store.quarantine.isQuarantined(i.runnerId)) return 'kept_for_quarantine';
  if (
    i.endsResetFailed === true ||
    (await store.checkpoints.stateOf(i.checkpointId)) === 'needs_attention'
  ) {
    const rule = streakRule(deps);
    const decision = await store.transaction((tx) =>
      streakQuarantine(
        tx,
        rule,
        { id: i.checkpointId, name: i.checkpointName, runnerId: i.runnerId },
        true,
      ),
    );
    // Past the cap the terminal state's check reports it (once).
    if (decision.kind === 'quarantined') reportStreak(rule, i.runnerId, decision);
    if (decision.kind === 'quarantined' || decision.kind === 'already')
      return 'kept_for_quarantine';
  }
  return deps.inventory.inventory.isDraining(i.runnerId) ? 'kept_for_drain' : null;
}

/** What undoLateHolds says, in the words of one CI system. */
export interface LateHoldWords<P> {
  /** Log fields naming the runner, and what of the hold is back when known. */
  fields: (back?: P) => Record<string, unknown>;
  /** Log messages: the read-back failed; gave up; releasing again. */
  unreadable: string;
  gaveUp: string;
  again: string;
  /** The step's detail after `n` late holds were undone. */
  undid: (n: number) => string;
  /** The step's detail when the hold came back after every one of `undone + 1` releases. */
  leftHeld: (back: P, undone: number) => string;
}

/**
 * Reads the runner back after a release. A hold request of an earlier
 * attempt (one whose worker crashed, or that timed out, with its request
 * still on the way) can land after the release and leave the runner held for
 * good with nobody to undo it: a runner that reads held again is released
 * again (idempotent), and that is logged. Bounded by LATE_PAUSE_UNDOS, so an
 * operator who holds it at this moment is not fought forever. Returns what
 * was found, for the step's detail; null when the runner reads released. A
 * failed read-back leaves the release as done (the reconciler still checks).
 */
async function undoLateHolds<S, P>(
  log: Logger,
  hold: RunnerHold<S, P>,
  part: P,
  words: LateHoldWords<P>,
): Promise<string | null> {
  let undone = 0;
  for (;;) {
    let back: P | null;
    try {
      back = hold.heldIn(await hold.read(), part);
    } catch (err) {
      log.warn({ ...words.fields(), err: (err as Error).message }, words.unreadable);
      return undone > 0 ? words.undid(undone) : null;
    }
    if (back === null) return undone > 0 ? words.undid(undone) : null;
    if (undone >= LATE_PAUSE_UNDOS) {
      log.error({ ...words.fields(back), undone }, words.gaveUp);
      return words.leftHeld(back, undone);
    }
    log.warn(words.fields(back), words.again);
    await hold.release(back);
    undone += 1;
  }
}
