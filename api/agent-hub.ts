import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import type { DataSource } from 'typeorm';
import type { WebSocket } from 'ws';
import {
  AGENT_COMMANDS_CHANNEL,
  AGENT_RESULTS_CHANNEL,
  EXEC_OUTPUT_CAP,
} from '../common/agent-bus';
import type { Logger } from '../config/logger';

interface InFlight {
  commandId: string;
  timer: NodeJS.Timeout;
}

interface Session {
  runnerId: string;
  sessionId: string;
  ws: WebSocket;
  /** exec frames sent on this socket, by WebSocket message id. */
  inflight: Map<string, InFlight>;
}

interface PendingCommand {
  id: string;
  cmd: string;
  timeout_seconds: number;
}

/** What the agent replied to an exec (SPEC §4), already checked by the gateway. */
export interface ExecReply {
  exit_code: number;
  stdout: string;
  stderr: string;
}

/**
 * The agent sessions of this API instance. Registers each connection in
 * `agent_sessions` (a newer connection replaces an older one, on any
 * instance), claims the commands workers queue for its runners, sends them,
 * and records the replies. Commands are claimed with a compare-and-set, so
 * exactly one instance sends each one.
 */
export class AgentHub {
  readonly instanceId = randomUUID();
  private readonly sessions = new Map<string, Session>();
  private listener: Client | null = null;
  private sweepTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly ds: DataSource,
    private readonly databaseUrl: string,
    private readonly log: Logger,
    private readonly sweepMs = 2000,
  ) {}

  /** Starts listening for queued commands (and sweeping, in case a notice is missed). */
  async start(): Promise<void> {
    await this.listen();
    this.sweepTimer = setInterval(() => void this.dispatchAll(), this.sweepMs);
    this.sweepTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    for (const s of [...this.sessions.values()]) {
      s.ws.close(1001, 'server shutting down');
      await this.unregister(s.runnerId, s.sessionId, 'server shutting down');
    }
    await this.listener?.end().catch(() => undefined);
    this.listener = null;
  }

  /** Registers a connection; returns its session id. An older one for the runner is closed. */
  async register(runnerId: string, ws: WebSocket): Promise<string> {
    const sessionId = randomUUID();
    const old = this.sessions.get(runnerId);
    this.sessions.set(runnerId, { runnerId, sessionId, ws, inflight: new Map() });
    await this.ds.query(
      `INSERT INTO agent_sessions (runner_id, session_id, instance_id, connected_at, last_seen_at)
       VALUES ($1, $2, $3, now(), now())
       ON CONFLICT (runner_id) DO UPDATE SET session_id = EXCLUDED.session_id, instance_id = EXCLUDED.instance_id,
         connected_at = now(), last_seen_at = now()`,
      [runnerId, sessionId, this.instanceId],
    );
    if (old) {
      await this.failInflight(old, 'agent reconnected');
      old.ws.close(4000, 'Replaced by a newer connection');
    }
    this.log.info({ runnerId, sessionId }, 'agent connected');
    void this.dispatch(runnerId);
    return sessionId;
  }

  /**
   * Forgets a connection that closed. Only the registered session is removed:
   * the late close of a replaced socket leaves its successor alone.
   */
  async unregister(runnerId: string, sessionId: string, why: string): Promise<void> {
    const s = this.sessions.get(runnerId);
    if (s && s.sessionId === sessionId) {
      this.sessions.delete(runnerId);
      await this.failInflight(s, `agent disconnected (${why})`);
    }
    await this.ds
      .query(`DELETE FROM agent_sessions WHERE runner_id = $1 AND session_id = $2`, [
        runnerId,
        sessionId,
      ])
      .catch((err: unknown) =>
        this.log.warn({ err: (err as Error).message }, 'cannot remove agent session'),
      );
    this.log.info({ runnerId, sessionId, why }, 'agent disconnected');
  }

  /**
   * Records that the agent is alive. Returns false when another connection has
   * taken over this runner (on another instance): the caller closes this one.
   */
  async touch(runnerId: string, sessionId: string): Promise<boolean> {
    const res = (await this.ds.query(
      `UPDATE agent_sessions SET last_seen_at = now() WHERE runner_id = $1 AND session_id = $2`,
      [runnerId, sessionId],
    )) as [unknown, number];
    return res[1] > 0;
  }

  isCurrent(runnerId: string, sessionId: string): boolean {
    return this.sessions.get(runnerId)?.sessionId === sessionId;
  }

  /** Records an exec reply that arrived on a session. Unknown ids (late, or another session's) are ignored. */
  async handleReply(
    runnerId: string,
    sessionId: string,
    wsId: string,
    reply: ExecReply | null,
    error?: string,
  ): Promise<void> {
    const s = this.sessions.get(runnerId);
    if (!s || s.sessionId !== sessionId) return;
    const f = s.inflight.get(wsId);
    if (!f) return;
    s.inflight.delete(wsId);
    clearTimeout(f.timer);
    if (reply) {
      await this.finish(f.commandId, sessionId, {
        state: 'done',
        exit_code: reply.exit_code,
        stdout: reply.stdout.slice(0, EXEC_OUTPUT_CAP),
        stderr: reply.stderr.slice(0, EXEC_OUTPUT_CAP),
        error: null,
      });
    } else {
      await this.finish(f.commandId, sessionId, {
        state: 'failed',
        exit_code: null,
        stdout: null,
        stderr: null,
        error: error ?? 'malformed reply',
      });
    }
  }

  /** Claims and sends queued commands for one runner connected here. */
  async dispatch(runnerId: string): Promise<void> {
    const s = this.sessions.get(runnerId);
    if (!s || this.stopped) return;
    let claimed: PendingCommand[];
    try {
      const res = (await this.ds.query(
        `UPDATE agent_commands SET state = 'sent', claimed_by = $2, session_id = $3, updated_at = now()
          WHERE id IN (SELECT id FROM agent_commands WHERE runner_id = $1 AND state = 'pending' ORDER BY created_at FOR UPDATE SKIP LOCKED)
        RETURNING id, cmd, timeout_seconds`,
        [runnerId, this.instanceId, s.sessionId],
      )) as [PendingCommand[], number];
      claimed = res[0];
    } catch (err) {
      this.log.warn({ err: (err as Error).message, runnerId }, 'cannot claim agent commands');
      return;
    }
    for (const c of claimed) {
      const wsId = randomUUID();
      // The agent enforces the command's timeout; no reply well after it means the agent is in trouble.
      const timer = setTimeout(
        () =>
          void this.handleReply(
            runnerId,
            s.sessionId,
            wsId,
            null,
            `agent did not reply within ${c.timeout_seconds + 15}s`,
          ),
        (c.timeout_seconds + 15) * 1000,
      );
      timer.unref();
      s.inflight.set(wsId, { commandId: c.id, timer });
      s.ws.send(
        JSON.stringify({
          id: wsId,
          type: 'exec',
          payload: { cmd: c.cmd, timeout: c.timeout_seconds },
        }),
        (err) => {
          if (err)
            void this.handleReply(
              runnerId,
              s.sessionId,
              wsId,
              null,
              `cannot send to the agent: ${err.message}`,
            );
        },
      );
    }
  }

  /** One indexed query finds the local runners with queued commands; only those are claimed. */
  private async dispatchAll(): Promise<void> {
    if (!this.listener && !this.stopped) await this.listen();
    const runners = [...this.sessions.keys()];
    if (runners.length === 0) return;
    let waiting: Array<{ runner_id: string }>;
    try {
      waiting = (await this.ds.query(
        `SELECT DISTINCT runner_id FROM agent_commands WHERE state = 'pending' AND runner_id = ANY($1)`,
        [runners],
      )) as Array<{ runner_id: string }>;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot look for queued agent commands');
      return;
    }
    for (const { runner_id } of waiting) await this.dispatch(runner_id);
  }

  private async failInflight(s: Session, why: string): Promise<void> {
    for (const [wsId, f] of s.inflight) {
      clearTimeout(f.timer);
      s.inflight.delete(wsId);
      await this.finish(f.commandId, s.sessionId, {
        state: 'failed',
        exit_code: null,
        stdout: null,
        stderr: null,
        error: why,
      });
    }
  }

  private async finish(
    commandId: string,
    sessionId: string,
    r: {
      state: 'done' | 'failed';
      exit_code: number | null;
      stdout: string | null;
      stderr: string | null;
      error: string | null;
    },
  ): Promise<void> {
    try {
      await this.ds.query(
        `UPDATE agent_commands SET state = $3, exit_code = $4, stdout = $5, stderr = $6, error = $7, updated_at = now()
          WHERE id = $1 AND session_id = $2 AND state = 'sent'`,
        [commandId, sessionId, r.state, r.exit_code, r.stdout, r.stderr, r.error],
      );
      await this.ds.query(`SELECT pg_notify($1, $2)`, [AGENT_RESULTS_CHANNEL, commandId]);
    } catch (err) {
      this.log.error(
        { err: (err as Error).message, commandId },
        'cannot record an agent command result',
      );
    }
  }

  private async listen(): Promise<void> {
    const client = new Client({
      connectionString: this.databaseUrl,
      application_name: 'e2epool-agent-hub',
    });
    try {
      await client.connect();
      client.on('notification', (n) => {
        if (n.payload === this.instanceId) void this.dispatchAll();
      });
      client.on('error', (err) => {
        this.log.warn(
          { err: err.message },
          'agent hub: listener connection lost; sweeping until it is back',
        );
        if (this.listener === client) this.listener = null;
      });
      await client.query(`LISTEN ${AGENT_COMMANDS_CHANNEL}`);
      this.listener = client;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'agent hub: cannot LISTEN; sweeping');
      await client.end().catch(() => undefined);
    }
  }
}
