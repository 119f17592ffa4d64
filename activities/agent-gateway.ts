/** A runner's agent session: its id (new for every connection) and whether it is live. */
export interface AgentSessionInfo {
  sessionId: string;
  live: boolean;
}

/** Result of a command run by a runner's agent. */
export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** How a command is run: its identity, and when its caller stops waiting. */
export interface ExecOptions {
  /** Identity of the activity call: a retry with the same id reuses the command. */
  commandId?: string;
  /** The activity's cancellation: a command not sent yet is withdrawn, the wait ends. */
  signal?: AbortSignal;
  /** When the activity gives up (epoch ms): the command is never sent after it. */
  deadline?: number;
  /** The checkpoint whose log gets the command's output, live (see docs/protocol.md#checkpoint-logs). */
  checkpointId?: number;
}

/**
 * How activities reach the agent on a runner host. Implementations reject
 * with an ApplicationFailure of type `AgentNotConnected` (retryable) when the
 * runner has no agent connected.
 */
export interface AgentGateway {
  /**
   * Runs `cmd` on the runner's agent. `commandId` makes it idempotent: a retry
   * with the same id returns the result of a command that already finished
   * instead of running it again. `signal` and `deadline` end the wait (and
   * withdraw a command not sent yet) when the activity stops.
   */
  exec(
    runnerId: string,
    cmd: string,
    timeoutSeconds: number,
    opts?: ExecOptions,
  ): Promise<ExecResult>;
  /** Whether an agent is connected; with `since`, only a connection made after that instant counts. */
  isConnected(runnerId: string, since?: Date): Promise<boolean>;
  /**
   * The runner's agent session (each connection has a new id): whether it is
   * live, or null when there is none. Comparing ids needs no clock.
   */
  session(runnerId: string): Promise<AgentSessionInfo | null>;
}
