import pino from 'pino';

/**
 * Paths pino blanks out wherever they appear, so a token or Proxmox secret
 * that reaches a log call by accident is never written.
 */
const REDACT = [
  'token',
  '*.token',
  'agent_token',
  '*.agent_token',
  'agentToken',
  '*.agentToken',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'proxmox_token_value',
  '*.proxmox_token_value',
  'gitlabToken',
  '*.gitlabToken',
  'adminToken',
  '*.adminToken',
  'cookie',
  '*.cookie',
  'headers.cookie',
  '*.headers.cookie',
  'githubToken',
  '*.githubToken',
  'password',
  '*.password',
  'apiKey',
  '*.apiKey',
];

export type Logger = pino.Logger;

/**
 * Where a process logs. Long-running processes (`api`, `worker`, `agent`) log
 * to stdout, the stream a supervisor (journald, docker) collects as the
 * service's log. One-shot commands (`migrate`, `export-inventory`, `setup`,
 * ...) log to stderr: their stdout is their result, which a shell may
 * redirect into a file (`e2epool export-inventory > registry.yml`).
 */
export type LogStream = 'stdout' | 'stderr';

/** One JSON logger per process; children add `component`. */
export function createLogger(
  level: string = process.env.E2EPOOL_LOG_LEVEL || 'info',
  stream: LogStream = 'stdout',
): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    // Synchronous, as pino's default: a one-shot command may exit right after its last line.
    pino.destination({ fd: stream === 'stderr' ? 2 : 1, sync: true }),
  );
}
