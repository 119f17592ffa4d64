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

/** One JSON logger per process; children add `component`. */
export function createLogger(level: string = process.env.E2EPOOL_LOG_LEVEL || 'info'): Logger {
  return pino({
    level,
    base: { pid: process.pid },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
