import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startIpcServer } from '../../agent/ipc';
import { CLI_EXIT } from '../../common/failures';
import { okReply } from '../../agent/messages';
import { CLI, REPO, runCli, startCli } from '../helpers/processes';
import { waitFor } from '../helpers/wait';
import { FakeController, requireBuiltCli, tempDir } from './helpers';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/** Runs the CLI as another user (root only), as a CI job user would. */
function runCliAs(uid: number, args: string[], env: Record<string, string>) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      uid,
      gid: uid,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('the e2epool CLI on a runner host', () => {
  let tmp: ReturnType<typeof tempDir>;
  let noConfig: Record<string, string>;
  beforeAll(() => requireBuiltCli());
  beforeEach(() => {
    tmp = tempDir();
    noConfig = { E2EPOOL_AGENT_CONFIG: join(tmp.dir, 'none.yml') };
  });
  afterEach(() => tmp.cleanup());

  it('exits 2 when the agent is not running: no socket', async () => {
    const sock = join(tmp.dir, 'missing.sock');
    const r = await runCli(['status', '--checkpoint', 'x', '--socket', sock], noConfig);
    expect(r).toEqual({
      code: 2,
      stdout: '',
      stderr: `Error: agent is not running (socket not found: ${sock})\n`,
    });
  });

  it('exits 2 when the agent is not running: stale socket, connection refused', async () => {
    const sock = join(tmp.dir, 'stale.sock');
    spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    const r = await runCli(['create', '--job-id', '1', '--socket', sock], noConfig);
    expect(r).toEqual({
      code: 2,
      stdout: '',
      stderr: `Error: agent is not running (connection refused: ${sock})\n`,
    });
  });

  it.each([
    [['finalize', '--checkpoint', 'x', '--status', 'bogus'], /argument 'bogus' is invalid/],
    [['finalize', '--checkpoint', 'x', '--status', 'running'], /argument 'running' is invalid/],
    [['finalize', '--checkpoint', 'x'], /required option '--status <status>' not specified/],
    [['create'], /required option '--job-id <id>' not specified/],
    [['status'], /required option '--checkpoint <name>' not specified/],
    [['logs', '--follow'], /required option '--checkpoint <name>' not specified/],
    [['status', '--checkpoint', 'x', '--bogus'], /unknown option '--bogus'/],
    [['ping', 'extra'], /too many arguments/],
  ])('exits 2 on a usage error, as the Python original (argparse): %j', async (args, message) => {
    const r = await runCli([...args, '--socket', join(tmp.dir, 'missing.sock')], noConfig);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
  });

  it('explains a permission denied socket and suggests socket_group', async () => {
    const sock = join(tmp.dir, 'agent.sock');
    const server = await startIpcServer({ path: sock, handler: async () => okReply('', {}) });
    try {
      chmodSync(tmp.dir, 0o755);
      const args = ['status', '--checkpoint', 'x', '--socket', sock];
      let r: { code: number | string | null; stderr: string };
      if (isRoot) {
        r = await runCliAs(NOBODY, args, noConfig); // 0660 root:root keeps `nobody` out
      } else {
        chmodSync(sock, 0o000);
        r = await runCli(args, noConfig);
      }
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        `Error: permission denied connecting to the agent socket ${sock}: ` +
          'add this user to the group set as socket_group in the agent config\n',
      );
    } finally {
      await server.close(100);
    }
  });

  it('falls back to the defaults when agent.yml is unreadable, and says so', async () => {
    chmodSync(tmp.dir, 0o755);
    const config = join(tmp.dir, 'agent.yml');
    writeFileSync(config, 'socket_path: /run/custom.sock\ntoken: secret\n', { mode: 0o600 });
    const args = ['status', '--checkpoint', 'x'];
    const env = { E2EPOOL_AGENT_CONFIG: config };
    let r: { code: number | string | null; stdout: string; stderr: string };
    if (isRoot) {
      r = await runCliAs(NOBODY, args, env);
    } else {
      chmodSync(config, 0o000);
      r = await runCli(args, env);
    }
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'Error: agent is not running (socket not found: /var/run/e2epool-agent.sock)\n' +
        `Note: could not read ${config}: permission denied; pass --socket or set E2EPOOL_SOCKET_PATH\n`,
    );
  });

  it.each(['status', 'logs'])(
    'loads neither ws, zod, pino, yaml nor Temporal for %s',
    (command) => {
      const script = `
      const main = require(${JSON.stringify(join(REPO, 'dist', 'cli', 'main.js'))});
      main.buildProgram()
        .parseAsync(['node', 'e2epool', '${command}', '--checkpoint', 'x', '--socket', '/nonexistent/s.sock'])
        .then(() => process.stdout.write(JSON.stringify(Object.keys(require.cache))));
    `;
      const r = spawnSync(process.execPath, ['-e', script], {
        env: { PATH: process.env.PATH, E2EPOOL_AGENT_CONFIG: join(tmp.dir, 'none.yml') },
        encoding: 'utf8',
      });
      expect(r.stderr).toContain('agent is not running');
      const loaded = JSON.parse(r.stdout) as string[];
      expect(loaded.some((m) => m.includes('/dist/agent/cli.js'))).toBe(true);
      const heavy = loaded.filter((m) =>
        /node_modules\/(ws|zod|pino|yaml|@temporalio|typeorm|pg|express)\//.test(m),
      );
      expect(heavy).toEqual([]);
    },
  );

  it('`agent` exits 78 (EX_CONFIG: systemd does not restart it) without runner_id and token, or with a bad setting', async () => {
    const empty = join(tmp.dir, 'empty.yml');
    writeFileSync(empty, '# nothing\n');
    const r = await runCli(['agent', '--config', empty], {});
    expect(r).toMatchObject({
      code: CLI_EXIT.config,
      stderr: 'Error: runner_id and token must be configured\n',
    });
    const bad = await runCli(['agent', '--config', empty], {
      E2EPOOL_RUNNER_ID: 'r',
      E2EPOOL_TOKEN: 't',
      E2EPOOL_HEARTBEAT_INTERVAL: 'often',
    });
    expect(bad.code).toBe(CLI_EXIT.config);
    expect(bad.stderr).toBe(
      'Error: invalid agent setting heartbeat_interval (from E2EPOOL_HEARTBEAT_INTERVAL): ' +
        'expected a positive number of seconds (got "often")\n',
    );
  });
});

