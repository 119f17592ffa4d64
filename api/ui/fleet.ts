import { isActiveState, type Backend, type CheckpointState } from '../../common/states';
import type { InventoryStore } from '../../config/inventory';
import type { RunnerConfig } from '../../config/runner-schema';
import type { Store } from '../../store';
import type { FleetCheckpoint } from '../../store/checkpoints';
import type { GitLabPause, GitLabPauseCache } from './gitlab-pauses';
import type { FleetRefresh, RefreshWatch } from './refreshes';

/** The steps of a reset or a cleanup: the last reset's duration runs from the first one's start to the last one's end. */
export const RESET_STEPS = [
  'stop',
  'rollback',
  'start',
  'reset_cmd',
  'cleanup_cmd',
  'readiness',
  'delete_snapshot',
] as const;

/** A runner's agent: connected, closed moments ago, silent past the heartbeat timeout, or never seen. */
export type AgentStatus = 'connected' | 'disconnected' | 'unreachable' | 'never connected';

/** The fleet page's word for an agent session's status (none: never connected). */
function agentStatus(status: 'live' | 'unreachable' | 'closed' | undefined): AgentStatus {
  if (!status) return 'never connected';
  return status === 'live' ? 'connected' : status === 'closed' ? 'disconnected' : 'unreachable';
}

/** A checkpoint as a fleet row shows it (JSON: ISO dates). */
export interface FleetCheckpointDto {
  name: string;
  job_id: string;
  state: CheckpointState;
  active: boolean;
  created_at: string;
  ended_at: string | null;
  /** Proof of reset: true, false (the check failed), null (no answer yet or not verifiable). */
  verified: boolean | null;
}

/** One row of the fleet page, one per inventory runner; also the JSON of `GET /ui/api/fleet`. */
export interface FleetRow {
  runner_id: string;
  backend: Backend;
  /** The snapshot its resets roll back to now (a refresh's, else `baseline_snapshot`); null: none. */
  baseline: string | null;
  /** Draining (an operator's drain, or a baseline refresh under way): creates get 423. */
  draining: boolean;
  /** Where the runner is defined: the registry (`api`), which drain and quarantine change, or inventory.yml. */
  source: 'api' | 'inventory';
  agent: AgentStatus;
  agent_last_seen_at: string | null;
  /** False: the agent opens /ws/agent with the REST token the runner's CI jobs hold too. */
  has_agent_token: boolean;
  gitlab_runner_id: number | null;
  /** GitLab's own answer (null: GitLab is not configured or the runner has no gitlab_runner_id). */
  gitlab: { paused: boolean | null; checked_at: string | null; error: string | null } | null;
  /** From runner_pauses: since when e2epool has the runner paused; null when it does not. */
  paused_by_e2epool_since: string | null;
  checkpoint: FleetCheckpointDto | null;
  /** Why and since when the runner is quarantined (see docs/protocol.md#runner-registry); null when it is not. */
  quarantine: { reason: string; source: string; quarantined_at: string } | null;
  /** The end of a hold for debugging under way; null when the runner is not held. */
  held_until: string | null;
  /** Proxmox: its running, else last, baseline refresh workflow as Temporal has it; null: none (or Temporal did not answer). */
  refresh: FleetRefresh | null;
  last_reset: {
    checkpoint: string;
    state: CheckpointState;
    duration_ms: number | null;
    ended_at: string;
  } | null;
}

export interface FleetSnapshot {
  generated_at: string;
  /** Whether the GitLab column is GitLab's answer (else only e2epool's log). */
  gitlab_configured: boolean;
  runners: FleetRow[];
}

export interface FleetDeps {
  store: Store;
  inventory: InventoryStore;
  agentStaleAfterSeconds: number;
  gitlab: GitLabPauseCache | null;
  /** A snapshot is reused for this long: every viewer's refresh within it costs no query. */
  cacheMs: number;
  /** Temporal's view of the baseline refreshes; absent: the column stays empty. */
  refreshes?: RefreshWatch | null;
  /** Logs a failed read of Temporal (the page still shows the rest). */
  warn?: (msg: string, err: unknown) => void;
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

function fleetCheckpointDto(c: FleetCheckpoint): FleetCheckpointDto {
  return {
    name: c.name,
    job_id: c.jobId,
    state: c.state,
    active: isActiveState(c.state),
    created_at: c.createdAt.toISOString(),
    ended_at: iso(c.endedAt),
    verified: c.verified ?? null,
  };
}

/**
 * The fleet page's data: one row per inventory runner, read from Postgres in
 * six queries whatever the fleet's size, plus GitLab's cached pause answers.
 * A snapshot serves every request for `cacheMs` and concurrent requests share
 * one read, so the number of viewers and their refresh rate do not multiply
 * the load on Postgres.
 */
export class FleetView {
  private cached: { at: number; snapshot: Promise<FleetSnapshot> } | null = null;

  constructor(private readonly d: FleetDeps) {}

  /** Drops the cached snapshot: the next request reads anew (after a change of a runner through this instance). */
  invalidate(): void {
    this.cached = null;
  }

  /** `fresh`: read anew, not the cached snapshot (after a change made from the page). */
  snapshot(fresh = false): Promise<FleetSnapshot> {
    const now = Date.now();
    if (!fresh && this.cached && now - this.cached.at < this.d.cacheMs) return this.cached.snapshot;
    const snapshot = this.read();
    this.cached = { at: now, snapshot };
    // A failed read is not reused: the next request tries again.
    snapshot.catch(() => {
      if (this.cached?.snapshot === snapshot) this.cached = null;
    });
    return snapshot;
  }

