import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import type { DataSource } from 'typeorm';
import { AGENT_COMMANDS_CHANNEL, AGENT_RESULTS_CHANNEL } from '../common/agent-bus';
import type { Logger } from '../config/logger';
import type { AgentGateway, ExecResult } from './agent-gateway';
import { transient } from './failures';

interface CommandRow {
  state: 'pending' | 'sent' | 'done' | 'failed';
  exit_code: number | null;
  stdout: string | null;
  stderr: string | null;
  error: string | null;
}

/**
 * The worker's way to reach agents, whichever API instance holds their
 * WebSocket: commands are rows in Postgres, claimed and answered by that
 * instance; LISTEN/NOTIFY wakes both sides, polling covers a missed notice.
 * No HTTP endpoint is involved, so there is nothing to reach without the
 * database credentials.
 */
export class AgentBus implements AgentGateway {
  private listener: Client | null = null;
  private listening: Promise<void> | null = null;
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(
    private readonly ds: DataSource,
    private readonly databaseUrl: string,
    private readonly opts: {
      staleAfterSeconds: number;
      connectWaitSeconds: number;
      pollMs?: number;
      log: Logger;
    },
  ) {}

  async isConnected(runnerId: string, since?: Date): Promise<boolean> {
    const rows = (await this.ds.query(
      `SELECT 1 FROM agent_sessions
        WHERE runner_id = $1
          AND last_seen_at > now() - make_interval(secs => $2)
          AND ($3::timestamptz IS NULL OR connected_at >= $3)`,
      [runnerId, this.opts.staleAfterSeconds, since ?? null],
    )) as unknown[];
    return rows.length > 0;
  }

  /**
   * Runs a command through the API instance that holds the runner's agent.
   * Waits up to `connectWaitSeconds` for the agent to be connected, and if the
   * agent goes away mid-command (it restarted), waits for it again and runs the
   * command anew: a restarting agent does not use up the reset's retries.
   */
  async exec(
    runnerId: string,
    cmd: string,
    timeoutSeconds: number,
    o: { commandId?: string } = {},
  ): Promise<ExecResult> {
    const id = o.commandId ?? `adhoc/${randomUUID()}`;
    await this.ds.query(
      `INSERT INTO agent_commands (id, runner_id, cmd, timeout_seconds) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`,
      [id, runnerId, cmd, timeoutSeconds],
    );
    // A retry returns a command that already succeeded instead of running it again.
    const earlier = await this.row(id);
    if (earlier.state === 'done' && earlier.exit_code === 0) return this.result(earlier);
    const connectDeadline = Date.now() + this.opts.connectWaitSeconds * 1000;
    for (;;) {
      await this.rearm(id, cmd, timeoutSeconds);
      const instance = await this.waitForSession(runnerId, connectDeadline);
      if (!instance) {
        // Never leave a command behind that a later connection could run unexpectedly.
        await this.ds.query(`DELETE FROM agent_commands WHERE id = $1 AND state = 'pending'`, [id]);
        throw transient(
          'AgentNotConnected',
          `no agent connected for runner '${runnerId}' (waited ${this.opts.connectWaitSeconds}s)`,
        );
      }
      await this.ensureListening();
      await this.ds.query(`SELECT pg_notify($1, $2)`, [AGENT_COMMANDS_CHANNEL, instance]);
      const row = await this.waitResult(id, timeoutSeconds);
      if (row.state === 'done') return this.result(row);
      this.opts.log.warn(
        { runnerId, error: row.error },
        'agent went away during a command; running it again once it is back',
      );
    }
  }

  /**
   * Makes a command sendable again: one that failed or whose agent session is
   * gone (instance died, agent reconnected elsewhere), or one that failed in an
   * earlier attempt (a retry is meant to run it again). One in flight on a live
   * session is left alone: it is waited for, not sent twice.
   */
  private async rearm(id: string, cmd: string, timeoutSeconds: number): Promise<void> {
    await this.ds.query(
      `UPDATE agent_commands c SET state = 'pending', claimed_by = NULL, session_id = NULL, error = NULL,
              exit_code = NULL, stdout = NULL, stderr = NULL, cmd = $2, timeout_seconds = $3, updated_at = now()
        WHERE c.id = $1 AND (c.state IN ('pending', 'failed') OR (c.state = 'done' AND c.exit_code <> 0)
              OR (c.state = 'sent' AND NOT EXISTS (
                SELECT 1 FROM agent_sessions s WHERE s.runner_id = c.runner_id AND s.session_id = c.session_id)))`,
      [id, cmd, timeoutSeconds],
    );
  }

  /** The instance holding the runner's agent, waiting for one until `deadline`; null if none came. */
  private async waitForSession(runnerId: string, deadline: number): Promise<string | null> {
    for (;;) {
      const rows = (await this.ds.query(
        `SELECT instance_id FROM agent_sessions WHERE runner_id = $1 AND last_seen_at > now() - make_interval(secs => $2)`,
        [runnerId, this.opts.staleAfterSeconds],
      )) as Array<{ instance_id: string }>;
      if (rows[0]) return rows[0].instance_id;
      if (Date.now() >= deadline) return null;
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 500));
    }
  }

  /** Waits for the command to be answered (done) or lost (failed); a timeout is an error. */
  private async waitResult(id: string, timeoutSeconds: number): Promise<CommandRow> {
    const deadline = Date.now() + (timeoutSeconds + 30) * 1000;
    for (;;) {
      const row = await this.row(id);
      if (row.state === 'done' || row.state === 'failed') return row;
      if (Date.now() >= deadline)
        throw transient('AgentTimeout', `the agent did not answer within ${timeoutSeconds + 30}s`);
      await this.wake(id, this.opts.pollMs ?? 500);
    }
  }

  async close(): Promise<void> {
    const l = this.listener;
    this.listener = null;
    this.listening = null;
    await l?.end().catch(() => undefined);
  }

  private async row(id: string): Promise<CommandRow> {
    const rows = (await this.ds.query(
      `SELECT state, exit_code, stdout, stderr, error FROM agent_commands WHERE id = $1`,
      [id],
    )) as CommandRow[];
    if (!rows[0])
      throw transient(
        'AgentNotConnected',
        'the agent command disappeared (its agent disconnected)',
      );
    return rows[0];
  }

  private result(row: CommandRow): ExecResult {
    return { exitCode: row.exit_code ?? -1, stdout: row.stdout ?? '', stderr: row.stderr ?? '' };
  }

  /** Resolves on a result notice for `id`, or after `ms` (a notice may be missed). */
  private wake(id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(id) ?? new Set();
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0) this.waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
      this.waiters.set(id, set);
    });
  }

  private ensureListening(): Promise<void> {
    if (this.listening) return this.listening;
    const client = new Client({
      connectionString: this.databaseUrl,
      application_name: 'e2epool-agent-bus',
    });
    this.listening = (async () => {
      try {
        await client.connect();
        client.on('notification', (n) => this.waiters.get(n.payload ?? '')?.forEach((w) => w()));
        client.on('error', (err) => {
          this.opts.log.warn(
            { err: err.message },
            'agent bus: listener connection lost; polling until it is back',
          );
          if (this.listener === client) {
            this.listener = null;
            this.listening = null;
          }
        });
        await client.query(`LISTEN ${AGENT_RESULTS_CHANNEL}`);
        this.listener = client;
      } catch (err) {
        this.opts.log.warn({ err: (err as Error).message }, 'agent bus: cannot LISTEN; polling');
        this.listening = null;
        await client.end().catch(() => undefined);
      }
    })();
    return this.listening;
  }
}
