/**
 * The agent package (`npm run package`, agent/packaging/build-package.ts):
 * the single-file bundle, the linux-x64 executable and the .deb, checked as a
 * runner host uses them. The .deb is installed by dpkg into a scratch root
 * (`dpkg --root --force-script-chrootless`: its postinst runs install-agent.sh
 * --host-only as a dry run there), and the executable installed there runs
 * as the agent daemon against a real controller.
 *
 * The build takes about 25 s (2 busy cores; most of it copying and
 * patching the node binary, then compressing it into the .deb). .ci/run
 * builds the artifacts once with `npm run package` and hands their directory
 * over in E2EPOOL_PACKAGE_DIR; without it this file builds them itself.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { artifactNames } from '../../agent/packaging/build-package';
import { CLI_EXIT } from '../../common/failures';
import { startAgentController, operations, type AgentController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners } from '../helpers/env';
import { REPO } from '../helpers/processes';
import { itWithSystemdAnalyze } from '../helpers/systemd';
import { waitFor } from '../helpers/wait';

const VERSION = (
  JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }
).version;
const NAMES = artifactNames(VERSION);
const R = testRunners(['pkg']);

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end without blocking this process (the controller runs in it). */
function exec(cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) {
  return new Promise<Run>((resolve, reject) => {
    const p = spawn(cmd, args, {
      env: o.env ?? process.env,
      cwd: o.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('error', reject);
    p.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** The short commit `--version` prints: the build's HEAD, or "unknown" outside a git checkout. */
function shortHead(): string {
  const r = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().slice(0, 7) : 'unknown';
}

let work: string;
let out: string;
let root: string;
let postinstOutput: string;
/** /etc before the install, and a file older than anything the install could write. */
let etcBefore: string[];
let marker: string;

/** Files under /etc that must stay as they are (sha of their content, or absent). */
const WATCHED = [
  '/etc/passwd',
  '/etc/group',
  '/etc/shadow',
  '/etc/gshadow',
  '/etc/e2epool/agent.yml',
  '/etc/systemd/system/e2epool-agent.service',
  '/etc/tmpfiles.d/e2epool-agent.conf',
];
const snapshot = () =>
  WATCHED.map((f) =>
    existsSync(f)
      ? `${f} ${createHash('sha256').update(readFileSync(f)).digest('hex')} ${statSync(f).mtimeMs}`
      : `${f} absent`,
  );

/**
 * `dpkg -i` of the .deb into a scratch root (an empty dpkg database of its
 * own); its postinst runs with DPKG_ROOT set and changes nothing on this host.
 */
async function installIntoScratchRoot(): Promise<void> {
  root = join(work, 'root');
  for (const d of [
    'var/lib/dpkg/info',
    'var/lib/dpkg/updates',
    'var/lib/dpkg/triggers',
    'var/log',
  ]) {
    mkdirSync(join(root, d), { recursive: true });
  }
  writeFileSync(join(root, 'var/lib/dpkg/status'), '');
  writeFileSync(join(root, 'var/lib/dpkg/available'), '');
  etcBefore = snapshot();
  marker = join(work, 'marker');
  writeFileSync(marker, '');
  // An empty root has none of the package's dependencies (libc6, passwd).
  const r = await exec('dpkg', [
    `--root=${root}`,
    '--force-script-chrootless',
    '--force-depends',
    `--log=${join(root, 'var/log/dpkg.log')}`,
    '-i',
    join(out, NAMES.deb),
  ]);
  postinstOutput = r.stdout + r.stderr;
  if (r.status !== 0) throw new Error(`dpkg -i failed:\n${postinstOutput}`);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'e2epool-pkg-'));
  out = process.env.E2EPOOL_PACKAGE_DIR ?? join(work, 'artifacts');
  if (!process.env.E2EPOOL_PACKAGE_DIR) {
    const built = await exec(process.execPath, [
      join(REPO, 'dist', 'agent', 'packaging', 'build-package.js'),
      '--out',
      out,
    ]);
    if (built.status !== 0)
      throw new Error(`npm run package failed:\n${built.stdout}\n${built.stderr}`);
  }
  await installIntoScratchRoot();
}, 300_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('npm run package', () => {
  it('writes the three artifacts named with the version, and SHA256SUMS that checks them', async () => {
    const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8');
    expect(
      sums
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(/\s+/)[1]),
    ).toEqual([
      `e2epool-agent-${VERSION}.js`,
      `e2epool-agent-${VERSION}-linux-x64`,
      `e2epool-agent_${VERSION}_amd64.deb`,
    ]);
    const check = await exec('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out });
    expect([check.status, check.stdout]).toEqual([
      0,
      Object.values(NAMES)
        .map((n) => `${n}: OK\n`)
        .join(''),
    ]);
  });

  it('the bundle needs nothing but Node: --version with NODE_PATH empty, from a directory without node_modules', async () => {
    const alone = join(work, 'alone');
    mkdirSync(alone);
    copyFileSync(join(out, NAMES.bundle), join(alone, NAMES.bundle));
    for (let d = alone; d !== dirname(d); d = dirname(d)) {
      expect(existsSync(join(d, 'node_modules'))).toBe(false);
    }
    const r = await exec(process.execPath, [NAMES.bundle, '--version'], {
      cwd: alone,
      env: { PATH: process.env.PATH, NODE_PATH: '' },
    });
    expect(r).toEqual({ status: 0, stdout: `e2epool ${VERSION} (${shortHead()})\n`, stderr: '' });
    // Whatever it requires at run time is a Node builtin (ws's optional add-ons are stubbed).
    const required = new Set(
      [...readFileSync(join(alone, NAMES.bundle), 'utf8').matchAll(/\brequire\("([^"]+)"\)/g)].map(
        (m) => m[1]!,
      ),
    );
    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    expect([...required].filter((m) => !builtins.has(m))).toEqual([]);
    expect(readdirNames(alone)).toEqual([NAMES.bundle]); // it wrote nothing beside itself
  });

  it('the executable runs without node on PATH and offers only the runner-host commands', async () => {
    const exe = join(out, NAMES.executable);
    const version = await exec(exe, ['--version'], { env: { PATH: '/nonexistent' } });
    expect(version).toEqual({
      status: 0,
      stdout: `e2epool ${VERSION} (${shortHead()})\n`,
      stderr: '',
    });
    const help = await exec(exe, ['--help'], { env: { PATH: '/nonexistent' } });
    expect(help.status).toBe(0);
    const commands = [...help.stdout.matchAll(/^ {2}([a-z]+) /gm)].map((m) => m[1]);
    expect(commands).toEqual(['agent', 'create', 'finalize', 'status', 'ping', 'logs', 'help']);
    const controllerCommand = await exec(exe, ['migrate'], { env: { PATH: '/nonexistent' } });
    expect(controllerCommand.status).toBe(CLI_EXIT.usage);
    expect(controllerCommand.stderr).toContain("unknown command 'migrate'");
  });

  it('the .deb: control fields, the conffile and each file with its owner and mode', async () => {
    const deb = join(out, NAMES.deb);
    const fields = await exec('dpkg-deb', ['-f', deb, 'Package', 'Version', 'Architecture']);
    expect(fields.stdout).toBe(
      `Package: e2epool-agent\nVersion: ${VERSION}\nArchitecture: amd64\n`,
    );
    expect((await exec('dpkg-deb', ['-I', deb, 'conffiles'])).stdout).toBe(
      '/etc/e2epool/agent.yml\n',
    );
    const listing = (await exec('dpkg-deb', ['-c', deb])).stdout
      .split('\n')
      .filter((l) => l && !l.startsWith('d'))
      .map((l) => {
        const [mode, owner, , , , path, ...rest] = l.split(/\s+/);
        return `${mode} ${owner} ${path}${rest.length ? ` ${rest.join(' ')}` : ''}`;
      })
      .sort();
    expect(listing).toEqual([
      '-rw-r----- root/root ./etc/e2epool/agent.yml',
      '-rw-r--r-- root/root ./usr/lib/systemd/system/e2epool-agent.service',
      '-rw-r--r-- root/root ./usr/lib/tmpfiles.d/e2epool-agent.conf',
      '-rw-r--r-- root/root ./usr/share/doc/e2epool-agent/agent.example.yml',
      '-rwxr-xr-x root/root ./usr/bin/e2epool-agent',
      '-rwxr-xr-x root/root ./usr/lib/e2epool/install-agent.sh',
      'lrwxrwxrwx root/root ./usr/bin/e2epool -> e2epool-agent',
    ]);
  });
});

function readdirNames(dir: string): string[] {
  return spawnSync('ls', ['-A', dir], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
}

describe('the .deb installed by dpkg into a scratch root', () => {
  it('is installed there, and the postinst ran install-agent.sh --host-only as a dry run', async () => {
    const q = await exec('dpkg-query', [
      `--root=${root}`,
      '-W',
      '-f',
      '${Status} ${Version}',
      'e2epool-agent',
    ]);
    expect(q.stdout).toBe(`install ok installed ${VERSION}`);
    expect(postinstOutput).toContain('Dry run: nothing is changed on this host.');
    expect(postinstOutput).toMatch(
      new RegExp(`==> e2epool CLI: ${root}/usr/bin/e2epool\\n {4}ok\\n`),
    );
    // The steps a real install runs, each reported, not done.
    for (const step of [
      '==> group e2epool-ci',
      '==> user e2epool-agent',
      '==> CI user gitlab-runner in group e2epool-ci',
      `==> config ${root}/etc/e2epool/agent.yml`,
    ]) {
      expect(postinstOutput).toContain(step);
    }
    // agent.yml goes to the agent's own group, never the socket group e2epool-ci
    // (the CI user is in it) or e2epool (the controller's secrets group).
    expect(postinstOutput).toContain(
      `==> config ${root}/etc/e2epool/agent.yml: owner root, group e2epool-agent (only e2epool-agent in it), mode 0640`,
    );
    expect(postinstOutput).toContain(
      `would run: chgrp e2epool-agent ${root}/etc/e2epool/agent.yml`,
    );
    expect(readFileSync(join(root, 'etc/e2epool/agent.yml'), 'utf8')).toMatch(
      /^socket_group: e2epool-ci$/m,
    );
    expect(postinstOutput).toContain('Dry run done: nothing was changed.');
    expect(readlinkSync(join(root, 'usr/bin/e2epool'))).toBe('e2epool-agent');
    expect(statSync(join(root, 'etc/e2epool/agent.yml')).mode & 0o777).toBe(0o640);
  });

  it('changed nothing under /etc on this host', async () => {
    expect(snapshot()).toEqual(etcBefore);
    // Whatever else on this machine touched /etc meanwhile (resolv.conf, ...), nothing an install would.
    const newer = await exec('find', ['/etc', '-newer', marker]);
    const installLike = /e2epool|passwd|group|shadow|sub[ug]id|systemd|tmpfiles/;
    expect(newer.stdout.split('\n').filter((p) => installLike.test(p))).toEqual([]);
    expect(lstatSync(join(root, 'usr/bin/e2epool-agent')).isFile()).toBe(true);
  });

  it('its agent.yml stops the agent with one clear line until it is filled in', async () => {
    const r = await exec(
      join(root, 'usr/bin/e2epool-agent'),
      ['agent', '--config', join(root, 'etc/e2epool/agent.yml')],
      { env: { PATH: '/nonexistent' } },
    );
    expect(r).toEqual({
      status: CLI_EXIT.config,
      stdout: '',
      stderr: 'Error: runner_id and token must be configured\n',
    });
  });

  itWithSystemdAnalyze(
    'its unit runs the installed executable and passes systemd-analyze verify',
    async () => {
      const unit = readFileSync(join(root, 'usr/lib/systemd/system/e2epool-agent.service'), 'utf8');
      expect(unit).toMatch(/^ExecStart=\/usr\/bin\/e2epool-agent agent$/m);
      expect(unit).toMatch(/^User=e2epool-agent$/m);
      expect(unit).toMatch(/^Group=e2epool-ci$/m);
      expect(unit).toMatch(/^RestartPreventExitStatus=78$/m);
      // verify checks that ExecStart is executable: point it at the scratch root's copy.
      const copy = join(work, 'e2epool-agent.service');
      writeFileSync(copy, unit.replace('ExecStart=/usr/bin/', `ExecStart=${root}/usr/bin/`));
      const r = await exec('systemd-analyze', ['verify', '--man=no', copy]);
      expect([r.status, r.stderr]).toEqual([0, '']);
    },
  );
});

describe('the installed executable as the runner host runs it', () => {
  let c: AgentController;
  let agent: ChildProcess | undefined;
  let sock: string;
  const resets = () => join(work, 'resets.log');
  const resetCmd = () => `sh -c 'echo reset >> ${resets()}; echo reset-ok'`;

  beforeAll(async () => {
    c = await startAgentController({
      inventory: `runners:\n${bareMetalRunnerYaml(R.pkg, { reset_cmd: `"${resetCmd()}"` })}`,
      env: { E2EPOOL_WS_HEARTBEAT_INTERVAL: '1', E2EPOOL_WS_HEARTBEAT_TIMEOUT: '5' },
      bus: { staleAfterSeconds: 5, connectWaitSeconds: 20 },
    });
  }, 120_000);
  afterAll(async () => {
    if (agent && agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
    await c?.stop();
  });

  /** The installed CLI (/usr/bin/e2epool, the link to the executable), without node on PATH. */
  const cli = (...args: string[]) =>
    exec(join(root, 'usr/bin/e2epool'), [...args, '--socket', sock], {
      env: { PATH: '/nonexistent', NODE_PATH: '' },
    });

  it('create → finalize → status, the agent reading a config in the Python agent format', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'e2p-'));
    sock = join(dir, 'agent.sock');
    // The original Python agent's agent.yml: double-quoted strings, comments, a list.
    const config = join(dir, 'agent.yml');
    writeFileSync(
      config,
      [
        '# e2epool agent configuration (written for the Python agent)',
        `controller_url: "${c.api.url.replace('http', 'ws')}/ws/agent"`,
        `runner_id: "${R.pkg.id}"`,
        `token: "${R.pkg.token}"`,
        `socket_path: "${sock}"  # the CLI's socket`,
        'reconnect_max_delay: 2',
        'heartbeat_interval: 1',
        'allowed_commands:',
        `  - "${resetCmd().replace(/"/g, '\\"')}"`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    // PATH for the agent's `sh -c` commands; the executable itself needs no node.
    const child = spawn(join(root, 'usr/bin/e2epool-agent'), ['agent', '--config', config], {
      env: { PATH: '/usr/bin:/bin', NODE_PATH: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    agent = child;
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    try {
      await waitFor('the agent session', () => c.bus.isConnected(R.pkg.id), { timeoutMs: 30_000 });
      const created = await cli('create', '--job-id', '601');
      expect([created.status, created.stderr]).toEqual([0, '']);
      const name = created.stdout.trim();
      expect(name).toMatch(/^job-601-\d+-[0-9a-f]{8}$/);

      const fin = await cli('finalize', '--checkpoint', name, '--status', 'failure');
      expect([fin.status, fin.stdout]).toEqual([0, 'Finalize queued\n']);
      await waitFor(
        'the reset',
        async () => (await cli('status', '--checkpoint', name)).stdout.includes('state:  reset'),
        { timeoutMs: 60_000, intervalMs: 300 },
      );
      expect(await cli('status', '--checkpoint', name)).toEqual({
        status: 0,
        stdout: `name:   ${name}\nstate:  reset\nresult: failure\n`,
        stderr: '',
      });
      // The agent ran reset_cmd (allowed: character for character in allowed_commands).
      expect(readFileSync(resets(), 'utf8')).toBe('reset\n');
      const row = (await operations(c.ds, name)).find((o) => o.operation === 'reset_cmd');
      expect(row).toMatchObject({ result: 'ok', detail: expect.stringContaining('reset-ok') });
      expect(output).not.toContain(R.pkg.token);
      expect(output).not.toMatch(/Warning/); // e.g. the executable's require() warning
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((res) => child.once('exit', res));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    }
    expect(child.exitCode).toBe(0);
  }, 120_000);
});
