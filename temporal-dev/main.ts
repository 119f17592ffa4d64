/**
 * `npm run temporal:start`: the Temporal dev server alone, with state kept in
 * the data directory, the Web UI on 8233 and e2epool's search attributes.
 * Env: TEMPORAL_DEV_PORT (7233), TEMPORAL_DEV_UI_PORT (8233), TEMPORAL_NAMESPACE.
 */
import { join } from 'node:path';
import { devDataDir } from '../dev/data-dir';
import { startDevServer } from './dev-server';

async function main(): Promise<void> {
  const dataDir = devDataDir();
  const server = await startDevServer({
    port: Number(process.env.TEMPORAL_DEV_PORT || 7233),
    uiPort: Number(process.env.TEMPORAL_DEV_UI_PORT || 8233),
    namespace: process.env.TEMPORAL_NAMESPACE || 'default',
    dbFile: join(dataDir, 'temporal.sqlite'),
    logFile: join(dataDir, 'logs', 'temporal.log'),
  });
  process.stdout.write(
    `Temporal dev server: ${server.address} (namespace ${server.namespace})\n` +
      `Web UI:              ${server.uiUrl}\n` +
      `State:               ${join(dataDir, 'temporal.sqlite')}\nPress Ctrl-C to stop.\n`,
  );
  const stop = () => void server.stop().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  server.process.once('exit', (code) => {
    process.stderr.write(
      `Temporal dev server exited (${code}); see ${join(dataDir, 'logs', 'temporal.log')}\n`,
    );
    process.exit(1);
  });
}

main().catch((err) => {
  process.stderr.write(`temporal:start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
