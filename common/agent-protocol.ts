/**
 * The agent protocol, for both ends: the WebSocket between a runner's agent
 * and the controller, and the requests the CLI hands the agent over its Unix
 * socket. The controller checks incoming frames with zod schemas that satisfy
 * these types, the agent with hand-written guards; every frame is `unknown`
 * until one of them accepts it.
 *
 * Imports nothing and holds only types and constants: the CLI loads it in
 * every CI job and must start without ws, zod or anything else heavy.
 */

/** Where agents connect, on the API's own HTTP port. */
export const AGENT_WS_PATH = '/ws/agent';

/**
 * The handshake names both ends' versions in HTTP headers, outside the
 * message envelopes (older peers ignore them): the agent's on its upgrade
 * request, the controller's on its 101 answer to an authenticated agent.
 */
export const AGENT_VERSION_HEADER = 'x-e2epool-agent-version';
/** See AGENT_VERSION_HEADER. */
export const CONTROLLER_VERSION_HEADER = 'x-e2epool-controller-version';

/**
 * Largest message, in bytes: a request or reply on the WebSocket, or one IPC
 * frame. The controller answers a larger WebSocket message with an error reply.
 */
export const MAX_MESSAGE_BYTES = 1_048_576;

/** Each of stdout and stderr of an exec reply is cut to this many characters. */
export const EXEC_OUTPUT_CAP = 65_536;

/*
 * Live output (`exec_output` frames) is best effort and bounded on the agent,
 * because a command can print far faster than a controller should store it:
 * one busy reset must not flood the WebSocket or the database, nor grow the
 * agent's memory. The exec reply stays the complete answer (up to
 * EXEC_OUTPUT_CAP): controllers that ignore exec_output lose nothing they had.
 */

/**
 * At most this many exec_output frames per second per exec; output arriving
 * faster is coalesced into the next frame, not dropped.
 */
export const EXEC_OUTPUT_FRAMES_PER_SECOND = 20;

/**
 * At most this many bytes (UTF-8) of `data` in one exec_output frame, cut
 * between characters; a longer line goes out in several frames.
 */
export const EXEC_OUTPUT_FRAME_BYTES = 8192;

/**
 * Output is sent by lines; a line still unfinished this many milliseconds
 * after it began (a prompt, a progress bar) is sent as far as it goes.
 */
export const EXEC_OUTPUT_FLUSH_MS = 200;

/**
 * Bytes of output an agent holds for one exec while the frame rate holds them
 * back. Beyond it the oldest are dropped, and the next frame of that stream
 * begins with the line `[e2epool: <n> bytes of output dropped]` so the gap shows.
 */
export const EXEC_OUTPUT_BACKLOG_BYTES = 262_144;

/** WebSocket close codes both ends act on. */
export const CLOSE_CODES = {
  /** The agent is shutting down. */
  normal: 1000,
  /** The controller is shutting down: reconnect (to another instance, or later). */
  goingAway: 1001,
  /** The controller could not register the connection: reconnect later. */
  serverError: 1011,
  /** A newer connection for the same runner took over (on any instance): this one is done. */
  replaced: 4000,
  /**
   * Wrong runner_id or token. Sent after accepting the handshake, so the agent
   * sees why; it then keeps retrying at its slowest pace.
   */
  invalidCredentials: 4401,
} as const;

/**
 * What an agent may ask the controller (and the CLI the agent). `logs` is
 * new: agents and controllers older than it answer it with a 400 that names
 * the request `type` (the Python agent forwards it unchanged).
 */
export const REQUEST_TYPES = ['create', 'finalize', 'status', 'ping', 'logs'] as const;
export type RequestType = (typeof REQUEST_TYPES)[number];

/** Agent → controller (and CLI → agent): `payload` is the request's body. */
export interface AgentRequest {
  id: string;
  type: RequestType;
  payload: Record<string, unknown>;
}

/** Why a request failed; `code` mirrors the REST status (400 for a malformed request). */
export interface ErrorBody {
  code: number;
  detail: string;
  /** Seconds to wait before asking again (a create during the cooldown); optional, new. */
  retry_after?: number;
}

