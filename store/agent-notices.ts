import { Client } from 'pg';
import type { Logger } from '../config/logger';
import { LOG_CHANNEL } from './checkpoint-log';
import type { Queryable } from './queryable';

/**
 * Postgres LISTEN/NOTIFY between the two ends of the agent command queue:
 * workers tell the API instance holding a runner's agent that a command is
 * pending (`commands`, payload: that instance's id), the instance tells
 * workers that a command ended (`results`, payload: the command id). A notice
 * is only a wake-up: both sides poll too, since one can be missed.
 */
const CHANNELS = {
  commands: 'e2epool_agent_commands',
  results: 'e2epool_agent_results',
  // New entries in a checkpoint's log (payload: the checkpoint id), sent by CheckpointLogStore.
  logs: LOG_CHANNEL,
  // A change of the runner registry (payload: the runner id), sent by a trigger on `runners`.
  registry: 'e2epool_runners',
} as const;

export type AgentNoticeChannel = keyof typeof CHANNELS;

/** Sends agent notices. Inside a transaction they go out at commit. */
export class AgentNotices {
  constructor(private readonly q: Queryable) {}

  /** Wakes API instance `instanceId`: one of its agents has a pending command. */
  async commandQueued(instanceId: string): Promise<void> {
    await this.q.query(`SELECT pg_notify($1, $2)`, [CHANNELS.commands, instanceId]);
  }

  /** Wakes the worker waiting for command `commandId`: it ended. */
  async commandFinished(commandId: string): Promise<void> {
    await this.q.query(`SELECT pg_notify($1, $2)`, [CHANNELS.results, commandId]);
  }
}

/**
 * Keeps one LISTEN connection on a channel (its own connection: a pooled one
 * would stop listening once returned to the pool). Failures are logged, never
 * thrown: notices only save the owner some polling, which goes on meanwhile,
 * and the next `ensure()` tries again.
 */
export class AgentNoticeListener {
  private client: Client | null = null;
  private starting: Promise<void> | null = null;
  private closed = false;

  constructor(
    private readonly o: {
      databaseUrl: string;
      channel: AgentNoticeChannel;
      applicationName: string;
      onNotice: (payload: string) => void;
      log: Logger;
      /** Who listens, for the log: `agent hub`. */
      name: string;
      /** What the owner does without notices, for the log: `sweeping`. */
      fallback: string;
    },
  ) {}

  /** Starts listening unless it is listening or about to be; resolves when that is settled. */
  ensure(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.starting) return this.starting;
    const { o } = this;
    const client = new Client({
      connectionString: o.databaseUrl,
      application_name: o.applicationName,
    });
    this.starting = (async () => {
      try {
        await client.connect();
        client.on('notification', (n) => o.onNotice(n.payload ?? ''));
        client.on('error', (err) => {
          o.log.warn(
            { err: err.message },
            `${o.name}: listener connection lost; ${o.fallback} until it is back`,
          );
          if (this.client === client) {
            this.client = null;
            this.starting = null;
          }
        });
        await client.query(`LISTEN ${CHANNELS[o.channel]}`);
        // Closed while connecting: nobody would end this connection later.
        if (this.closed) await client.end().catch(() => undefined);
        else this.client = client;
      } catch (err) {
        o.log.warn({ err: (err as Error).message }, `${o.name}: cannot LISTEN; ${o.fallback}`);
        this.starting = null;
        await client.end().catch(() => undefined);
      }
    })();
    return this.starting;
  }

  /** Stops listening for good. */
  async close(): Promise<void> {
    this.closed = true;
    const c = this.client;
    this.client = null;
    this.starting = null;
    await c?.end().catch(() => undefined);
  }
}
