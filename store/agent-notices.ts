import { Client } from 'pg';
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

/** A LISTEN connection; `close` ends it (never rejects). */
export interface NoticeListener {
  close(): Promise<void>;
}

/**
 * Listens on one channel, on a connection of its own (a pooled connection
 * would stop listening once returned to the pool). Rejects if the connection
 * or the LISTEN fails. Once listening, `onLost` is called when the connection
 * breaks: nothing arrives from then on, and the caller opens a new one.
 */
export async function listenForAgentNotices(o: {
  databaseUrl: string;
  channel: AgentNoticeChannel;
  applicationName: string;
  onNotice: (payload: string) => void;
  onLost: (err: Error) => void;
}): Promise<NoticeListener> {
  const client = new Client({
    connectionString: o.databaseUrl,
    application_name: o.applicationName,
  });
  try {
    await client.connect();
    client.on('notification', (n) => o.onNotice(n.payload ?? ''));
    client.on('error', o.onLost);
    await client.query(`LISTEN ${CHANNELS[o.channel]}`);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return { close: () => client.end().catch(() => undefined) };
}
