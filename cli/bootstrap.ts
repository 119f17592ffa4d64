import { InventoryError } from '../config/runner-schema';
import { createLogger, type Logger } from '../config/logger';
import { ConfigError, loadSettings, obsoleteSettingsIn, type Settings } from '../config/settings';
import { loadTemporalSettings, type TemporalConnectSettings } from '../config/temporal';
import { CLI_EXIT } from '../common/failures';
import { SchemaNotCurrent } from '../store/data-source';

export interface ControllerConfig {
  settings: Settings;
  temporal: TemporalConnectSettings;
  log: Logger;
}

/** The long-running controller processes: they log to stdout (config/logger.ts); the rest to stderr. */
const LONG_RUNNING = new Set(['api', 'worker']);

/** Validates every setting up front; throws ConfigError naming the first bad one. */
export function loadControllerConfig(
  component: string,
  env: NodeJS.ProcessEnv = process.env,
): ControllerConfig {
  const settings = loadSettings(env);
  const temporal = loadTemporalSettings(env);
  const stream = LONG_RUNNING.has(component) ? 'stdout' : 'stderr';
  const log = createLogger(settings.logLevel, stream).child({ component });
  for (const [name, instead] of obsoleteSettingsIn(env)) {
    log.warn({ setting: name }, `${name} has no meaning in e2epool on Temporal: ${instead}`);
  }
  return { settings, temporal, log };
}

/**
 * Ends the process after a startup failure: configuration and inventory errors
 * are one line on stderr and exit CLI_EXIT.config (78, EX_CONFIG), as does a
 * namespace without e2epool's search attributes (one line per attribute with
 * the command that registers it) and a database schema behind this e2epool:
 * the same for every command (docs/reference.md, "Command line: output and exit codes"),
 * and a supervisor should not restart `api` or `worker` into the same refusal
 * (systemd: RestartPreventExitStatus=78). Anything else exits 1
 * (CLI_EXIT.error).
 */
export function exitOnStartupError(command: string, err: unknown): never {
  if (err instanceof Error && err.name === 'SearchAttributeSetupError') {
    // Every line counts here: each names an attribute and the command that registers it.
    process.stderr.write(`e2epool ${command}: ${err.message}\n`);
    process.exit(CLI_EXIT.config);
  }
  if (
    err instanceof ConfigError ||
    err instanceof InventoryError ||
    err instanceof SchemaNotCurrent
  ) {
    process.stderr.write(`e2epool ${command}: ${err.message}\n`);
    process.exit(CLI_EXIT.config);
  } else {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`e2epool ${command}: ${msg.split('\n')[0]}\n`);
    if (process.env.E2EPOOL_LOG_LEVEL === 'debug' && err instanceof Error)
      process.stderr.write(`${err.stack}\n`);
  }
  process.exit(CLI_EXIT.error);
}

/**
 * Calls `stop` once on SIGINT/SIGTERM, or when a parent that spawned us with an
 * IPC channel goes away (so `npm run dev` never leaves orphans).
 */
export function onShutdown(stop: (reason: string) => Promise<void> | void): void {
  let called = false;
  const once = (reason: string) => {
    if (called) return;
    called = true;
    void Promise.resolve(stop(reason));
  };
  process.once('SIGINT', () => once('SIGINT'));
  process.once('SIGTERM', () => once('SIGTERM'));
  watchParent(() => once('parent exited'));
}

/**
 * When spawned with an IPC channel (by `npm run dev`), calls `fn` once the
 * parent goes away. The channel is unref'd so it never keeps us alive.
 */
export function watchParent(fn: () => void): void {
  if (!process.send) return;
  process.once('disconnect', fn);
  process.channel?.unref();
}
