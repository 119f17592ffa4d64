import type { AgentRequest, ExecReply, Reply, RequestType } from '../common/agent-protocol';
import { CLI_EXIT } from '../common/failures';
import { createLogger, type Logger } from '../config/logger';
import { AgentConfigError, insecureRemoteWs, loadAgentConfig, type AgentConfig } from './config';
import { ControllerConnection, loggableUrl } from './connection';
import { CommandRunner } from './exec';
import { OutputStreamer } from './exec-output';
import { SocketGroupError, startIpcServer, type IpcHandler, type IpcServer } from './ipc';
import { errorReply, parseIpcRequest, type IncomingExec } from './messages';

/** Knobs that are not configuration (defaults suit production; tests shorten them). */
export interface AgentOptions {
  log?: Logger;
  /** A CLI request arriving while disconnected waits this long for a connection (10 s). */
  connectWaitMs?: number;
  /** Shutdown gives in-flight IPC requests this long to finish (30 s). */
  drainTimeoutMs?: number;
}

/** A running agent daemon. */
export interface AgentHandle {
  readonly config: AgentConfig;
  readonly socketPath: string;
  isConnected(): boolean;
  /** Resolves true once connected to the controller, false after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<boolean>;
  /** Commands from the controller still running. */
  runningCommands(): number;
  /**
   * Stops taking IPC requests, lets in-flight ones and running commands finish,
   * closes the WebSocket with 1000 and removes the socket. Idempotent.
   */
  stop(): Promise<void>;
}

const CMD_LOG_CHARS = 200;

/** How the controller's `exec` requests are run: output streamed live, the result sent back. */
function execHandler(
  runner: CommandRunner,
  send: ControllerConnection['send'],
  log: Logger,
): (c: IncomingExec) => void {
  return (c) => {
    const cmd = typeof c.cmd === 'string' ? c.cmd.slice(0, CMD_LOG_CHARS) : null;
    log.info({ id: c.id, cmd, timeout: c.timeout ?? null }, 'running command');
    const started = Date.now();
    // Live output is best effort: a frame the connection cannot take is lost,
    // the reply still carries the output.
    const output = new OutputStreamer(c.id, (frame) => send(frame, { droppable: true }));
    void runner.run(c.cmd, c.timeout, output).then((data) => {
      const reply: ExecReply = { id: c.id, status: data.exit_code === 0 ? 'ok' : 'error', data };
      const sent = send(reply);
      const { frames, unsent, droppedBytes } = output.stats;
      const fields = {
        id: c.id,
        exitCode: data.exit_code,
        ms: Date.now() - started,
        outputFrames: frames,
        ...(unsent > 0 && { unsentFrames: unsent }),
        ...(droppedBytes > 0 && { droppedOutputBytes: droppedBytes }),
      };
      if (sent) log.info(fields, 'command finished');
      else log.warn(fields, 'command finished but its result could not be sent: not connected');
    });
  };
}

/** How the CLI's IPC requests are answered: forwarded to the controller over the WebSocket. */
function ipcHandler(
  conn: ControllerConnection,
  config: AgentConfig,
  connectWaitMs: number,
  log: Logger,
): IpcHandler {
  const forward = async (req: AgentRequest): Promise<Reply> => {
    const reply = await conn.request(req.type, req.payload, {
      timeoutMs: config.requestTimeout * 1000,
      connectWaitMs,
    });
    // `e2epool logs --follow` asks every second: its answered requests would flood the journal.
    const level = req.type === 'logs' && reply.status === 'ok' ? 'debug' : 'info';
    log[level](
      { type: req.type, wsId: reply.id || null, status: reply.status, code: reply.error?.code },
      'forwarded CLI request',
    );
    // Our WebSocket id stays ours (fix: the old agent reused the CLI's id there).
    return { ...reply, id: req.id };
  };

  /**
   * `e2epool ping`: the controller's `{"pong": true}`, plus which controller
   * answered (without credentials), so the CLI can say where it went.
   */
  const ping = async (req: AgentRequest): Promise<Reply> => {
    const reply = await forward(req);
    if (reply.status !== 'ok') return reply;
    const data = reply.data && typeof reply.data === 'object' ? reply.data : {};
    return { ...reply, data: { ...data, controller_url: loggableUrl(config.controllerUrl) } };
  };

  /** Every IPC request type, dispatched from one table. */
  const ipcHandlers: Record<RequestType, (req: AgentRequest) => Promise<Reply>> = {
    create: forward,
    finalize: forward,
    status: forward,
    ping,
    logs: forward,
  };

  return async (raw) => {
    const parsed = parseIpcRequest(raw);
    if (!parsed.ok) return errorReply(parsed.id, 400, parsed.detail);
    const req = { ...parsed.request, id: parsed.request.id ?? '' };
    return ipcHandlers[req.type](req);
  };
}

