import { changeRows, selectRows, type Queryable } from './queryable';

/** A registered agent connection: which API instance holds the runner's WebSocket. */
export interface AgentSession {
  runnerId: string;
  sessionId: string;
  instanceId: string;
}

/** The `agent_sessions` table: at most one session per runner, across every API instance. */
export class AgentSessionStore {
  constructor(private readonly q: Queryable) {}

  /** Registers a session; it replaces the runner's previous one, wherever that was. */
  async register(s: AgentSession): Promise<void> {
    await this.q.query(
      `INSERT INTO agent_sessions (runner_id, session_id, instance_id, connected_at, last_seen_at)
       VALUES ($1, $2, $3, now(), now())
       ON CONFLICT (runner_id) DO UPDATE SET session_id = EXCLUDED.session_id, instance_id = EXCLUDED.instance_id,
         connected_at = now(), last_seen_at = now()`,
      [s.runnerId, s.sessionId, s.instanceId],
    );
  }

  /** Removes the session, only if it is still the runner's (a successor's row stays). */
  async remove(runnerId: string, sessionId: string): Promise<void> {
    await this.q.query(`DELETE FROM agent_sessions WHERE runner_id = $1 AND session_id = $2`, [
      runnerId,
      sessionId,
    ]);
  }

  /** Records that the session's agent is alive; false when the session is no longer the runner's. */
  async touch(runnerId: string, sessionId: string): Promise<boolean> {
    const { count } = await changeRows(
      this.q,
      `UPDATE agent_sessions SET last_seen_at = now() WHERE runner_id = $1 AND session_id = $2`,
      [runnerId, sessionId],
    );
    return count > 0;
  }

  /**
   * The runner's registered session, live (seen in the last
   * `staleAfterSeconds`) or not; null when it has none.
   */
  async current(
    runnerId: string,
    staleAfterSeconds: number,
  ): Promise<{ sessionId: string; live: boolean } | null> {
    const [row] = await selectRows<{ sessionId: string; live: boolean }>(
      this.q,
      `SELECT session_id AS "sessionId", last_seen_at > now() - make_interval(secs => $2) AS live
         FROM agent_sessions WHERE runner_id = $1`,
      [runnerId, staleAfterSeconds],
    );
    return row ?? null;
  }

  /**
   * The instance holding the runner's agent, if it was seen in the last
   * `staleAfterSeconds` (and, with `connectedSince`, connected at or after
   * then); null otherwise.
   */
  async liveInstance(
    runnerId: string,
    staleAfterSeconds: number,
    connectedSince: Date | null = null,
  ): Promise<string | null> {
    const [row] = await selectRows<{ instanceId: string }>(
      this.q,
      `SELECT instance_id AS "instanceId" FROM agent_sessions
        WHERE runner_id = $1
          AND last_seen_at > now() - make_interval(secs => $2)
          AND ($3::timestamptz IS NULL OR connected_at >= $3)`,
      [runnerId, staleAfterSeconds, connectedSince],
    );
    return row?.instanceId ?? null;
  }
}