  /** The Proxmox runners' refreshes; Temporal unreachable leaves the column empty, not the page. */
  private async refreshesOf(runners: RunnerConfig[]): Promise<Map<string, FleetRefresh>> {
    const ids = runners.filter((r) => r.backend === 'proxmox').map((r) => r.runner_id);
    if (!this.d.refreshes || ids.length === 0) return new Map();
    return this.d.refreshes.lookup(ids).catch((err: unknown) => {
      this.d.warn?.('fleet page: cannot read the baseline refreshes from Temporal', err);
      return new Map<string, FleetRefresh>();
    });
  }

  private async read(): Promise<FleetSnapshot> {
    const { store } = this.d;
    const runners = [...this.d.inventory.inventory.runners].sort((a, b) =>
      a.runner_id < b.runner_id ? -1 : a.runner_id > b.runner_id ? 1 : 0,
    );
    const ids = runners.map((r) => r.runner_id);
    const [agents, checkpoints, pauses, quarantines, refreshes] = await Promise.all([
      store.sessions.agentsOf(ids, this.d.agentStaleAfterSeconds),
      store.checkpoints.currentByRunner(ids),
      store.pauses.latestByRunner(ids),
      store.quarantine.ofRunners(ids),
      this.refreshesOf(runners),
    ]);
    const byRunner = new Map(checkpoints.map((c) => [c.runnerId, c]));
    const activeIds = checkpoints.flatMap((c) =>
      c.current && isActiveState(c.current.state) ? [c.current.id] : [],
    );
    const cleanIds = checkpoints.flatMap((c) => (c.lastClean ? [c.lastClean.id] : []));
    const [holds, spans] = await Promise.all([
      store.holds.untilOf(activeIds),
      store.operations.spans(cleanIds, RESET_STEPS),
    ]);
    const pausedSince = new Map(pauses.filter((p) => p.owned).map((p) => [p.runnerId, p.pausedAt]));
    const gitlabIds = runners.flatMap((r) => (r.gitlab_runner_id ? [r.gitlab_runner_id] : []));
    const lastChange = new Map(pauses.map((p) => [p.runnerId, p.changedAt]));
    const changedAt = new Map(
      runners.flatMap((r) => {
        const at = lastChange.get(r.runner_id);
        return r.gitlab_runner_id && at ? [[r.gitlab_runner_id, at] as const] : [];
      }),
    );
    const gitlab = this.d.gitlab?.lookup(gitlabIds, changedAt) ?? new Map<number, GitLabPause>();
    const now = Date.now();

    const rows = runners.map((r): FleetRow => {
      const agent = agents.get(r.runner_id);
      const cps = byRunner.get(r.runner_id);
      const current = cps?.current ?? null;
      const clean = cps?.lastClean ?? null;
      const until = current ? (holds.get(current.id) ?? null) : null;
      const g = r.gitlab_runner_id && this.d.gitlab ? gitlab.get(r.gitlab_runner_id) : undefined;
      return {
        runner_id: r.runner_id,
        backend: r.backend,
        ...baselineOf(this.d.inventory.inventory, r),
        agent: agentStatus(agent?.status),
        agent_last_seen_at: iso(agent?.lastSeenAt ?? null),
        source: this.d.inventory.inventory.inFile(r.runner_id) ? 'inventory' : 'api',
        has_agent_token: this.d.inventory.inventory.hasAgentToken(r.runner_id),
        gitlab_runner_id: r.gitlab_runner_id ?? null,
        gitlab: g ? { paused: g.paused, checked_at: iso(g.checkedAt), error: g.error } : null,
        paused_by_e2epool_since: iso(pausedSince.get(r.runner_id) ?? null),
        checkpoint: current ? fleetCheckpointDto(current) : null,
        quarantine: quarantineDto(quarantines.get(r.runner_id)),
        // A hold is over when released (held_until cleared), when its time
        // passed (the run writes nothing then), or with its checkpoint.
        held_until:
          until && until.getTime() > now && current && current.state === 'finalize_queued'
            ? until.toISOString()
            : null,
        refresh: refreshes.get(r.runner_id) ?? null,
        last_reset:
          clean && clean.endedAt
            ? {
                checkpoint: clean.name,
                state: clean.state,
                duration_ms: spans.get(clean.id) ?? null,
                ended_at: clean.endedAt.toISOString(),
              }
            : null,
      };
    });
    return {
      generated_at: new Date(now).toISOString(),
      gitlab_configured: this.d.gitlab !== null,
      runners: rows,
    };
  }
}

/** A runner's current baseline (a refresh's, else `baseline_snapshot`) and whether it drains. */
function baselineOf(
  inventory: InventoryStore['inventory'],
  r: RunnerConfig,
): Pick<FleetRow, 'baseline' | 'draining'> {
  return {
    baseline:
      r.backend === 'proxmox'
        ? (inventory.currentBaseline(r.runner_id) ?? r.baseline_snapshot ?? null)
        : null,
    draining: inventory.isDraining(r.runner_id),
  };
}

function quarantineDto(
  q: { reason: string; source: string; at: Date } | undefined,
): FleetRow['quarantine'] {
  return q ? { reason: q.reason, source: q.source, quarantined_at: q.at.toISOString() } : null;
}
