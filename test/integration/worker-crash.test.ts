import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import pino from 'pino';
import { startApiServer, type ApiServer } from '../../api/server';
import { InventoryStore } from '../../config/inventory';
import { loadSettings } from '../../config/settings';
import { loadTemporalSettings } from '../../config/temporal';
import { restClient } from '../helpers/controller';
import { createMigratedDatabase } from '../helpers/db';
import {
  controllerEnv,
  proxmoxRunnerYaml,
  testRunner,
  uniqueId,
  writeInventory,
} from '../helpers/env';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Durability: the worker process is killed with SIGKILL in the middle of a
 * reset (after the rollback, before the unpause). A new worker process
 * finishes the reset, and the runner is unpaused exactly once.
 */
describe('a worker killed in the middle of a reset', () => {
  let pve: ProxmoxStandIn;
  let gitlab: GitLabStandIn;
  let api: ApiServer;
  let connection: Connection;
  let db: Awaited<ReturnType<typeof createMigratedDatabase>>;
  let env: Record<string, string>;
  const workers: ChildProcess[] = [];
  const r = testRunner('crash');

  function startWorker(): Promise<ChildProcess> {
    const child = spawn(process.execPath, [join(__dirname, '..', 'helpers', 'crash-worker.js')], {
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    workers.push(child);
    let out = '';
    return new Promise((resolve, reject) => {
      const onData = (c: Buffer) => {
        out += c.toString();
        if (out.includes('worker running')) resolve(child);
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`worker exited early (${code}):\n${out}`)));
      setTimeout(
        () => reject(new Error(`worker did not start within 30 s:\n${out}`)),
        30_000,
      ).unref();
    });
  }

  beforeAll(async () => {
    [pve, gitlab] = await Promise.all([
      startProxmoxStandIn({ taskDurationMs: 30 }),
      startGitLabStandIn(),
    ]);
    pve.addVm('pve1', 200, { status: 'running' });
    gitlab.addRunner(20);
    db = await createMigratedDatabase('crash');
    const inventoryPath = writeInventory(`runners:
${proxmoxRunnerYaml(pve, { runnerId: r.id, token: r.token, vmid: 200, extra: { gitlab_runner_id: 20 } })}`);
    env = controllerEnv({
      E2EPOOL_DATABASE_URL: db.db.url,
      E2EPOOL_INVENTORY_PATH: inventoryPath,
      E2EPOOL_TASK_QUEUE: uniqueId('tq-crash'),
      E2EPOOL_GITLAB_URL: gitlab.url,
      E2EPOOL_GITLAB_TOKEN: gitlab.token,
      E2EPOOL_PROXMOX_TASK_POLL_SECONDS: '0.05',
      E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.1',
      E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
      E2EPOOL_PORT: '0',
      E2EPOOL_HOST: '127.0.0.1',
      E2EPOOL_LOG_LEVEL: 'warn',
    });
    const log = pino({ level: 'silent' });
    connection = await Connection.connect({ address: shared().temporalAddress });
    api = await startApiServer({
      settings: loadSettings(env),
      dataSource: db.ds,
      temporal: connection,
      temporalSettings: loadTemporalSettings(env),
      inventory: InventoryStore.load(inventoryPath, log),
      log,
    });
  });

  afterAll(async () => {
    for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
    await api?.close();
    await connection?.close();
    await db?.close();
    await Promise.all([pve?.close(), gitlab?.close()]);
  });

  it('finishes the reset on a new worker and unpauses the runner exactly once', async () => {
    const rest = restClient(() => api.url, r.token);
    const first = await startWorker();
    const name = (await rest.create(r.id, '4242')).body.name as string;
    expect(name).toBeDefined();

    // The VM start hangs, so the worker is caught between rollback and unpause.
    pve.failNext({ taskType: 'qmstart' }, { kind: 'hang' }, Infinity);
    expect((await rest.finalize(name, 'failure')).status).toBe(202);
    const vm = pve.vm('pve1', 200);
    await waitFor(
      'the rollback and the start of the VM',
      () => vm.rollbacks === 1 && pve.calls.some((c) => c.path.endsWith('/status/start')),
    );
    expect(gitlab.runner(20).pausedHistory).toEqual([true]);

    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    pve.clearFaults(); // the hung start task now completes
    expect((await rest.status(name)).body.state).toBe('finalize_queued');

    await startWorker();
    const done = await waitFor(
      'the reset on the new worker',
      async () => {
        const r = await rest.status(name);
        return r.body.state === 'reset' ? r.body : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    expect(done.finalize_status).toBe('failure');
    expect(gitlab.runner(20)).toMatchObject({ paused: false, pausedHistory: [true, false] });
    expect(vm).toMatchObject({ status: 'running', rollbacks: 1, snapshots: [] });
    const unpauses = await db.ds.query(
      `SELECT count(*)::int AS n FROM operation_logs o JOIN checkpoints c ON c.id = o.checkpoint_id
        WHERE c.name = $1 AND o.operation = 'unpause'`,
      [name],
    );
    expect(unpauses[0].n).toBe(1);
  }, 90_000);
});