describe('the agent daemon process', () => {
  let tmp: ReturnType<typeof tempDir>;
  let ctl: FakeController;
  beforeAll(() => requireBuiltCli());
  beforeEach(async () => {
    tmp = tempDir();
  });
  afterEach(async () => {
    await ctl?.close();
    tmp.cleanup();
  });

  it('`agent` exits 78 for ws:// to another host; with allow_insecure_ws it starts and warns', async () => {
    const config = join(tmp.dir, 'remote.yml');
    writeFileSync(
      config,
      // TEST-NET-1: never answers, so the agent keeps retrying in the background.
      `controller_url: ws://192.0.2.1:9/ws/agent\nrunner_id: r\ntoken: t-secret\nsocket_path: ${join(tmp.dir, 'r.sock')}\n`,
      { mode: 0o600 },
    );
    const refused = await runCli(['agent', '--config', config], {});
    expect(refused).toMatchObject({ code: CLI_EXIT.config });
    expect(refused.stderr).toBe(
      `Error: invalid agent setting controller_url (in ${config}): ws:// to 192.0.2.1:9, which is not this host, ` +
        'would send the token unencrypted; use wss:// (or set allow_insecure_ws: true on a network you trust)\n',
    );
    const agent = startCli(['agent', '--config', config], { E2EPOOL_ALLOW_INSECURE_WS: 'true' });
    try {
      await agent.waitForOutput(
        /allow_insecure_ws: the controller is reached over ws:\/\//,
        10_000,
      );
      expect(agent.stdout() + agent.stderr()).not.toContain('t-secret');
    } finally {
      await agent.stop('SIGKILL', 1000);
    }
  });

  it('`agent` exits 78 when socket_group names no group of this host', async () => {
    const config = join(tmp.dir, 'nogroup.yml');
    writeFileSync(
      config,
      `controller_url: ws://127.0.0.1:9/ws/agent\nrunner_id: r\ntoken: t\nsocket_path: ${join(tmp.dir, 'g.sock')}\nsocket_group: no-such-group-e2epool\n`,
      { mode: 0o600 },
    );
    const r = await runCli(['agent', '--config', config], {});
    expect(r.code).toBe(CLI_EXIT.config);
    expect(r.stderr).toBe('Error: socket_group "no-such-group-e2epool" not found in /etc/group\n');
  });

  it('serves the CLI, refuses a second agent, and on SIGTERM finishes a running command, then exits 0', async () => {
    const token = `tok-${randomBytes(8).toString('hex')}`;
    ctl = await new FakeController({ 'runner-p': token }).start();
    const sock = join(tmp.dir, 'agent.sock');
    const config = join(tmp.dir, 'agent.yml');
    writeFileSync(
      config,
      [
        `controller_url: ${ctl.url}`,
        'runner_id: runner-p',
        `token: ${token}`,
        `socket_path: ${sock}`,
        'reconnect_max_delay: 5',
      ].join('\n'),
      { mode: 0o600 },
    );
    const agent = startCli(['agent', '--config', config], {});
    try {
      await agent.waitForOutput(/connected to controller/, 10_000);
      const cliEnv = { E2EPOOL_AGENT_CONFIG: config };
      const created = await runCli(['create', '--job-id', '55'], cliEnv);
      expect(created.code).toBe(0);
      expect(created.stdout).toMatch(/^job-55-\d+-[0-9a-f]{8}\n$/);

      const second = await runCli(['agent', '--config', config], {});
      expect(second).toMatchObject({
        code: 1,
        stderr: `Error: another agent is running on ${sock}\n`,
      });
      expect(existsSync(sock)).toBe(true);

      const result = ctl.exec('sleep 1; echo finished-after-sigterm', 20);
      await agent.waitForOutput(/running command/);
      agent.child.kill('SIGTERM');
      await expect(result).resolves.toEqual({
        id: expect.any(String),
        status: 'ok',
        data: { exit_code: 0, stdout: 'finished-after-sigterm\n', stderr: '' },
      });
      expect(await agent.exited).toBe(0);
      expect(existsSync(sock)).toBe(false);
      await waitFor('the controller to see the close', () => ctl.connections[0]!.closed);
      expect(ctl.connections[0]!.closeCode).toBe(1000);
      const out = agent.stdout() + agent.stderr();
      expect(out).toContain('agent stopped');
      expect(out).not.toContain(token);
      for (const line of agent.stdout().trim().split('\n'))
        expect(() => JSON.parse(line)).not.toThrow();
    } finally {
      await agent.stop('SIGKILL', 1000);
    }
  });
});
