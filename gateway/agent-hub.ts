import { randomUUID } from 'node:crypto';
import type { WebSocket } from 'ws';
import {
  CLOSE_CODES,
  EXEC_OUTPUT_CAP,
  type ExecCommand,
  type ExecData,
  type ExecOutputPayload,
} from '../common/agent-protocol';
import type { Logger } from '../config/logger';
import type { Store } from '../store';
import type { ClaimedCommand, CommandOutcome } from '../store/agent-commands';
import { AgentNoticeListener } from '../store/agent-notices';
import { CommandOutputLog } from './command-output';
import { LivenessLog } from './liveness-log';

/** How often queued commands are looked for, in case a notice was missed. */
const SWEEP_MS = 2000;

/** How often the sessions of this instance are checked for silent agents (at most). */
const LIVENESS_SWEEP_MS = 3000;

/**
 * Receives the live output of a command: runner, the command's id (as the
 * worker queued it) and one exec_output frame's payload.
 */
export type ExecOutputHook = (
  runnerId: string,
  commandId: string,
  output: ExecOutputPayload,
) => void | Promise<void>;

export interface AgentHubOptions {
  /**
   * Called for each exec_output frame of a command this instance sent on the
   * runner's current session and is still waiting for, in the order the frames
   * arrive; other frames are ignored. Not awaited, so a slow hook never holds
   * up the connection (it must keep its own order, by `seq`, if it awaits); a
   * throw or a rejection is logged. Nothing by default.
   */
  onExecOutput?: ExecOutputHook;
  /** Output lines kept per checkpoint log (E2EPOOL_LOG_MAX_LINES). */
  logMaxLines?: number;
}

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
  private readonly commandNotices: AgentNoticeListener;
  private sweepTimer: NodeJS.Timeout | undefined;
  private livenessTimer: NodeJS.Timeout | undefined;
  private readonly liveness: LivenessLog;
  private stopped = false;
  private readonly output: CommandOutputLog;

  constructor(
    private readonly store: Store,
    databaseUrl: string,
    private readonly log: Logger,
    /** An agent silent this long (no pong, no frame) is unreachable. */
    private readonly heartbeatTimeoutSeconds = 90,
    private readonly options: AgentHubOptions = {},
  ) {
    this.output = new CommandOutputLog(store.logs, options.logMaxLines ?? 10_000, log);
    this.liveness = new LivenessLog(store.sessions, this.instanceId, heartbeatTimeoutSeconds, log);
    this.commandNotices = new AgentNoticeListener({
      databaseUrl,
      channel: 'commands',
      applicationName: 'e2epool-agent-hub',
      onNotice: (instanceId) => {
        if (instanceId === this.instanceId) void this.dispatchAll();
      },
      log,
      name: 'agent hub',
      fallback: 'sweeping',
    });
  }

  /** Agent connections this instance holds (registered, or registering). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Starts listening for queued commands (and sweeping, in case a notice is missed). */
  async start(): Promise<void> {
    await this.commandNotices.ensure();
    this.sweepTimer = setInterval(() => void this.dispatchAll(), SWEEP_MS);
    this.sweepTimer.unref();
    const every = Math.min(LIVENESS_SWEEP_MS, Math.max(100, this.heartbeatTimeoutSeconds * 500));
    this.livenessTimer = setInterval(() => {
      if (!this.stopped) void this.liveness.sweep();
    }, every);
    this.livenessTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    clearInterval(this.livenessTimer);
    for (const s of [...this.sessions.values()]) {
      s.ws.close(CLOSE_CODES.goingAway, 'server shutting down');
      await this.unregister(s.runnerId, s.sessionId, 'server shutting down');
    }
    await this.commandNotices.close();
  }

  /**
   * Registers a connection; returns its session id. An older one for the runner
   * is closed. When registering fails, nothing of the new session remains (no
   * row, nothing in memory) and an older connection here keeps the runner.
   */
  async register(
    runnerId: string,
    ws: WebSocket,
    agentVersion: string | null = null,
  ): Promise<string> {
    const sessionId = randomUUID();
    const old = this.sessions.get(runnerId);
    const session: Session = { runnerId, sessionId, ws, inflight: new Map() };
    this.sessions.set(runnerId, session);
    try {
      await this.store.sessions.register({ runnerId, sessionId, instanceId: this.instanceId });
    } catch (err) {
      if (this.sessions.get(runnerId) === session) {
        // An older connection that closed meanwhile was unregistered already: not put back.
        if (old && old.ws.readyState !== old.ws.CLOSED) this.sessions.set(runnerId, old);
        else this.sessions.delete(runnerId);
      }
      // The insert may have committed although it reported an error.
      await this.store.sessions
        .remove(runnerId, sessionId)
        .catch((e: unknown) =>
          this.log.warn({ err: (e as Error).message }, 'cannot remove agent session'),
        );
      throw err;
    }
    if (old) {
      await this.failInflight(old, 'agent reconnected');
      old.ws.close(CLOSE_CODES.replaced, 'Replaced by a newer connection');
    }
    this.log.info({ runnerId, sessionId, agentVersion }, 'agent connected');
    await this.failLost(runnerId);
    void this.dispatch(runnerId);
    return sessionId;
  }

  /**
   * Forgets a connection that closed. Only the registered session is touched:
   * the late close of a replaced socket leaves its successor alone. Its row
   * stays, marked closed: the runner is not connected, and reads as
   * unreachable once its agent has been silent past the heartbeat timeout
   * (at once with `keepSession`: it went silent already), until it connects
   * again. With `forget` (its credentials were revoked) the row goes.
   */
  async unregister(
    runnerId: string,
    sessionId: string,
    why: string,
    o: { keepSession?: boolean; forget?: boolean } = {},
  ): Promise<void> {
    const s = this.sessions.get(runnerId);
    if (s && s.sessionId === sessionId) {
      this.sessions.delete(runnerId);
      await this.failInflight(s, `agent disconnected (${why})`);
    }
    await (
      o.forget
        ? this.store.sessions.remove(runnerId, sessionId)
        : this.store.sessions.close(runnerId, sessionId)
    ).catch((err: unknown) =>
      this.log.warn({ err: (err as Error).message }, 'cannot record the end of an agent session'),
    );
    this.log.info({ runnerId, sessionId, why }, 'agent disconnected');
  }

  /**
   * Records that the agent is alive. Returns false when another connection has
   * taken over this runner (on another instance): the caller closes this one.
   */
  touch(runnerId: string, sessionId: string): Promise<boolean> {
    return this.store.sessions.touch(runnerId, sessionId);
  }

  /** Records an exec reply that arrived on a session. Unknown ids (late, or another session's) are ignored. */
  async handleReply(
    runnerId: string,
    sessionId: string,
    wsId: string,
    reply: ExecData | null,
    error?: string,
  ): Promise<void> {
    const s = this.sessions.get(runnerId);
    if (!s || s.sessionId !== sessionId) return;
    const f = s.inflight.get(wsId);
    if (!f) return;
    s.inflight.delete(wsId);
    clearTimeout(f.timer);
    // Its lines first: whoever reads the result may read the log next.
    await this.output.end(wsId, reply);
    await this.finish(
      f.commandId,
      sessionId,
      reply
        ? {
            state: 'done',
            exitCode: reply.exit_code,
            stdout: reply.stdout.slice(0, EXEC_OUTPUT_CAP),
            stderr: reply.stderr.slice(0, EXEC_OUTPUT_CAP),
          }
        : { state: 'failed', error: error ?? 'malformed reply' },
    );
  }

  /**
   * Passes on a live output frame that arrived on a session. Only a command this
   * session was sent and has not answered yet is trusted: a frame for any other
   * id (late, another session's, never sent) is ignored.
   */
  handleOutput(runnerId: string, sessionId: string, wsId: string, output: ExecOutputPayload): void {
    const s = this.sessions.get(runnerId);
    const f = s?.sessionId === sessionId ? s.inflight.get(wsId) : undefined;
    if (!f) {
      this.log.debug(
        { runnerId, wsId, seq: output.seq },
        'ignoring exec_output for no command in flight on this session',
      );
      return;
    }
    this.output.output(wsId, output);
    const hook = this.options.onExecOutput;
    if (!hook) return;
    const failed = (err: unknown) =>
      this.log.warn(
        { runnerId, commandId: f.commandId, err: err instanceof Error ? err.message : String(err) },
        'the exec_output hook failed',
      );
    try {
      void Promise.resolve(hook(runnerId, f.commandId, output)).catch(failed);
    } catch (err) {
      failed(err);
    }
  }

  /** Claims and sends queued commands for one runner connected here; expired ones are failed instead. */
  private async dispatch(runnerId: string): Promise<void> {
    const s = this.sessions.get(runnerId);
    if (!s || this.stopped) return;
    let claimed: ClaimedCommand[];
    try {
      // A command nobody waits for any more is failed, never sent: it could run during a later job.
      for (const id of await this.store.commands.expirePending(runnerId)) {
        this.log.warn({ runnerId, commandId: id }, 'agent command expired before it was sent');
        await this.store.notices.commandFinished(id);
      }
      claimed = await this.store.commands.claim(runnerId, this.instanceId, s.sessionId);
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
            `agent did not reply within ${c.timeoutSeconds + 15}s`,
          ),
        (c.timeoutSeconds + 15) * 1000,
      );
      timer.unref();
      s.inflight.set(wsId, { commandId: c.id, timer });
      if (c.checkpointId !== null) this.output.begin(wsId, c.checkpointId);
      const command: ExecCommand = {
        id: wsId,
        type: 'exec',
        payload: { cmd: c.cmd, timeout: c.timeoutSeconds },
      };
      s.ws.send(JSON.stringify(command), (err) => {
        if (err)
          void this.handleReply(
            runnerId,
            s.sessionId,
            wsId,
            null,
            `cannot send to the agent: ${err.message}`,
          );
      });
    }
  }

  /** One indexed query finds the local runners with queued commands; only those are claimed. */
  private async dispatchAll(): Promise<void> {
    if (!this.stopped) await this.commandNotices.ensure();
    const runners = [...this.sessions.keys()];
    if (runners.length === 0) return;
    let waiting: string[];
    try {
      waiting = await this.store.commands.runnersWithPending(runners);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot look for queued agent commands');
      return;
    }
    for (const runnerId of waiting) await this.dispatch(runnerId);
  }

  /**
   * Fails the runner's commands sent on a session that is gone (an instance
   * that crashed never fails its own), and wakes their workers, which re-send
   * them on this connection at once. A reply can only come on the connection
   * a command was sent on, so nothing would ever answer them.
   */
  private async failLost(runnerId: string): Promise<void> {
    try {
      const ids = await this.store.commands.failLost(
        runnerId,
        'lost: the agent connection it was sent on is gone (the agent reconnected)',
      );
      for (const id of ids) {
        this.log.warn({ runnerId, commandId: id }, 'agent command lost with its connection');
        await this.store.notices.commandFinished(id);
      }
    } catch (err) {
      // The waiting worker also notices it on its next poll.
      this.log.warn({ err: (err as Error).message, runnerId }, 'cannot fail lost agent commands');
    }
  }

  private async failInflight(s: Session, why: string): Promise<void> {
    for (const [wsId, f] of s.inflight) {
      clearTimeout(f.timer);
      s.inflight.delete(wsId);
      await this.output.end(wsId, null);
      await this.finish(f.commandId, s.sessionId, { state: 'failed', error: why });
    }
  }

  /** Records how a command ended and wakes the worker waiting for it. */
  private async finish(commandId: string, sessionId: string, o: CommandOutcome): Promise<void> {
    try {
      await this.store.commands.finish(commandId, sessionId, o);
      await this.store.notices.commandFinished(commandId);
    } catch (err) {
      this.log.error(
        { err: (err as Error).message, commandId },
        'cannot record an agent command result',
      );
    }
  }
}
