/**
 * e2epool's own hold on an idle runner in its CI system (docs/operators.md,
 * "Quarantine", "Baseline refresh"): a quarantined runner that no checkpoint
 * holds, and a runner a baseline refresh drains, are paused (GitLab) or lose
 * their pause labels (GitHub) here, by the rules of a checkpoint's pause: ask
 * first, never take over a hold somebody else made, record before sending.
 * runner_pauses records the hold on the runner's newest checkpoint (the table
 * is keyed by checkpoint) in a kept state, so the reconciler undoes it, and
 * nothing else, once the runner is neither quarantined nor draining.
 */
import type { PauseTarget } from '../common/checkpoint';
import { pauseTarget } from '../config/checkpoint-input';
import { createStore, type Store } from '../store';
import type { KeptState } from '../store/runner-pauses';
import { checkHold } from './ci/system';
import type { ActivityDeps } from './deps';
import { carried, githubHold } from './github/steps';
import { gitlabHold } from './gitlab/steps';
import { activityKey, writeOperation } from './operation-log';

/** One runner's hold, whichever its CI system. */
interface IdleHold {
  target: PauseTarget;
  what: string;
  /** What e2epool would take now (GitLab: the pause, no labels); null: somebody else holds it already. */
  takeable(): Promise<string[] | null>;
  /** Takes it; returns the labels taken (GitLab: none). */
  take(labels: string[]): Promise<string[]>;
  /** Gives back what of it is still off. */
  give(labels: string[]): Promise<void>;
}

/** The runner's hold; null when it has no pause target or this worker no client of its CI system. */
function idleHold(deps: ActivityDeps, runnerId: string): IdleHold | null {
  const r = deps.inventory.inventory.forReset(runnerId);
  const target = r ? pauseTarget(r) : null;
  if (target?.kind === 'gitlab' && deps.gitlab) {
    const h = gitlabHold(deps.gitlab, target.gitlabRunnerId);
    return {
      target,
      what: h.what,
      takeable: async () => ((await checkHold(h)) ? null : []),
      take: async () => {
        await h.hold(true);
        return [];
      },
      give: () => h.release(true),
    };
  }
  if (target?.kind === 'github' && deps.github) {
    const h = githubHold(deps.github, target);
    return {
      target,
      what: h.what,
      takeable: async () => {
        const present = carried(target.labels, await checkHold(h));
        return present.length > 0 ? present : null;
      },
      take: (labels) => h.hold(labels),
      give: async (labels) => {
        const missing = h.heldIn(await h.read(), labels);
        if (missing) await h.release(missing);
      },
    };
  }
  return null;
}

/** Notes the hold's step in the anchor checkpoint's operation log (keyed by the activity call). */
async function note(
  store: Store,
  c: { id: number; name: string; runnerId: string },
  step: 'hold' | 'release',
  detail: string,
): Promise<void> {
  const now = new Date();
  await writeOperation(
    store.operations,
    {
      checkpointId: c.id,
      runnerId: c.runnerId,
      backend: null,
      operation: step === 'hold' ? 'pause' : 'unpause',
      key: activityKey(`idle-${step}`, `${c.name}:idle-${step}:${now.getTime()}`),
    },
    { result: 'ok', detail, startedAt: now, finishedAt: now },
  );
}

/**
 * Holds the idle runner in its CI system, recorded as `kept` (why it stays
 * held). A hold e2epool has already (an earlier attempt; a checkpoint's kept
 * pause) is kept; one somebody else made is left alone and never recorded,
 * so nothing of e2epool's ever releases it. Returns what it did.
 */