/** The answer to an AgentRequest, under its id; all four keys are always present. */
export interface Reply {
  id: string;
  status: 'ok' | 'error';
  data: unknown;
  error: ErrorBody | null;
}

/**
 * Payload of a `logs` request: the log of one of the runner's own checkpoints
 * (see docs/protocol.md#checkpoint-logs), the entries after seq `after` (default 0, an integer ≥ 0).
 * Other runners' checkpoints are 403, unknown ones 404, as in REST.
 */
export interface LogsPayload {
  checkpoint_name: string;
  after?: number;
}

/** One entry of a checkpoint log: a step event, or one output line of a command. */
export interface LogsEntry {
  seq: number;
  /** ISO-8601 UTC. */
  at: string;
  kind: 'step' | 'stdout' | 'stderr';
  /** Steps: the operation (`reset_cmd`, `pause`, ...) and its result (`running`, `ok`, ...). */
  step?: string;
  result?: string;
  duration_ms?: number;
  /** Output lines: the line (without its newline); steps: a detail or error, if any. */
  text?: string;
}

/**
 * The data of a `logs` reply: the JSON form of `GET /checkpoint/{name}/logs`.
 * `next` is the seq to ask after next time; `done` once the checkpoint ended
 * and nothing more follows.
 */
export interface LogsData {
  entries: LogsEntry[];
  next: number;
  done: boolean;
}

/**
 * A `logs` reply carries at most this many entries, and at most
 * LOGS_PAGE_BYTES of them (their JSON, counted as the controller sends it),
 * so that it fits in one IPC frame; the first entry is always sent. An entry
 * is far smaller than half of LOGS_PAGE_BYTES (a stored line is at most 16,384
 * characters), so a page cut by the byte limit is larger than that half: a
 * client that gets one that large, or one of LOGS_PAGE_ENTRIES entries, should
 * ask again at once rather than wait.
 */
export const LOGS_PAGE_ENTRIES = 1000;
export const LOGS_PAGE_BYTES = 512 * 1024;

/** Controller → agent: run `cmd` in a shell, killed after `timeout` seconds. */
export interface ExecCommand {
  id: string;
  type: 'exec';
  payload: { cmd: string; timeout: number };
}

/**
 * Output of one command. A command that timed out has exit_code -1 and stderr
 * `Command timed out after <t>s`; each stream is at most EXEC_OUTPUT_CAP characters.
 */
export interface ExecData {
  exit_code: number;
  stdout: string;
  stderr: string;
}

/**
 * Agent → controller, under the ExecCommand's id; `status` is `ok` only for
 * exit code 0. It has no `error` key: a frame with a top-level `status` is a
 * reply, anything else from the agent is a request.
 */
export interface ExecReply {
  id: string;
  status: 'ok' | 'error';
  data: ExecData;
}

/** The two output streams of a command. */
export const EXEC_OUTPUT_STREAMS = ['stdout', 'stderr'] as const;
export type ExecOutputStream = (typeof EXEC_OUTPUT_STREAMS)[number];

/**
 * A piece of a running command's output. `seq` counts the exec's frames from 1,
 * across both streams; a missing number is a frame the agent could not send.
 * Concatenating one stream's `data` in seq order gives that stream's output,
 * apart from drop markers (EXEC_OUTPUT_BACKLOG_BYTES); a piece need not end at
 * a line's end. Between the two streams the order is only approximate, as it is
 * between any two pipes.
 */
export interface ExecOutputPayload {
  stream: ExecOutputStream;
  seq: number;
  data: string;
}

/**
 * Agent → controller, optional, under the ExecCommand's id while it runs and
 * never after its ExecReply; at most EXEC_OUTPUT_FRAMES_PER_SECOND per exec,
 * `data` at most EXEC_OUTPUT_FRAME_BYTES. Only a malformed one is answered
 * (with an error reply, like any malformed frame). Agents that never send it
 * (the Python original) keep working: their output arrives with the reply.
 */
export interface ExecOutput {
  id: string;
  type: 'exec_output';
  payload: ExecOutputPayload;
}
