import { changeRows, selectRows, type Queryable } from './queryable';

/**
 * `pending`: waits for the instance holding the runner's agent to claim it;
 * `sent`: claimed by that instance and sent to the agent; `done`: the agent
 * answered; `failed`: lost (the agent went away, or did not answer in time).
 */
export type CommandState = 'pending' | 'sent' | 'done' | 'failed';

/** A command for a runner's agent, queued by a worker. */
export interface NewCommand {
  /** Identity of the activity call that wants it run: a retry reuses the row. */
  id: string;
  runnerId: string;
  cmd: string;
  timeoutSeconds: number;
  /**
   * How long, from now, the command may wait to be sent: its worker stops
   * waiting for it then, and no instance sends it afterwards.
   */
  sendWithinSeconds: number;
  /** The checkpoint whose log gets the command's output. */
  checkpointId?: number | null;
}

/** Where a command stands, with its result once there is one. */
export interface CommandStatus {
  state: CommandState;
  exitCode: number | null;
  stdout: string | null;
  stderr: string | null;
  error: string | null;
  /**
   * Sent on a session that is no longer the runner's open one (its instance
   * crashed, or a newer connection replaced it): no reply will be taken for it.
   */
  lost: boolean;
}

/** Sent on a session that is gone: not the runner's current session, or closed. */
const SESSION_GONE = `NOT EXISTS (
  SELECT 1 FROM agent_sessions s
   WHERE s.runner_id = c.runner_id AND s.session_id = c.session_id AND s.closed_at IS NULL)`;

/** What Postgres `text` can hold: an agent may send a NUL, which it refuses. */
function storable(s: string | null): string | null {
  return s === null ? null : s.replaceAll('\u0000', '\uFFFD');
}

/** A command an instance claimed, to send to the agent. */
export interface ClaimedCommand {
  id: string;
  cmd: string;
  timeoutSeconds: number;
  /** The checkpoint whose log gets the command's output; null: nobody's (e.g. readiness). */
  checkpointId: number | null;
}

/** How a sent command ended. */
export type CommandOutcome =
  | { state: 'done'; exitCode: number; stdout: string; stderr: string }
  | { state: 'failed'; error: string };

/**
 * The `agent_commands` table: the queue between workers and the API instances
 * holding agents. Rows come back in camelCase (`AS "exitCode"`).
 */
export class AgentCommandStore {
  constructor(private readonly q: Queryable) {}

  /** Queues the command; a command already queued under that id is left as it is. */
  async enqueue(c: NewCommand): Promise<void> {
    await this.q.query(
      `INSERT INTO agent_commands (id, runner_id, cmd, timeout_seconds, expires_at, checkpoint_id)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6) ON CONFLICT (id) DO NOTHING`,
      [c.id, c.runnerId, c.cmd, c.timeoutSeconds, c.sendWithinSeconds, c.checkpointId ?? null],
    );
  }

  /** The command's state and result; null when it is gone. */
  async status(id: string): Promise<CommandStatus | null> {
    const [c] = await selectRows<CommandStatus>(
      this.q,
      `SELECT state, exit_code AS "exitCode", stdout, stderr, error,
              state = 'sent' AND ${SESSION_GONE} AS lost
         FROM agent_commands c WHERE id = $1`,
      [id],
    );
    return c ?? null;
  }

  /**
   * Makes a command sendable again (`pending`, result cleared) when it failed,
   * exited non-zero, or was sent on a session that no longer exists (its
   * instance died, or the agent reconnected elsewhere). One in flight on a live
   * session is left alone, so it is never sent twice. A pending command gets
   * a new expiry: `sendWithinSeconds` from now.
   */
  async rearm(
    id: string,
    cmd: string,
    timeoutSeconds: number,
    sendWithinSeconds: number,
  ): Promise<void> {
    await this.q.query(
      `UPDATE agent_commands c SET state = 'pending', claimed_by = NULL, session_id = NULL, error = NULL,
              exit_code = NULL, stdout = NULL, stderr = NULL, cmd = $2, timeout_seconds = $3, updated_at = now(),
              expires_at = now() + make_interval(secs => $4)
        WHERE c.id = $1 AND (c.state IN ('pending', 'failed') OR (c.state = 'done' AND c.exit_code <> 0)
              OR (c.state = 'sent' AND ${SESSION_GONE}))`,
      [id, cmd, timeoutSeconds, sendWithinSeconds],
    );
  }

  /**
   * Fails the runner's commands sent on a session that is gone (see
   * `CommandStatus.lost`): run when a session registers, so the workers
   * waiting for them re-send them on it at once. A command sent on the
   * runner's current session is left alone. Returns their ids.
   */
  async failLost(runnerId: string, why: string): Promise<string[]> {
    const { rows } = await changeRows<{ id: string }>(
      this.q,
      `UPDATE agent_commands c SET state = 'failed', error = $2, updated_at = now()
        WHERE c.runner_id = $1 AND c.state = 'sent' AND ${SESSION_GONE}
      RETURNING c.id`,
      [runnerId, why],
    );
    return rows.map((r) => r.id);
  }

