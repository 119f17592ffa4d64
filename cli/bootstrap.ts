import { InventoryError } from '../config/runner-schema';
import { createLogger, type Logger } from '../config/logger';
import { ConfigError, loadSettings, obsoleteSettingsIn, type Settings } from '../config/settings';
import { loadTemporalSettings, type TemporalConnectSettings } from '../config/temporal';
import { CONFIG_EXIT_CODE } from '../common/exit-codes';
import { SETUP_EXIT_CODE } from '../worker/search-attributes';

export interface ControllerConfig {
  settings: Settings;
  temporal: TemporalConnectSettings;
  log: Logger;
}

/** Validates every setting up front; throws ConfigError naming the first bad one. */
export function loadControllerConfig(
  component: string,
  env: NodeJS.ProcessEnv = process.env,
): ControllerConfig {
  const settings = loadSettings(env);
  const temporal = loadTemporalSettings(env);
  const log = createLogger(settings.logLevel).child({ component });
  for (const [name, instead] of obsoleteSettingsIn(env)) {
    log.warn({ setting: name }, `${name} has no meaning in e2epool on Temporal: ${instead}`);
  }
  return { settings, temporal, log };
}

/** The commands that run as services: their configuration errors exit CONFIG_EXIT_CODE. */
const SERVICES = new Set(['api', 'worker']);

/**
 * Ends the process after a startup failure: configuration and inventory errors
 * are one line on stderr (`api` and `worker` then exit CONFIG_EXIT_CODE, 78;
 * one-shot commands exit 1); anything else is logged with its stack. A namespace
 * without e2epool's search attributes exits SETUP_EXIT_CODE (78, EX_CONFIG),
 * one line per attribute with the command that registers it: a supervisor
 * should not restart into the same refusal (systemd: RestartPreventExitStatus=78).
 */
export function exitOnStartupError(command: string, err: unknown): never {
  if (err instanceof Error && err.name === 'SearchAttributeSetupError') {
    // Every line counts here: each names an attribute and the command that registers it.
    process.stderr.write(`e2epool ${command}: ${err.message}\n`);
    process.exit(SETUP_EXIT_CODE);
  }
  if (err instanceof ConfigError || err instanceof InventoryError) {
    process.stderr.write(`e2epool ${command}: ${err.message}\n`);
    // A service (api, worker) must not restart into the same bad setting.
    if (SERVICES.has(command)) process.exit(CONFIG_EXIT_CODE);
  } else {
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`e2epool ${command}: ${msg.split('\n')[0]}\n`);
    if (process.env.E2EPOOL_LOG_LEVEL === 'debug' && err instanceof Error)
      process.stderr.write(`${err.stack}\n`);
  }
  process.exit(1);
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