function logStarted(config: AgentConfig, log: Logger): void {
  log.info(
    {
      runnerId: config.runnerId,
      controllerUrl: loggableUrl(config.controllerUrl),
      socketPath: config.socketPath,
      socketGroup: config.socketGroup,
      allowedCommands: config.allowedCommands?.length ?? 'any',
    },
    'agent started',
  );
  if (insecureRemoteWs(config)) {
    log.warn(
      { controllerUrl: loggableUrl(config.controllerUrl) },
      'allow_insecure_ws: the controller is reached over ws:// on the network: the token crosses it unencrypted; use wss://',
    );
  }
}

/**
 * Starts the agent: the IPC server on `config.socketPath`, then the WebSocket
 * to the controller. Rejects if the socket cannot be claimed (another agent,
 * path too long, bad group) or runner_id/token are missing.
 */
export async function startAgent(
  config: AgentConfig,
  opts: AgentOptions = {},
): Promise<AgentHandle> {
  if (!config.runnerId || !(config.token || config.agentToken)) {
    throw new AgentConfigError('runner_id and token must be configured');
  }
  const log = opts.log ?? createLogger().child({ component: 'agent' });
  const drainTimeoutMs = opts.drainTimeoutMs ?? 30_000;
  const runner = new CommandRunner(config.allowedCommands);

  const conn: ControllerConnection = new ControllerConnection({
    url: config.controllerUrl,
    runnerId: config.runnerId,
    // The agent token when there is one: the controller then refuses the REST token here.
    token: config.agentToken || config.token,
    reconnectMaxDelay: config.reconnectMaxDelay,
    heartbeatInterval: config.heartbeatInterval,
    log,
    onExec: execHandler(runner, (frame, o) => conn.send(frame, o), log),
  });

  const ipc: IpcServer = await startIpcServer({
    path: config.socketPath,
    group: config.socketGroup,
    log,
    handler: ipcHandler(conn, config, opts.connectWaitMs ?? 10_000, log),
  });
  logStarted(config, log);

  conn.start();

  let stopping: Promise<void> | null = null;
  const stop = async () => {
    log.info({ runningCommands: runner.runningCount }, 'agent shutting down');
    // Requests still in flight need the WebSocket, and so do the results of
    // running commands: close it last.
    await Promise.all([ipc.close(drainTimeoutMs), runner.drain()]);
    await conn.stop();
    log.info('agent stopped');
  };

  return {
    config,
    socketPath: config.socketPath,
    isConnected: () => conn.connected,
    waitConnected: (ms) => conn.waitConnected(ms),
    runningCommands: () => runner.runningCount,
    stop() {
      stopping ??= stop();
      return stopping;
    },
  };
}

/** Flags of `e2epool agent`. */
export interface AgentCommandContext {
  configPath?: string | undefined;
}

/**
 * `e2epool agent`: runs the daemon until SIGTERM or SIGINT (one shutdown path
 * for both), then exits 0. Returns the exit code: a configuration error
 * (unreadable or invalid agent.yml, no runner_id or token, ws:// to another
 * host, a socket_group this host lacks) is CLI_EXIT.config (78), which
 * systemd's RestartPreventExitStatus=78 keeps from restarting into; any other
 * start failure 1.
 */
export async function runAgentCommand(ctx: AgentCommandContext): Promise<number> {
  let config: AgentConfig;
  try {
    config = loadAgentConfig({ configPath: ctx.configPath });
  } catch (err) {
    process.stderr.write(`Error: ${err instanceof Error ? err.message : String(err)}\n`);
    return err instanceof AgentConfigError ? CLI_EXIT.config : CLI_EXIT.error;
  }
  if (!config.runnerId || !(config.token || config.agentToken)) {
    process.stderr.write('Error: runner_id and token must be configured\n');
    return CLI_EXIT.config;
  }
  const log = createLogger().child({ component: 'agent' });
  let handle: AgentHandle;
  try {
    handle = await startAgent(config, { log });
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    log.error({ err: msg }, 'agent failed to start');
    process.stderr.write(`Error: ${msg}\n`);
    // A socket held by another agent may free up; a bad setting will not.
    return err instanceof AgentConfigError || err instanceof SocketGroupError
      ? CLI_EXIT.config
      : CLI_EXIT.error;
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    let received: NodeJS.Signals | null = null;
    const onSignal = (s: NodeJS.Signals) => {
      if (received) {
        log.warn({ signal: s }, 'already shutting down');
        return;
      }
      received = s;
      resolve(s);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  log.info({ signal }, 'signal received');
  await handle.stop();
  return 0;
}
