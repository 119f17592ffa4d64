import type { PauseTarget } from '../common/checkpoint';
import { changeRows, selectRows, type Queryable } from './queryable';

/**
 * Where a checkpoint's pause of its runner stands (the `runner_pauses.state`
 * values its CHECK constraint allows). Open (e2epool's to undo):
 * - `sent`: the pause (GitLab) or the label removal (GitHub) was sent and no
 *   answer came back: e2epool may have paused the runner;
 * - `paused`: the CI system confirmed it;
 * - `kept_for_drain`: the unpause left it paused because the runner drains
 *   (see docs/protocol.md#runner-registry); the reconciler undoes it once undrained;
 * - `kept_for_quarantine`: the same for a quarantined runner, undone once unquarantined.
 * Closed: `unpaused` (by the run or the reconciler), `left_paused` (an
 * operator's release left it paused on purpose: no longer e2epool's),
 * `unpaused_elsewhere` (someone else undid it).
 */
export type PauseState =
  | 'sent'
  | 'paused'
  | 'kept_for_drain'
  | 'kept_for_quarantine'
  | 'unpaused'
  | 'left_paused'
  | 'unpaused_elsewhere';

/** The states in which the pause is e2epool's (the table's generated `owned` column). */
export const OPEN_PAUSE_STATES: readonly PauseState[] = [
  'sent',
  'paused',
  'kept_for_drain',
  'kept_for_quarantine',
];

/** The open states an unpause leaves behind when the runner must stay paused. */
export type KeptState = 'kept_for_drain' | 'kept_for_quarantine';

/** A checkpoint's pause of its runner, as `runner_pauses` records it. */
export interface RunnerPause {
  checkpointId: number;
  runnerId: string;
  ci: PauseTarget['kind'];
  /** GitLab runner id, or GitHub runner id; null only for rows migrated from logs that did not name it. */
  ciRunnerId: number | null;
  /** GitHub: the labels e2epool removed (or asked GitHub to remove), to put back; GitLab: none. */
  labels: string[];
  state: PauseState;
  /** Whether the pause is e2epool's to undo (state among OPEN_PAUSE_STATES). */
  owned: boolean;
  /** When the pause that is (or was) open began: a pause of a later run that finds it open keeps it. */
  pausedAt: Date;
  /** When it closed; null while open. */
  unpausedAt: Date | null;
  /** The last change of the row: the newest change of a runner's rows is the runner's pause state. */
  changedAt: Date;
}

/** A runner's newest pause, with the name of the checkpoint it belongs to. */
export interface LatestRunnerPause extends RunnerPause {
  checkpointName: string;
}

const COLUMNS = `p.checkpoint_id AS "checkpointId", p.runner_id AS "runnerId", p.ci,
  p.ci_runner_id::float8 AS "ciRunnerId", p.labels, p.state, p.owned,
  p.paused_at AS "pausedAt", p.unpaused_at AS "unpausedAt", p.changed_at AS "changedAt"`;

/**
 * The `runner_pauses` table: one row per checkpoint that paused its runner,
 * the only record of whether (and which labels) e2epool has a runner paused.
 * The operation log says the same in words for operators; nothing reads the
 * words back. Every write is idempotent (keyed by the checkpoint), as the
 * activities that make them are retried.
 */
export class RunnerPauseStore {
  constructor(private readonly q: Queryable) {}

  /**
   * Records that the checkpoint sent (`sent`) or made (`paused`) a pause of
   * its runner, removing `labels` (GitHub: the whole set e2epool has off now,
   * the caller's union with what an open pause had). A pause still open keeps
   * its start; a closed one is opened again from `at`.
   */
  async opened(p: {
    checkpointId: number;
    runnerId: string;
    target: PauseTarget;
    state: 'sent' | 'paused';
    labels?: string[];
    at?: Date;
  }): Promise<void> {
    const t = p.target;
    await this.q.query(
      `INSERT INTO runner_pauses AS p
         (checkpoint_id, runner_id, ci, ci_runner_id, github_scope, labels, state, paused_at, changed_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
       ON CONFLICT (checkpoint_id) DO UPDATE SET
         ci = EXCLUDED.ci, ci_runner_id = EXCLUDED.ci_runner_id, github_scope = EXCLUDED.github_scope,
         labels = EXCLUDED.labels, state = EXCLUDED.state,
         paused_at = CASE WHEN p.owned THEN p.paused_at ELSE EXCLUDED.paused_at END,
         unpaused_at = NULL, changed_at = now()`,
      [
        p.checkpointId,
        p.runnerId,
        t.kind,
        t.kind === 'gitlab' ? t.gitlabRunnerId : t.githubRunnerId,
        t.kind === 'github' ? JSON.stringify(t.scope) : null,
        JSON.stringify(p.labels ?? []),
        p.state,
        p.at ?? new Date(),
      ],
    );
  }

  /**
   * Moves the checkpoint's open pause to `state` (closing it, or, with a
   * KeptState, keeping it e2epool's while the runner drains or is quarantined). Returns
   * whether an open pause was there: a retry finds it moved already.
   */
  async closed(
    checkpointId: number,
    state: 'unpaused' | 'left_paused' | 'unpaused_elsewhere' | KeptState,
  ): Promise<boolean> {
    const { count } = await changeRows(
      this.q,
      `UPDATE runner_pauses
          SET state = $2::varchar, changed_at = now(),
              unpaused_at = CASE WHEN $2::varchar LIKE 'kept_for_%' THEN NULL ELSE now() END
        WHERE checkpoint_id = $1 AND owned`,
      [checkpointId, state],
    );
    return count > 0;
  }

  /** The checkpoint's pause while it is e2epool's (open), else null. */
  async openOf(checkpointId: number): Promise<RunnerPause | null> {
    const [row] = await selectRows<RunnerPause>(
      this.q,
      `SELECT ${COLUMNS} FROM runner_pauses p WHERE p.checkpoint_id = $1 AND p.owned`,
      [checkpointId],
    );
    return row ?? null;
  }

  /**
   * The runner's newest checkpoint: a pause e2epool makes of an idle runner
   * (quarantined, or drained by a baseline refresh) is recorded on its row,
   * as the table is keyed by checkpoint. Null: the runner never had one.
   */
  async anchorOf(runnerId: string): Promise<{ id: number; name: string } | null> {
    const [row] = await selectRows<{ id: number; name: string }>(
      this.q,
      `SELECT id, name FROM checkpoints WHERE runner_id = $1 ORDER BY id DESC LIMIT 1`,
      [runnerId],
    );
    return row ?? null;
  }

  /**
   * Each runner's newest pause (the one changed last): when it is open,
   * e2epool paused the runner and nothing has undone it since. A pause that
   * found the runner paused by someone else has no row.
   */
  async latestByRunner(runnerIds: readonly string[]): Promise<LatestRunnerPause[]> {
    if (runnerIds.length === 0) return [];
    return selectRows<LatestRunnerPause>(
      this.q,
      `SELECT DISTINCT ON (p.runner_id) ${COLUMNS}, c.name AS "checkpointName"
         FROM runner_pauses p JOIN checkpoints c ON c.id = p.checkpoint_id
        WHERE p.runner_id = ANY($1)
        ORDER BY p.runner_id, p.changed_at DESC, p.checkpoint_id DESC`,
      [runnerIds],
    );
  }
}
