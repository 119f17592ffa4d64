/**
 * Quarantine decisions of the worker (see docs/protocol.md#runner-registry):
 * a runner whose resets keep failing, or whose reset could not be proven,
 * takes no checkpoint and stays paused in its CI system until an operator
 * unquarantines it.
 */
import type { Logger } from '../config/logger';
import type { Stores } from '../store';
import type { QuarantineChange } from '../store/quarantine';
import type { QuarantineSource } from '../store/runners';
import type { ActivityDeps } from './deps';
import type { WorkerMetrics } from './metrics';
import { activityKey, writeOperation } from './operation-log';

/** What the failure-streak rule needs (settings E2EPOOL_QUARANTINE_AFTER and _MAX_PERCENT). */
export interface StreakRule {
  quarantineAfter: number;
  quarantineMaxPercent: number;
  /** Active runners now (file and registry): the cap is a share of them. */
  activeRunners: () => number;
  metrics: WorkerMetrics;
  log: Logger;
}

/** The rule as the worker's settings and inventory say. */
export function streakRule(deps: ActivityDeps): StreakRule {
  return {
    quarantineAfter: deps.settings.quarantineAfter,
    quarantineMaxPercent: deps.settings.quarantineMaxPercent,
    activeRunners: () => deps.inventory.inventory.size,
    metrics: deps.metrics,
    log: deps.log,
  };
}

/** What a streak check decided; `reason` is set when there is a streak. */
export type StreakDecision =
  | { kind: 'none' }
  | { kind: 'already'; reason: string }
  | { kind: 'quarantined'; reason: string }
  | { kind: 'cap_reached'; reason: string; cap: number };

/**
 * Quarantines a runner, inventory file or registry, whatever the cap (a
 * failed reset verification uses this). Idempotent: a quarantined runner
 * keeps its first reason, source and time (`changed` false). Run it in the
 * transaction that records why, so a retry finds it done.
 */
export async function quarantineRunner(
  tx: Pick<Stores, 'quarantine'>,
  runnerId: string,
  q: { reason: string; source: QuarantineSource },
  log: Logger,
): Promise<QuarantineChange> {
  const change = await tx.quarantine.quarantine(runnerId, q);
  if (change.changed) {
    log.warn(
      { runnerId, reason: q.reason, source: q.source },
      `runner '${runnerId}' quarantined: ${q.reason}`,
    );
  }
  return change;
}

/** How many runners may be quarantined for failure streaks: a share of the fleet, at least one. */
export function streakCap(activeRunners: number, maxPercent: number): number {
  return Math.max(1, Math.floor((activeRunners * maxPercent) / 100));
}

/**
 * The failure-streak rule: when the runner's last E2EPOOL_QUARANTINE_AFTER
 * checkpoints whose reset ended all ended `reset_failed`, the runner is
 * quarantined (source `failure_streak`), unless the streak quarantines
 * already fill the cap: then nothing is quarantined (a fleet-wide outage,
 * such as a broken reset script or an unreachable Proxmox, must never empty
 * the pool) and the caller reports it. `pending`: the checkpoint has not
 * ended yet and is about to end `reset_failed` (it counts as the newest).
 * Reads states, counts nothing: a retry decides the same. Only in a transaction.
 */
export async function checkStreak(
  tx: Stores,
  rule: StreakRule,
  c: { id: number; name: string; runnerId: string },
  pending: boolean,
): Promise<StreakDecision> {
  const n = rule.quarantineAfter;
  const earlier = await tx.quarantine.lastEndStates(
    c.runnerId,
    pending ? n - 1 : n,
    pending ? c.id : undefined,
  );
  const states = pending ? ['reset_failed', ...earlier] : earlier;
  if (states.length < n || states.some((s) => s !== 'reset_failed')) return { kind: 'none' };
  const reason = `the last ${n} checkpoint${n === 1 ? '' : 's'} ended reset_failed (the newest: ${c.name})`;
  if (await tx.quarantine.isQuarantined(c.runnerId)) return { kind: 'already', reason };
  await tx.quarantine.lockStreakCap();
  const cap = streakCap(rule.activeRunners(), rule.quarantineMaxPercent);
  if ((await tx.quarantine.countStreakQuarantined()) >= cap)
    return { kind: 'cap_reached', reason, cap };
  const change = await quarantineRunner(
    tx,
    c.runnerId,
    { reason, source: 'failure_streak' },
    rule.log,
  );
  return change.changed ? { kind: 'quarantined', reason } : { kind: 'none' };
}

/** Reports a decision once its transaction committed: the cap gauge, and a warning past the cap. */
export function reportStreak(rule: StreakRule, runnerId: string, d: StreakDecision): void {
  if (d.kind === 'quarantined') rule.metrics.quarantineCapReached.set(0);
  if (d.kind !== 'cap_reached') return;
  rule.metrics.quarantineCapReached.set(1);
  rule.log.warn(
    { runnerId, reason: d.reason, cap: d.cap },
    `runner '${runnerId}' not quarantined although ${d.reason}: ${d.cap} runner(s) are quarantined for failure streaks already, the cap of E2EPOOL_QUARANTINE_MAX_PERCENT=${rule.quarantineMaxPercent}%`,
  );
}

/**
 * The failure-streak rule for a checkpoint that ended `reset_failed` (its
 * reset failed and an operator released it, or the run was canceled), or
 * that is about to (`pending`, see checkStreak), with a `quarantine` note in
 * the checkpoint's log when it quarantined the runner or the cap stopped it.
 * Keyed by the activity call, so a retry rewrites its own row.
 */
export async function streakQuarantine(
  tx: Stores,
  rule: StreakRule,
  c: { id: number; name: string; runnerId: string },
  pending: boolean,
): Promise<StreakDecision> {
  const decision = await checkStreak(tx, rule, c, pending);
  // Past the cap an early (pending) check writes nothing: the end's own check notes it once.
  const note = pending && decision.kind === 'cap_reached' ? null : streakNote(decision);
  if (note) {
    const now = new Date();
    await writeOperation(
      tx.operations,
      {
        checkpointId: c.id,
        runnerId: c.runnerId,
        backend: null,
        operation: 'quarantine',
        key: activityKey('quarantine', `${c.name}:quarantine`),
      },
      { ...note, startedAt: now, finishedAt: now },
    );
  }
  return decision;
}

/** The detail of the operation-log row a decision writes (null: none). */
function streakNote(d: StreakDecision): { result: 'ok' | 'skipped'; detail: string } | null {
  if (d.kind === 'quarantined') return { result: 'ok', detail: `runner quarantined: ${d.reason}` };
  if (d.kind === 'cap_reached')
    return {
      result: 'skipped',
      detail: `not quarantined although ${d.reason}: the failure-streak cap (${d.cap}) is reached`,
    };
  return null;
}
