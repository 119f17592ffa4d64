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
         connected_at = now(), last_seen_at = now(), closed_at = NULL`,
      [s.runnerId, s.sessionId, s.instanceId],
    );
  }

  /**
   * Marks the session's connection closed, only if it is still the runner's:
   * not connected from now on, unreachable once silent past the timeout.
   */
  async close(runnerId: string, sessionId: string): Promise<void> {
    await this.q.query(
      `UPDATE agent_sessions SET closed_at = now()
        WHERE runner_id = $1 AND session_id = $2 AND closed_at IS NULL`,
      [runnerId, sessionId],
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
      `SELECT session_id AS "sessionId",
              closed_at IS NULL AND last_seen_at > now() - make_interval(secs => $2) AS live
         FROM agent_sessions WHERE runner_id = $1`,
      [runnerId, staleAfterSeconds],
    );
    return row ?? null;
  }

  /**
   * True when the runner has a session whose agent has been silent (no pong,
   * no frame) for `staleAfterSeconds` or longer: its agent is unreachable.
   * A runner without a session is not connected, which is not the same.
   */
  async isUnreachable(runnerId: string, staleAfterSeconds: number): Promise<boolean> {
    const [row] = await selectRows<{ stale: boolean }>(
      this.q,
      `SELECT true AS stale FROM agent_sessions
        WHERE runner_id = $1 AND last_seen_at <= now() - make_interval(secs => $2)`,
      [runnerId, staleAfterSeconds],
    );
    return row?.stale ?? false;
  }

  /**
   * The agents of these runners: `live` when connected and seen in the last
   * `staleAfterSeconds`, `unreachable` when silent longer than that (socket
   * open or not); runners without a session, or whose connection closed
   * moments ago, are left out.
   */
  async livenessOf(
    runnerIds: readonly string[],
    staleAfterSeconds: number,
  ): Promise<Map<string, 'live' | 'unreachable'>> {
    const rows = await selectRows<{ runnerId: string; liveness: 'live' | 'unreachable' | null }>(
      this.q,
      `SELECT runner_id AS "runnerId",
              CASE WHEN last_seen_at <= now() - make_interval(secs => $2) THEN 'unreachable'
                   WHEN closed_at IS NULL THEN 'live' END AS liveness
         FROM agent_sessions WHERE runner_id = ANY($1)`,
      [runnerIds, staleAfterSeconds],
    );
    return new Map(rows.flatMap((r) => (r.liveness ? [[r.runnerId, r.liveness] as const] : [])));
  }

  /**
   * Like livenessOf, with what livenessOf leaves out: `closed` for a
   * connection that closed moments ago (unreachable once silent past the
   * timeout); a runner absent from the map never connected (or its
   * credentials were revoked, which drops the row). Plus when each was last heard from.
   */
  async agentsOf(
    runnerIds: readonly string[],
    staleAfterSeconds: number,
  ): Promise<Map<string, { status: 'live' | 'unreachable' | 'closed'; lastSeenAt: Date }>> {
    const rows = await selectRows<{
      runnerId: string;
      status: 'live' | 'unreachable' | 'closed';
      lastSeenAt: Date;
    }>(
      this.q,
      `SELECT runner_id AS "runnerId", last_seen_at AS "lastSeenAt",
              CASE WHEN last_seen_at <= now() - make_interval(secs => $2) THEN 'unreachable'
                   WHEN closed_at IS NULL THEN 'live' ELSE 'closed' END AS status
         FROM agent_sessions WHERE runner_id = ANY($1)`,
      [runnerIds, staleAfterSeconds],
    );
    return new Map(rows.map((r) => [r.runnerId, { status: r.status, lastSeenAt: r.lastSeenAt }]));
  }

  /**
   * The sessions an API instance holds (or held: a session whose heartbeat
   * timed out keeps its row), plus those of `alsoRunners` wherever they are,
   * with whether each has been silent for `staleAfterSeconds`.
   */
  async silence(
    instanceId: string,
    alsoRunners: readonly string[],
    staleAfterSeconds: number,
  ): Promise<
    Array<{
      runnerId: string;
      sessionId: string;
      instanceId: string;
      stale: boolean;
      silentSeconds: number;
    }>
  > {
    return selectRows(
      this.q,
      `SELECT runner_id AS "runnerId", session_id AS "sessionId", instance_id AS "instanceId",
              last_seen_at <= now() - make_interval(secs => $3) AS stale,
              extract(epoch FROM now() - last_seen_at)::float8 AS "silentSeconds"
         FROM agent_sessions WHERE instance_id = $1 OR runner_id = ANY($2)`,
      [instanceId, alsoRunners, staleAfterSeconds],
    );
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
        WHERE runner_id = $1 AND closed_at IS NULL
          AND last_seen_at > now() - make_interval(secs => $2)
          AND ($3::timestamptz IS NULL OR connected_at >= $3)`,
      [runnerId, staleAfterSeconds, connectedSince],
    );
    return row?.instanceId ?? null;
  }
}
