/**
 * Names shared by the two ends of the agent bus: workers (activities) queue
 * commands in `agent_commands`; the API instance that holds the runner's agent
 * WebSocket (per `agent_sessions`) claims and sends them, and records results.
 */
export const AGENT_COMMANDS_CHANNEL = 'e2epool_agent_commands';
export const AGENT_RESULTS_CHANNEL = 'e2epool_agent_results';

/** Each stream of an exec result is capped at this many characters (SPEC §4). */
export const EXEC_OUTPUT_CAP = 65536;
