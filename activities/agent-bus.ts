import { randomUUID } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { fail } from '../common/fail';
import type { Logger } from '../config/logger';
import { createStore, type Store } from '../store';
import type { CommandStatus } from '../store/agent-commands';
import { AgentNoticeListener } from '../store/agent-notices';
import type { AgentGateway, AgentSessionInfo, ExecResult } from './agent-gateway';

/**
 * The worker's way to reach agents, whichever API instance holds their
 * WebSocket: commands are rows in Postgres, claimed and answered by that
 * instance; LISTEN/NOTIFY wakes both sides, polling covers a missed notice.
 * No HTTP endpoint is involved, so there is nothing to reach without the
 * database credentials.
 */
export class AgentBus implements AgentGateway {
  private readonly store: Store;
  private readonly results: AgentNoticeListener;
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(
    ds: DataSource,
    databaseUrl: string,
    private readonly opts: {
      staleAfterSeconds: number;
      connectWaitSeconds: number;
      pollMs?: number;
      log: Logger;
    },
  ) {
    this.store = createStore(ds);
    this.results = new AgentNoticeListener({
      databaseUrl,
      channel: 'results',
      applicationName: 'e2epool-agent-bus',
      onNotice: (commandId) => this.waiters.get(commandId)?.forEach((w) => w()),
      log: opts.log,
      name: 'agent bus',
      fallback: 'polling',
    });
  }

  async isConnected(runnerId: string, since?: Date): Promise<boolean> {
    const instance = await this.store.sessions.liveInstance(
      runnerId,
      this.opts.staleAfterSeconds,
      since ?? null,
    );
    return instance !== null;
  }

  session(runnerId: string): Promise<AgentSessionInfo | null> {
    return this.store.sessions.current(runnerId, this.opts.staleAfterSeconds);
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
    const { commands } = this.store;
    await commands.enqueue({ id, runnerId, cmd, timeoutSeconds });
    // A retry returns a command that already succeeded instead of running it again.
    const earlier = await this.status(id);
    if (earlier.state === 'done' && earlier.exitCode === 0) return this.result(earlier);
    const connectDeadline = Date.now() + this.opts.connectWaitSeconds * 1000;
    for (;;) {
      // A command that failed, or was lost with its session, is sent again; one in
      // flight on a live session is waited for, not sent twice.
      await commands.rearm(id, cmd, timeoutSeconds);
      const instance = await this.waitForSession(runnerId, connectDeadline);
      if (!instance) {
        // Never leave a command behind that a later connection could run unexpectedly.
        await commands.dropPending(id);
        throw fail(
          'AgentNotConnected',
          `no agent connected for runner '${runnerId}' (waited ${this.opts.connectWaitSeconds}s)`,
        );
      }
      await this.results.ensure();
      await this.store.notices.commandQueued(instance);
      const row = await this.waitResult(id, timeoutSeconds);
      if (row.state === 'done') return this.result(row);
      this.opts.log.warn(
        { runnerId, error: row.error },
        'agent went away during a command; running it again once it is back',
      );
    }
  }

  /** The instance holding the runner's agent, waiting for one until `deadline`; null if none came. */
  private async waitForSession(runnerId: string, deadline: number): Promise<string | null> {
    for (;;) {
      const instance = await this.store.sessions.liveInstance(
        runnerId,
        this.opts.staleAfterSeconds,
      );
      if (instance) return instance;
      if (Date.now() >= deadline) return null;
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 500));
    }
  }

  /** Waits for the command to be answered (done) or lost (failed); a timeout is an error. */
  private async waitResult(id: string, timeoutSeconds: number): Promise<CommandStatus> {
    const deadline = Date.now() + (timeoutSeconds + 30) * 1000;
    for (;;) {
      const row = await this.status(id);
      if (row.state === 'done' || row.state === 'failed') return row;
      if (Date.now() >= deadline)
        throw fail('AgentTimeout', `the agent did not answer within ${timeoutSeconds + 30}s`);
      await this.wake(id, this.opts.pollMs ?? 500);
    }
  }

  async close(): Promise<void> {
    await this.results.close();
  }

  private async status(id: string): Promise<CommandStatus> {
    const status = await this.store.commands.status(id);
    if (!status)
      throw fail('AgentNotConnected', 'the agent command disappeared (its agent disconnected)');
    return status;
  }

  private result(row: CommandStatus): ExecResult {
    return { exitCode: row.exitCode ?? -1, stdout: row.stdout ?? '', stderr: row.stderr ?? '' };
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
}
