import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import pino from 'pino';
import type { DataSource } from 'typeorm';
import { startApiServer, type ApiServer } from '../../api/server';
import { InventoryStore } from '../../config/inventory';
import { loadSettings } from '../../config/settings';
import { loadTemporalSettings } from '../../config/temporal';
import { connectDatabase } from '../../store/connect';
import { freePort } from '../../dev/ports';
import { startPostgresProcess, type PostgresProcess } from '../../dev/postgres-process';
import { startDevServer, type DevServer } from '../../temporal-dev/dev-server';
import { writeInventory } from '../helpers/env';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';

const log = pino({ level: 'silent' });

/** Every answer names the build: package.json's version and a commit (unbuilt under ts-jest: "unknown"). */
const build = {
  version: (
    JSON.parse(readFileSync(join(__dirname, '../../package.json'), 'utf8')) as { version: string }
  ).version,
  commit: expect.stringMatching(/^([0-9a-f]{40}|unknown)$/) as unknown as string,
};

async function health(api: ApiServer): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${api.url}/healthz`);
  return { status: res.status, body: await res.json() };
}

/**
 * /healthz across real outages: this file owns a Postgres and a Temporal dev
 * server of its own, stops them under a running API and starts them again.
 */
describe('GET /healthz', () => {
  let dir: string;
  let pg: PostgresProcess;
  let pgPort: number;
  let temporal: DevServer;
  let temporalPort: number;
  let ds: DataSource;
  let connection: Connection;
  let api: ApiServer;

  const startPg = () =>
    startPostgresProcess({ dataDir: join(dir, 'pg'), port: pgPort, database: 'health' });
  const startTemporal = () =>
    startDevServer({
      bin: shared().temporalBin,
      port: temporalPort,
      uiPort: null,
      namespace: 'default',
    });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-health-'));
    chmodSync(dir, 0o755);
    [pgPort, temporalPort] = await Promise.all([freePort(), freePort()]);
    [pg, temporal] = await Promise.all([startPg(), startTemporal()]);
    ds = await connectDatabase({ url: pg.url, poolSize: 2 }, log);
    connection = await Connection.connect({ address: temporal.address });
    const settings = loadSettings({ E2EPOOL_PORT: '0', E2EPOOL_HOST: '127.0.0.1' });
    api = await startApiServer({
      settings,
      dataSource: ds,
      temporal: connection,
      temporalSettings: loadTemporalSettings({
        TEMPORAL_ADDRESS: temporal.address,
        TEMPORAL_CONFIG_FILE: join(dir, 'none.toml'),
      }),
      inventory: InventoryStore.load(writeInventory('runners: []\n'), log),
      log,
    });
  }, 120_000);

  afterAll(async () => {
    await api?.close();
    await connection?.close();
    await ds?.destroy().catch(() => undefined);
    await Promise.all([pg?.stop(), temporal?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('says ok while Postgres and Temporal answer', async () => {
    expect(await health(api)).toEqual({
      status: 200,
      body: { status: 'ok', detail: null, ...build },
    });
  });

  it('says unhealthy with a short detail while Postgres is stopped, and recovers when it is back', async () => {
    await pg.stop();
    const down = await waitFor('a 503', async () => {
      const h = await health(api);
      return h.status === 503 ? h : undefined;
    });
    expect(down.body).toEqual({ status: 'unhealthy', detail: 'database unavailable', ...build });

    pg = await startPg();
    await waitFor(
      'a 200 after Postgres restarted',
      async () => (await health(api)).status === 200,
      { timeoutMs: 30_000 },
    );
    expect((await health(api)).body).toEqual({ status: 'ok', detail: null, ...build });
  }, 90_000);

  it('says unhealthy while Temporal is stopped, and recovers when it is back', async () => {
    await temporal.stop();
    const down = await waitFor('a 503', async () => {
      const h = await health(api);
      return h.status === 503 ? h : undefined;
    });
    expect(down.body).toEqual({ status: 'unhealthy', detail: 'temporal unavailable', ...build });

    temporal = await startTemporal();
    await waitFor(
      'a 200 after Temporal restarted',
      async () => (await health(api)).status === 200,
      { timeoutMs: 60_000 },
    );
  }, 120_000);

  it('answers unknown paths and bad JSON with a JSON detail, not a stack', async () => {
    const res = await fetch(`${api.url}/nope`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: 'Not Found' });
    const bad = await fetch(`${api.url}/healthz`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{',
    });
    expect(bad.status).toBe(422);
    expect(await bad.json()).toEqual({ detail: 'Request body is not valid JSON' });
  });
});
