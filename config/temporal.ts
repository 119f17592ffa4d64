import { loadClientConnectConfig } from '@temporalio/envconfig';
import { ConfigError } from './settings';

/** How to reach Temporal: address, namespace and TLS/API key, in SDK form. */
export interface TemporalConnectSettings {
  address: string;
  namespace: string;
  /** Options for `Connection.connect` and `NativeConnection.connect`. */
  connectionOptions: ReturnType<typeof loadClientConnectConfig>['connectionOptions'];
}

/**
 * Reads the Temporal connection the way the `temporal` CLI does: TEMPORAL_ADDRESS,
 * TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, or a profile in the
 * TEMPORAL_CONFIG_FILE / default config file (TEMPORAL_PROFILE selects it).
 */
export function loadTemporalSettings(
  env: NodeJS.ProcessEnv = process.env,
): TemporalConnectSettings {
  let cfg: ReturnType<typeof loadClientConnectConfig>;
  try {
    const overrideEnvVars = Object.fromEntries(
      Object.entries(env).filter((e): e is [string, string] => typeof e[1] === 'string'),
    );
    cfg = loadClientConnectConfig({ overrideEnvVars, profile: env.TEMPORAL_PROFILE || undefined });
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ConfigError(`invalid Temporal client configuration (TEMPORAL_*): ${msg}`);
  }
  const address = cfg.connectionOptions.address || 'localhost:7233';
  if (!/^[^\s:/]+(:\d{1,5})?$/.test(address) && !/^\[[0-9a-fA-F:]+\](:\d{1,5})?$/.test(address)) {
    throw new ConfigError(
      `invalid setting TEMPORAL_ADDRESS: expected host:port (got ${JSON.stringify(address)})`,
    );
  }
  return {
    address,
    namespace: cfg.namespace || 'default',
    connectionOptions: { ...cfg.connectionOptions, address },
  };
}

/**
 * Connects to Temporal with `connect` (a client or a worker connection),
 * retrying every second for up to `waitMs` while the server starts: the API and
 * the worker may start before it.
 */
export async function connectWithRetry<T>(
  t: TemporalConnectSettings,
  waitMs: number,
  connect: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await connect();
    } catch (err) {
      if (Date.now() >= deadline)
        throw new Error(`cannot reach Temporal at ${t.address}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
