import type { Logger } from '../config/logger';
import type { AgentSessionStore } from '../store/agent-sessions';

/**
 * Logs once when an agent of this instance goes silent past the heartbeat
 * timeout (unreachable), and once when that runner's agent is heard from
 * again (a pong, a frame, or a new connection on any instance).
 */
export class LivenessLog {
  /** Runners this instance reported unreachable, with the session that went silent. */
  private readonly unreachable = new Map<string, string>();

  constructor(
    private readonly sessions: AgentSessionStore,
    private readonly instanceId: string,
    private readonly heartbeatTimeoutSeconds: number,
    private readonly log: Logger,
  ) {}

  /** Compares this instance's sessions with what it last reported, and logs the changes. */
  async sweep(): Promise<void> {
    let rows: Awaited<ReturnType<AgentSessionStore['silence']>>;
    try {
      rows = await this.sessions.silence(
        this.instanceId,
        [...this.unreachable.keys()],
        this.heartbeatTimeoutSeconds,
      );
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot check agent liveness');
      return;
    }
    const byRunner = new Map(rows.map((r) => [r.runnerId, r]));
    for (const [runnerId, sessionId] of this.unreachable) {
      const row = byRunner.get(runnerId);
      if (row && row.sessionId === sessionId && row.stale) continue;
      this.unreachable.delete(runnerId);
      if (row && (!row.stale || row.sessionId !== sessionId))
        this.log.info({ runnerId, sessionId: row.sessionId }, 'agent reachable again');
      else this.log.info({ runnerId }, 'agent no longer unreachable: its session is gone');
    }
    for (const r of rows) {
      if (r.instanceId !== this.instanceId || !r.stale || this.unreachable.has(r.runnerId))
        continue;
      this.unreachable.set(r.runnerId, r.sessionId);
      this.log.warn(
        {
          runnerId: r.runnerId,
          sessionId: r.sessionId,
          silentSeconds: Math.round(r.silentSeconds * 10) / 10,
        },
        'agent unreachable: silent longer than the heartbeat timeout',
      );
    }
  }
}
