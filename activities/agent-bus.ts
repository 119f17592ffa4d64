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
    private readonly opts: { staleAfterSeconds: number; pollMs?: number; log: Logger },
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
    let row = await this.row(id);
    // A retry returns a command that already succeeded instead of running it again.
    if (row.state === 'done' && row.exit_code === 0) return this.result(row);
    // Re-arm a command that failed (a retry is meant to run it again), or whose
    // agent session is gone (its instance died or the agent reconnected
    // elsewhere); one in flight on a live session is waited for, not sent twice.
    await this.ds.query(
      `UPDATE agent_commands c SET state = 'pending', claimed_by = NULL, session_id = NULL, error = NULL,
              cmd = $2, timeout_seconds = $3, updated_at = now()
        WHERE c.id = $1 AND (c.state IN ('pending', 'failed') OR (c.state = 'done' AND c.exit_code <> 0)
              OR (c.state = 'sent' AND NOT EXISTS (
              SELECT 1 FROM agent_sessions s WHERE s.runner_id = c.runner_id AND s.session_id = c.session_id)))`,
      [id, cmd, timeoutSeconds],
    );
    const sessions = (await this.ds.query(
      `SELECT instance_id FROM agent_sessions WHERE runner_id = $1`,
      [runnerId],
    )) as Array<{ instance_id: string }>;
    if (!sessions[0]) {
      // Never leave a command behind that a later connection could run unexpectedly.
      await this.ds.query(`DELETE FROM agent_commands WHERE id = $1 AND state = 'pending'`, [id]);
      throw transient('AgentNotConnected', `no agent connected for runner '${runnerId}'`);
    }
    await this.ensureListening();
    await this.ds.query(`SELECT pg_notify($1, $2)`, [
      AGENT_COMMANDS_CHANNEL,
      sessions[0].instance_id,
    ]);

    const deadline = Date.now() + (timeoutSeconds + 30) * 1000;
    for (;;) {
      row = await this.row(id);
      if (row.state === 'done') return this.result(row);
      if (row.state === 'failed')
        throw transient(
          'AgentNotConnected',
          `runner '${runnerId}': ${row.error ?? 'agent command failed'}`,
        );
      if (Date.now() >= deadline)
        throw transient(
          'AgentTimeout',
          `agent of runner '${runnerId}' did not answer within ${timeoutSeconds + 30}s`,
        );
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
