import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../dev/ports';
import { REPO } from '../helpers/processes';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** `npm run dev` end to end: everything starts, answers, and Ctrl-C stops it all. */
describe('the dev runner (npm run dev)', () => {
  it('serves the API and the Web UI, and stops every child on SIGINT leaving no lock files', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'e2epool-dev-'));
    chmodSync(dataDir, 0o755);
    const [api, temporal, ui, pg, workerMetrics] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    const child = spawn(process.execPath, [join(REPO, 'dist', 'dev', 'main.js')], {
      cwd: dataDir, // no inventory.yml here: the runner generates its demo inventory
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        TEMPORAL_BIN: shared().temporalBin,
        E2EPOOL_DATA_DIR: dataDir,
        E2EPOOL_PORT: String(api),
        TEMPORAL_DEV_PORT: String(temporal),
        TEMPORAL_DEV_UI_PORT: String(ui),
        E2EPOOL_DEV_PG_PORT: String(pg),
        E2EPOOL_WORKER_METRICS_PORT: String(workerMetrics),
        TEMPORAL_CONFIG_FILE: join(dataDir, 'none.toml'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await waitFor(
        'the dev banner',
        () => out.includes('Press Ctrl-C') || child.exitCode !== null,
        { timeoutMs: 120_000, intervalMs: 200 },
      );
      expect(out).toContain(`API            http://127.0.0.1:${api}`);
      expect(out).toContain(`Temporal UI    http://127.0.0.1:${ui}`);
      const workerMetricsUrl = `http://127.0.0.1:${workerMetrics}/metrics`;
      expect(out).toContain(
        `Metrics        http://127.0.0.1:${api}/metrics (API), ${workerMetricsUrl} (worker)`,
      );

      const health = await fetch(`http://127.0.0.1:${api}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({
        status: 'ok',
        detail: null,
        version: expect.any(String),
        commit: expect.any(String),
      });
      // The fleet page takes the admin token the data directory keeps (never printed).
      const tokenFile = join(dataDir, 'admin-token');
      expect(out).toContain(
        `Fleet page     http://127.0.0.1:${api}/ui   (admin token: ${tokenFile})`,
      );
      const adminToken = readFileSync(tokenFile, 'utf8').trim();
      expect(adminToken).toMatch(/^[0-9a-f]{64}$/);
      expect(out).not.toContain(adminToken);
      expect((statSync(tokenFile).mode & 0o777).toString(8)).toBe('600');
      const login = await fetch(`http://127.0.0.1:${api}/ui/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'sec-fetch-site': 'same-origin',
        },
        body: new URLSearchParams({ token: adminToken }).toString(),
      });
      expect(login.status).toBe(303);
      expect((await fetch(`http://127.0.0.1:${api}/docs`)).status).toBe(200);
      const webUi = await fetch(`http://127.0.0.1:${ui}/`);
      expect(webUi.status).toBe(200);
      expect(await webUi.text()).toMatch(/<html/i);

      const pids = Object.values(
        JSON.parse(readFileSync(join(dataDir, 'dev.pids.json'), 'utf8')),
      ) as number[];
      expect(pids).toHaveLength(5); // temporal, postgres, worker, api, the demo agent
      expect(pids.every(alive)).toBe(true);

      // The three commands the banner prints, through the demo agent: create, finalize, status.
      const socket = join(dataDir, 'agent.sock');
      expect(out).toContain(`create --job-id 1 --socket ${socket}`);
      const cli = (...args: string[]) =>
        spawnSync(
          process.execPath,
          [join(REPO, 'bin', 'e2epool.js'), ...args, '--socket', socket],
          { encoding: 'utf8' },
        );
      const created = await waitFor('the agent to connect', () => {
        const r = cli('create', '--job-id', '1');
        return r.status === 0 ? r : undefined;
      });
      const name = created.stdout.trim();
      expect(name).toMatch(/^job-1-\d+-[0-9a-f]{8}$/);
      const fin = cli('finalize', '--checkpoint', name, '--status', 'failed');
      expect([fin.status, fin.stdout.trim()]).toEqual([0, 'Finalize queued']);
      const status = await waitFor(
        'the reset',
        () => {
          const r = cli('status', '--checkpoint', name);
          return r.stdout.includes('state:  reset') ? r : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 300 },
      );
      expect(status.stdout).toBe(`name:   ${name}\nstate:  reset\nresult: failure\n`);
      // The worker's own endpoint saw the reset; the API's holds the demo agent's session.
      const worker = await (await fetch(workerMetricsUrl)).text();
      expect(worker).toMatch(
        /^e2epool_step_duration_seconds_count\{[^}]*step="reset_cmd"[^}]*result="ok"[^}]*\} 1$/m,
      );
      const apiMetrics = await (await fetch(`http://127.0.0.1:${api}/metrics`)).text();
      expect(apiMetrics).toMatch(/^e2epool_agent_sessions\{service="e2epool-api"\} 1$/m);
      // The demo runner has an agent token and its agent uses it: no shared credential.
      expect(apiMetrics).toMatch(/^e2epool_runners_shared_credential\{service="e2epool-api"\} 0$/m);
      expect(out).not.toContain('share one credential');
      const agentToken = /^agent_token: (\S+)$/m.exec(
        readFileSync(join(dataDir, 'agent.dev.yml'), 'utf8'),
      )?.[1];
      expect(readFileSync(join(dataDir, 'inventory.dev.yml'), 'utf8')).toContain(
        `    agent_token: ${agentToken}\n`,
      );

      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(out).toContain('dev: stopped.');
      await waitFor('every child to be gone', () => pids.every((p) => !alive(p)), {
        timeoutMs: 10_000,
      });
      expect(existsSync(join(dataDir, 'dev.pids.json'))).toBe(false);
      expect(existsSync(join(dataDir, 'postgres', 'cluster', 'postmaster.pid'))).toBe(false);
      expect(existsSync(join(dataDir, 'temporal.sqlite'))).toBe(true);
    } finally {
      if (child.exitCode === null) {
        // Let the runner stop its detached children; SIGKILL would orphan them.
        child.kill('SIGINT');
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