  /** Fails one command if it was sent on a session that is gone; whether it did. */
  async failIfLost(id: string, why: string): Promise<boolean> {
    const { count } = await changeRows(
      this.q,
      `UPDATE agent_commands c SET state = 'failed', error = $2, updated_at = now()
        WHERE c.id = $1 AND c.state = 'sent' AND ${SESSION_GONE}`,
      [id, why],
    );
    return count > 0;
  }

  /** Deletes the command if nobody claimed it yet; whether it did (false: claimed, answered or gone). */
  async dropPending(id: string): Promise<boolean> {
    const { count } = await changeRows(
      this.q,
      `DELETE FROM agent_commands WHERE id = $1 AND state = 'pending'`,
      [id],
    );
    return count > 0;
  }

  /**
   * Fails the runner's pending commands whose expiry passed (nobody waits for
   * them any more, so they must never be sent); returns their ids.
   */
  async expirePending(runnerId: string): Promise<string[]> {
    const { rows } = await changeRows<{ id: string }>(
      this.q,
      `UPDATE agent_commands SET state = 'failed', error = 'expired: not sent before its activity gave up',
              updated_at = now()
        WHERE runner_id = $1 AND state = 'pending' AND expires_at <= now()
      RETURNING id`,
      [runnerId],
    );
    return rows.map((r) => r.id);
  }

  /**
   * Claims the runner's pending commands for a session, oldest first, only
   * while that session is the runner's current one (`agent_sessions`) and held
   * by `instanceId`: an instance whose session was replaced claims nothing. A
   * compare-and-set that skips rows another transaction holds: each command
   * is claimed by exactly one instance. An expired command is never claimed.
   */
  async claim(runnerId: string, instanceId: string, sessionId: string): Promise<ClaimedCommand[]> {
    const { rows } = await changeRows<ClaimedCommand>(
      this.q,
      `UPDATE agent_commands SET state = 'sent', claimed_by = $2, session_id = $3, updated_at = now()
        WHERE id IN (
          SELECT c.id FROM agent_commands c
            JOIN agent_sessions s ON s.runner_id = c.runner_id AND s.session_id = $3 AND s.instance_id = $2 AND s.closed_at IS NULL
           WHERE c.runner_id = $1 AND c.state = 'pending' AND (c.expires_at IS NULL OR c.expires_at > now())
           ORDER BY c.created_at FOR UPDATE OF c SKIP LOCKED FOR SHARE OF s)
      RETURNING id, cmd, timeout_seconds AS "timeoutSeconds", checkpoint_id AS "checkpointId"`,
      [runnerId, instanceId, sessionId],
    );
    return rows;
  }

  /** Which of these runners have pending commands (one indexed query). */
  async runnersWithPending(runnerIds: string[]): Promise<string[]> {
    const rows = await selectRows<{ runnerId: string }>(
      this.q,
      `SELECT DISTINCT runner_id AS "runnerId" FROM agent_commands WHERE state = 'pending' AND runner_id = ANY($1)`,
      [runnerIds],
    );
    return rows.map((r) => r.runnerId);
  }

  /**
   * Records how a command sent on `sessionId` ended; a command since re-armed
   * or re-sent (another session's now) is left alone, so a late reply from a
   * replaced connection never overwrites the new attempt. NULs become U+FFFD.
   */
  async finish(commandId: string, sessionId: string, o: CommandOutcome): Promise<void> {
    const done = o.state === 'done' ? o : null;
    await this.q.query(
      `UPDATE agent_commands SET state = $3, exit_code = $4, stdout = $5, stderr = $6, error = $7, updated_at = now()
        WHERE id = $1 AND session_id = $2 AND state = 'sent'`,
      [
        commandId,
        sessionId,
        o.state,
        done?.exitCode ?? null,
        storable(done?.stdout ?? null),
        storable(done?.stderr ?? null),
        o.state === 'failed' ? storable(o.error) : null,
      ],
    );
  }

  /**
   * Deletes up to `batch` finished commands (done or failed, with their
   * output) last touched more than `days` ago; returns how many went.
   */
  async pruneFinished(days: number, batch: number): Promise<number> {
    const { count } = await changeRows(
      this.q,
      `DELETE FROM agent_commands WHERE id IN (
         SELECT id FROM agent_commands
          WHERE state IN ('done', 'failed') AND updated_at < now() - make_interval(days => $1)
          LIMIT $2)`,
      [days, batch],
    );
    return count;
  }
}