export async function holdIdleRunner(
  deps: ActivityDeps,
  store: Store,
  i: { runnerId: string; kept: KeptState; why: string },
): Promise<string> {
  const hold = idleHold(deps, i.runnerId);
  if (!hold) return `runner '${i.runnerId}' has no CI system e2epool can pause it in`;
  const [latest] = await store.pauses.latestByRunner([i.runnerId]);
  if (latest?.owned) {
    if (latest.state === 'sent' || latest.state === 'paused')
      await store.pauses.closed(latest.checkpointId, i.kept);
    return `${hold.what} is held by e2epool already`;
  }
  const anchor = await store.pauses.anchorOf(i.runnerId);
  if (!anchor) {
    deps.log.warn(
      { runnerId: i.runnerId },
      `runner '${i.runnerId}' never ran a checkpoint: e2epool has nowhere to record a pause of it, so it does not pause it (${i.why})`,
    );
    return `not paused: runner '${i.runnerId}' never ran a checkpoint`;
  }
  const labels = await hold.takeable();
  if (labels === null)
    return `${hold.what} is held by somebody else already: left alone, and never released by e2epool`;
  const fact = { checkpointId: anchor.id, runnerId: i.runnerId, target: hold.target };
  // Recorded before it is sent: a pause that lands after a crash is still e2epool's.
  await store.pauses.opened({ ...fact, state: 'sent', labels });
  const taken = await hold.take(labels);
  if (hold.target.kind === 'github' && taken.length === 0) {
    await store.pauses.closed(anchor.id, 'unpaused_elsewhere');
    return `${hold.what} lost the labels ${JSON.stringify(labels)} meanwhile: somebody else removed them`;
  }
  const detail = `${hold.what} paused: ${i.why}`;
  await store.transaction(async (tx) => {
    await tx.pauses.opened({ ...fact, state: 'paused', labels: taken });
    await tx.pauses.closed(anchor.id, i.kept);
  });
  await note(store, { ...anchor, runnerId: i.runnerId }, 'hold', detail);
  return detail;
}

/**
 * Whether the runner drains, read from Postgres now: a registry runner's
 * admin drain (`runners.draining`) or a drain in `runner_state` (an
 * inventory-file runner's, admin or baseline refresh). The inventory's
 * in-memory copy may not have seen a drain of moments ago.
 */
async function drainingNow(store: Store, runnerId: string): Promise<boolean> {
  const [registry, state] = await Promise.all([
    store.runners.get(runnerId),
    store.runnerState.get(runnerId),
  ]);
  return registry?.draining === true || state.draining;
}

/**
 * Releases the runner's hold that e2epool has (holdIdleRunner's, or a
 * checkpoint's kept pause) unless the runner must stay held: quarantined, or
 * draining (read from Postgres now); then it stays, recorded as such, for
 * the reconciler. Returns what it did.
 */
export async function releaseIdleRunner(
  deps: ActivityDeps,
  store: Store,
  i: { runnerId: string },
): Promise<string> {
  const [latest] = await store.pauses.latestByRunner([i.runnerId]);
  if (!latest?.owned) return 'e2epool holds no pause of it';
  if (await store.checkpoints.hasActive(i.runnerId))
    return 'its active checkpoint releases it at its end';
  if (await store.quarantine.isQuarantined(i.runnerId)) {
    await store.pauses.closed(latest.checkpointId, 'kept_for_quarantine');
    return 'quarantined: it stays paused until it is unquarantined';
  }
  if (await drainingNow(store, i.runnerId)) {
    await store.pauses.closed(latest.checkpointId, 'kept_for_drain');
    return 'draining: it stays paused until it is undrained';
  }
  const hold = idleHold(deps, i.runnerId);
  // Left for the reconciler of a worker that has the client (it unpauses open pauses).
  if (!hold || hold.target.kind !== latest.ci)
    return `runner '${i.runnerId}': no client of its CI system here, left to the reconciler`;
  await hold.give(latest.labels);
  await store.pauses.closed(latest.checkpointId, 'unpaused');
  const detail = `${hold.what} unpaused`;
  await note(
    store,
    { id: latest.checkpointId, name: latest.checkpointName, runnerId: i.runnerId },
    'release',
    detail,
  );
  return detail;
}

/** The quarantine's hold of an idle runner (runnerQuarantineWorkflow). */
export function runnerHoldActivities(deps: ActivityDeps) {
  const store = createStore(deps.dataSource);
  return {
    /**
     * Pauses a quarantined runner in its CI system when no checkpoint will:
     * one that holds a checkpoint is kept paused at that checkpoint's end
     * (its unpause sees the quarantine). Quarantine read from Postgres now,
     * before and after: a runner unquarantined meanwhile is released at once.
     */
    async quarantineHoldRunner(i: { runnerId: string }): Promise<string> {
      const { runnerId } = i;
      if (!(await store.quarantine.isQuarantined(runnerId))) return 'not quarantined';
      if (await store.checkpoints.hasActive(runnerId))
        return 'its active checkpoint keeps it paused at its end';
      const held = await holdIdleRunner(deps, store, {
        runnerId,
        kept: 'kept_for_quarantine',
        why: `runner '${runnerId}' is quarantined; it stays paused until it is unquarantined`,
      });
      if (await store.quarantine.isQuarantined(runnerId)) return held;
      return `${held}; unquarantined meanwhile: ${await releaseIdleRunner(deps, store, { runnerId })}`;
    },
  };
}
