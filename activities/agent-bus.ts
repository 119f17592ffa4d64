import { randomUUID } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { fail } from '../common/fail';
import type { Logger } from '../config/logger';
import { createStore, type Store } from '../store';
import type { CommandStatus } from '../store/agent-commands';
import { AgentNoticeListener } from '../store/agent-notices';
import type { AgentGateway, AgentSessionInfo, ExecOptions, ExecResult } from './agent-gateway';

/** How often a command lost with its agent (it went away mid-command) is sent again. */
export const MAX_RESENDS = 3;

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
   * command anew, at most MAX_RESENDS times: a restarting agent does not use up
   * the reset's retries, an agent that dies on every command does not hold the
   * activity forever.
   *
   * Never outlives its caller: when `signal` aborts (the activity was
   * cancelled) or `deadline` (epoch ms, the activity's) passes, a command not
   * sent yet is withdrawn and the wait ends. Each pending command carries the
   * instant the bus stops waiting for it; no instance sends it after that, so
   * a command whose worker died cannot run on an agent that connects later.
   */
  async exec(
    runnerId: string,
    cmd: string,
    timeoutSeconds: number,
    o: ExecOptions = {},
  ): Promise<ExecResult> {
    const id = o.commandId ?? `adhoc/${randomUUID()}`;
    const { commands } = this.store;
    const deadline = o.deadline ?? Infinity;
    const connectWaitMs = this.opts.connectWaitSeconds * 1000;
    /** Until when this attempt waits for the command to be sent (its row's expiry). */
    const sendBy = () => Math.min(Date.now() + connectWaitMs, deadline);
    const secondsUntil = (t: number) => Math.max(0, (t - Date.now()) / 1000);
    await this.stopIfAsked(o, id, runnerId);
    await commands.enqueue({
      id,
      runnerId,
      cmd,
      timeoutSeconds,
      sendWithinSeconds: secondsUntil(sendBy()),
      checkpointId: o.checkpointId ?? null,
    });
    // A retry returns a command that already succeeded instead of running it again.
    const earlier = await this.status(id);
    if (earlier.state === 'done' && earlier.exitCode === 0) return this.result(earlier);
    for (let lost = 0; ; lost++) {
      await this.stopIfAsked(o, id, runnerId);
      const until = sendBy();
      // A command that failed, or was lost with its session, is sent again; one in
      // flight on a live session is waited for, not sent twice.
      await commands.rearm(id, cmd, timeoutSeconds, secondsUntil(until));
      const instance = await this.waitForSession(runnerId, until, o.signal);
      // Never leave a command behind that a later connection could run unexpectedly.
      if (!instance && (await commands.dropPending(id))) {
        await this.stopIfAsked(o, id, runnerId);
        throw fail(
          'AgentNotConnected',
          `no agent connected for runner '${runnerId}' (waited ${this.opts.connectWaitSeconds}s)`,
        );
      }
      // (No session, but the command was claimed meanwhile: its result is waited for.)
      if (instance) {
        await this.results.ensure();
        await this.store.notices.commandQueued(instance);
      }
      const row = await this.waitResult(id, runnerId, timeoutSeconds, o);
      if (row.state === 'done') return this.result(row);
      if (lost >= MAX_RESENDS)
        throw fail(
          'AgentNotConnected',
          `runner '${runnerId}': the command was lost ${lost + 1} times (last: ${row.error ?? 'unknown'}); giving up`,
        );
      this.opts.log.warn(
        { runnerId, error: row.error, resend: lost + 1 },
        'agent went away during a command; running it again once it is back',
      );
    }
  }

  /**
   * When the caller was cancelled or its deadline passed: withdraws the
   * command if it was not sent yet (compare-and-set) and throws.
   */
  private stopIfAsked(
    o: { signal?: AbortSignal; deadline?: number },
    id: string,
    runnerId: string,
  ): Promise<void> {
    const why = o.signal?.aborted
      ? 'cancelled'
      : o.deadline !== undefined && Date.now() >= o.deadline
        ? 'deadline'
        : null;
    if (!why) return Promise.resolve();
    return this.store.commands
      .dropPending(id)
      .catch((err: unknown) => {
        // The row expires on its own: no instance sends it past its deadline.
        this.opts.log.warn(
          { err: (err as Error).message, runnerId },
          'cannot withdraw an agent command',
        );
        return false;
      })
      .then(() => {
        throw why === 'cancelled'
          ? fail('Cancelled', `agent command for runner '${runnerId}' cancelled`)
          : fail(
              'AgentTimeout',
              `agent command for runner '${runnerId}': the activity's deadline passed`,
            );
      });
  }

  /** The instance holding the runner's agent, waiting for one until `deadline`; null if none came. */
  private async waitForSession(
    runnerId: string,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<string | null> {
    for (;;) {
      const instance = await this.store.sessions.liveInstance(
        runnerId,
        this.opts.staleAfterSeconds,
      );
      if (instance) return instance;
      if (Date.now() >= deadline || signal?.aborted) return null;
      await sleep(Math.min(this.opts.pollMs ?? 500, Math.max(0, deadline - Date.now())), signal);
    }
  }

  /**
   * Waits for the command to be answered (done) or lost (failed). Past the
   * command's own timeout (plus a margin), or when the caller stops, a command
   * not sent yet is withdrawn and an error thrown; one in flight is left to
   * its instance, which fails it when the agent does not answer.
   */
  private async waitResult(
    id: string,
    runnerId: string,
    timeoutSeconds: number,
    o: { signal?: AbortSignal; deadline?: number },
  ): Promise<CommandStatus> {
    const deadline = Date.now() + (timeoutSeconds + 30) * 1000;
    for (;;) {
      const row = await this.status(id);
      if (row.state === 'done' || row.state === 'failed') return row;
      // Sent on a connection that is gone (its instance crashed, or the agent
      // reconnected): no reply will come for it. The registering instance fails
      // it too; this covers one that died before it could.
      if (
        row.lost &&
        (await this.store.commands.failIfLost(
          id,
          'lost: the agent connection it was sent on is gone',
        ))
      )
        return this.status(id);
      await this.stopIfAsked(o, id, runnerId);
      if (Date.now() >= deadline) {
        await this.store.commands.dropPending(id);
        throw fail('AgentTimeout', `the agent did not answer within ${timeoutSeconds + 30}s`);
      }
      await this.wake(id, this.opts.pollMs ?? 500, o.signal);
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

  /** Resolves on a result notice for `id`, on abort, or after `ms` (a notice may be missed). */
  private wake(id: string, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(id) ?? new Set();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        set.delete(done);
        if (set.size === 0) this.waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done);
      set.add(done);
      this.waiters.set(id, set);
    });
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (signal?.aborted) done();
    else signal?.addEventListener('abort', done);
  });
}
