/**
 * The runner-host packaging in agent/packaging/: the installer (dry runs only:
 * a real run creates users and services), the systemd unit, the launchd plist,
 * the example config and the tmpfiles.d link.
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { loadAgentConfig } from '../../agent/config';
import { CLI_EXIT } from '../../common/failures';
import { itWithSystemdAnalyze, parseUnit } from '../helpers/systemd';

const PACKAGING = join(__dirname, '..', '..', 'agent', 'packaging');
const SCRIPT = join(PACKAGING, 'install-agent.sh');
const UNIT = join(PACKAGING, 'e2epool-agent.service');
const PLIST = join(PACKAGING, 'com.e2epool.agent.plist');
const EXAMPLE = join(PACKAGING, 'agent.example.yml');
const TMPFILES = join(PACKAGING, 'e2epool-agent.tmpfiles');
const OPS = join(__dirname, '..', '..', 'ops', 'systemd');

/** The agent's settings (controller URL, runner id, token, socket path and the rest, plus socket_group, allowed_commands, request_timeout). */
const AGENT_KEYS = [
  'controller_url',
  'runner_id',
  'token',
  'agent_token',
  'allow_insecure_ws',
  'socket_path',
  'reconnect_max_delay',
  'heartbeat_interval',
  'socket_group',
  'allowed_commands',
  'request_timeout',
];
/**
 * A dry run exits 1 when it found a blocker (a real run would stop). Here, with
 * the CLI stand-in and an existing CI user, the only one left is a host without
 * a running systemd (a container): these tests hold on both kinds of host.
 */
const SYSTEMD_RUNNING = existsSync('/run/systemd/system');
const DRY_RUN_STATUS = SYSTEMD_RUNNING ? 0 : 1;

/** The names install-agent.sh creates (its AGENT_USER and SOCKET_GROUP). */
const AGENT_USER = 'e2epool-agent';
const SOCKET_GROUP = 'e2epool-ci';
/** The controller's group (ops/systemd/): it reads the controller's secrets, so never the socket group. */
const CONTROLLER_GROUP = 'e2epool';

/** Where the CLI looks for the socket when it cannot read agent.yml (the default socket path). */
const CLI_DEFAULT_SOCKET = '/var/run/e2epool-agent.sock';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], input?: string): Run {
  const r = spawnSync(cmd, args, { input: input ?? '', encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function installer(args: string[], input?: string): Run {
  return run('bash', [SCRIPT, ...args], input);
}

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

let dir: string;
let tokenFile: string;
let token: string;
let prefix: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'e2epool-packaging-'));
  token = `tok-${randomUUID()}`;
  tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  // A stand-in for an installed e2epool, so the installer's CLI check passes.
  prefix = join(dir, 'prefix');
  mkdirSync(join(prefix, 'bin'), { recursive: true });
  writeFileSync(join(prefix, 'bin', 'e2epool'), '#!/bin/sh\nexit 0\n');
  chmodSync(join(prefix, 'bin', 'e2epool'), 0o755);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Flags of a complete dry run; the CI user is one that exists here. */
function dryRunArgs(tokenSource = tokenFile): string[] {
  return [
    '--controller-url',
    'wss://e2epool.example.com/ws/agent',
    '--runner-id',
    'ci-metal-1',
    '--token-file',
    tokenSource,
    '--ci-user',
    userInfo().username,
    '--prefix',
    prefix,
    '--allow-command',
    'sudo /usr/local/bin/reset-e2e-host',
    '--allow-command',
    "it's quoted",
    '--dry-run',
  ];
}

describe('install-agent.sh', () => {
  it('is valid bash (and passes shellcheck where it is installed)', () => {
    const syntax = run('bash', ['-n', SCRIPT]);
    expect(syntax.stderr).toBe('');
    expect(syntax.status).toBe(0);
    if (has('shellcheck')) {
      const lint = run('shellcheck', [SCRIPT]);
      expect(lint.stdout + lint.stderr).toBe('');
      expect(lint.status).toBe(0);
    }
  });

  it('refuses to run without the required flags and names them', () => {
    const none = installer([]);
    expect(none.status).toBe(2);
    expect(none.stdout).toBe('');
    expect(none.stderr).toContain('missing required --controller-url --runner-id --token-file');
    expect(none.stderr).toContain('Usage: install-agent.sh');

    const noToken = installer(['--controller-url', 'ws://c/ws/agent', '--runner-id', 'r1']);
    expect(noToken.status).toBe(2);
    expect(noToken.stderr).toMatch(/missing required --token-file\n/);
    expect(noToken.stdout).toBe('');
  });

  it('refuses a token on the command line without echoing it', () => {
    const secret = `tok-${randomUUID()}`;
    for (const args of [['--token', secret], [`--token=${secret}`]]) {
      const r = installer([...dryRunArgs(), ...args]);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('not accepted on the command line');
      expect(r.stderr).toContain('--token-file');
      expect(r.stdout + r.stderr).not.toContain(secret);
    }
    const stray = installer([...dryRunArgs(), secret]);
    expect(stray.status).toBe(2);
    expect(stray.stdout + stray.stderr).not.toContain(secret);
  });

  it('refuses an unreadable, empty or multi-line token', () => {
    const missing = installer(dryRunArgs(join(dir, 'no-such-file')));
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('cannot read the token file');

    const empty = installer(dryRunArgs('-'), '\n');
    expect(empty.status).toBe(1);
    expect(empty.stderr).toContain('the token is empty (from stdin)');

    const twoLines = installer(dryRunArgs('-'), `${token}\nsecond-line\n`);
    expect(twoLines.status).toBe(1);
    expect(twoLines.stderr).toContain('one line');
    expect(twoLines.stdout + twoLines.stderr).not.toContain(token);
  });

  it('rejects invalid values with a message naming the flag', () => {
    const args = dryRunArgs();
    const url = [...args];
    url[1] = 'https://e2epool.example.com';
    expect(installer(url)).toMatchObject({
      status: 2,
      stderr: expect.stringContaining('--controller-url must be a ws:// or wss:// URL'),
    });
    const id = [...args];
    id[3] = 'bad id';
    expect(installer(id)).toMatchObject({
      status: 2,
      stderr: expect.stringContaining('--runner-id'),
    });
  });

  it('in a dry run prints the planned steps and never the token', () => {
    const r = installer(dryRunArgs());
    expect(r.stderr).not.toContain('cannot read');
    expect(r.status).toBe(DRY_RUN_STATUS);
    const out = r.stdout;
    expect(out + r.stderr).not.toContain(token);
    expect(out).toMatch(/^Dry run: nothing is changed on this host\.$/m);
    const steps = out.split('\n').filter((l) => l.startsWith('==> '));
    expect(steps).toEqual([
      `==> e2epool CLI: ${prefix}/bin/e2epool`,
      `==> group ${SOCKET_GROUP}`,
      '==> user e2epool-agent',
      `==> CI user ${userInfo().username} in group ${SOCKET_GROUP}`,
      '==> config /etc/e2epool/agent.yml',
      '==> systemd unit /etc/systemd/system/e2epool-agent.service',
      '==> socket link /run/e2epool-agent.sock -> /run/e2epool/agent.sock (/etc/tmpfiles.d/e2epool-agent.conf)',
      '==> service e2epool-agent',
    ]);
    // What each step would do depends on the host only where a step is already done.
    expect(out).toMatch(
      /^==> group e2epool-ci\n {4}(would run: groupadd --system e2epool-ci|exists)$/m,
    );
    expect(out).toMatch(
      /^==> user e2epool-agent\n {4}(would run: useradd --system --gid e2epool-ci --no-create-home .* e2epool-agent|exists)$/m,
    );
    // A random token always differs from any installed config.
    expect(out).toContain(
      'would write /etc/e2epool/agent.yml (mode 0600, owner e2epool-agent:root)',
    );
    expect(out).toContain(`ExecStart=${prefix}/bin/e2epool agent, User=e2epool-agent`);
    expect(out).toMatch(/would run: systemctl (enable --now|restart) e2epool-agent/);
    expect(out).toMatch(
      SYSTEMD_RUNNING
        ? /^Dry run done: nothing was changed\.$/m
        : /^Dry run done: nothing was changed; 1 problem\(s\) above would stop a real run\.$/m,
    );
    expect(out).toContain('e2epool status --checkpoint x');
  });

  it('a dry run exits 1 when it found what stops a real run, warning about each', () => {
    const args = dryRunArgs();
    const noCli = installer([
      ...args.slice(0, args.indexOf('--prefix')),
      '--prefix',
      join(dir, 'no-such-prefix'),
      ...args.slice(args.indexOf('--prefix') + 2),
    ]);
    expect(noCli.status).toBe(1);
    expect(noCli.stderr).toContain(
      `warning: ${join(dir, 'no-such-prefix')}/bin/e2epool is not installed. Install it first, from the release package:`,
    );
    expect(noCli.stderr).toContain('npm install -g --prefix');
    const blockers = SYSTEMD_RUNNING ? 1 : 2;
    expect(noCli.stdout).toContain(
      `Dry run done: nothing was changed; ${blockers} problem(s) above would stop a real run.`,
    );
    expect(noCli.stderr.match(/\(a real run stops here\)/g)).toHaveLength(blockers);
    // Still the whole plan: a dry run shows everything, then fails.
    expect(noCli.stdout).toContain('==> service e2epool-agent');
  });

  it('reads the token from stdin with --token-file - and does not print it', () => {
    const r = installer(dryRunArgs('-'), `${token}\n`);
    expect(r.status).toBe(DRY_RUN_STATUS);
    expect(r.stdout).toContain("token: '<hidden>'");
    expect(r.stdout + r.stderr).not.toContain(token);
  });

  it('would write a config the agent accepts', () => {
    const r = installer(dryRunArgs());
    expect(r.status).toBe(DRY_RUN_STATUS);
    const yml = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('    | '))
      .map((l) => l.slice(6))
      .join('\n');
    const file = join(dir, 'planned-agent.yml');
    writeFileSync(file, `${yml}\n`);
    expect(loadAgentConfig({ configPath: file, env: {} })).toEqual({
      controllerUrl: 'wss://e2epool.example.com/ws/agent',
      runnerId: 'ci-metal-1',
      token: '<hidden>',
      agentToken: '',
      allowInsecureWs: false,
      socketPath: '/run/e2epool/agent.sock',
      socketGroup: SOCKET_GROUP,
      allowedCommands: ['sudo /usr/local/bin/reset-e2e-host', "it's quoted"],
      reconnectMaxDelay: 60,
      heartbeatInterval: 30,
      requestTimeout: 30,
    });
  });
});

/** The config a dry run would write, as the agent reads it. */
function plannedConfig(r: Run, name: string) {
  const yml = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('    | '))
    .map((l) => l.slice(6))
    .join('\n');
  const file = join(dir, name);
  writeFileSync(file, `${yml}\n`);
  return { yml, config: loadAgentConfig({ configPath: file, env: {} }) };
}

describe('install-agent.sh --host-only (the .deb postinst)', () => {
  /** A package root as dpkg leaves it: the CLI stand-in and agent.yml with `mode`. */
  function packageRoot(name: string, mode: number): string {
    const root = join(dir, name);
    mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
    writeFileSync(join(root, 'usr', 'bin', 'e2epool'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    mkdirSync(join(root, 'etc', 'e2epool'), { recursive: true });
    writeFileSync(join(root, 'etc', 'e2epool', 'agent.yml'), 'runner_id: x\n');
    chmodSync(join(root, 'etc', 'e2epool', 'agent.yml'), mode);
    return root;
  }

  it('takes no controller, runner or token flags, and --root only with --host-only --dry-run', () => {
    const withToken = installer(['--host-only', '--token-file', tokenFile]);
    expect(withToken.status).toBe(2);
    expect(withToken.stderr).toContain(
      '--host-only takes no controller, runner, token or command options',
    );
    for (const args of [
      ['--host-only', '--root', dir],
      ['--root', dir, '--dry-run'],
    ]) {
      const r = installer(args);
      expect([r.status, r.stderr.split('\n')[0]]).toEqual([
        2,
        'install-agent.sh: --root needs --host-only and --dry-run',
      ]);
    }
  });

  it('plans the groups, the user and the config owner, and reads no token', () => {
    const root = packageRoot('host-only', 0o640);
    const r = installer([
      '--host-only',
      '--dry-run',
      '--root',
      root,
      '--ci-user',
      userInfo().username,
    ]);
    expect(r.status).toBe(0);
    const steps = r.stdout.split('\n').filter((l) => l.startsWith('==> '));
    expect(steps).toEqual([
      `==> e2epool CLI: ${root}/usr/bin/e2epool`,
      `==> group ${SOCKET_GROUP}`,
      '==> user e2epool-agent',
      `==> CI user ${userInfo().username} in group ${SOCKET_GROUP}`,
      `==> config ${root}/etc/e2epool/agent.yml: owner root, group e2epool-agent (only e2epool-agent in it), mode 0640`,
    ]);
    // dpkg leaves it root:root: the postinst gives it to the agent's group.
    expect(r.stdout).toContain(
      `    would run: chgrp e2epool-agent ${root}/etc/e2epool/agent.yml\n    would run: chmod 0640 ${root}/etc/e2epool/agent.yml\n`,
    );
    expect(r.stdout).not.toMatch(/systemctl|agent\.yml \(mode/);
  });

  it('warns about a config everyone can read, and leaves it as the admin made it', () => {
    const root = packageRoot('host-only-open', 0o644);
    const config = join(root, 'etc', 'e2epool', 'agent.yml');
    spawnSync('chown', ['nobody', config]); // as root; otherwise it stays ours, not root's either
    const owner = run('stat', ['-c', '%U:%G', config]).stdout.trim();
    const r = installer(['--host-only', '--dry-run', '--root', root]);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(
      `${config} (${owner} 644) is readable by CI jobs (group ${SOCKET_GROUP} or ${CONTROLLER_GROUP}, or everyone); make it root:e2epool-agent 0640`,
    );
    expect(r.stdout).not.toContain('would run: chgrp');
  });
});

describe('install-agent.sh: the agent credential', () => {
  it('writes the config readable by the agent user only, not by the socket group CI jobs are in', () => {
    const r = installer(dryRunArgs());
    expect(r.status).toBe(DRY_RUN_STATUS);
    const line = r.stdout.split('\n').find((l) => l.includes('would write /etc/e2epool/agent.yml'));
    // Mode 0600, owned by e2epool-agent and not by the socket group (gitlab-runner is in that one).
    expect(line).toBe(
      '    would write /etc/e2epool/agent.yml (mode 0600, owner e2epool-agent:root)',
    );
  });

  it('--agent-token-file puts agent_token beside token, never printed', () => {
    const agentToken = `agent-${randomUUID()}`;
    const agentTokenFile = join(dir, 'agent-token');
    writeFileSync(agentTokenFile, `${agentToken}\n`, { mode: 0o600 });
    const r = installer([...dryRunArgs(), '--agent-token-file', agentTokenFile]);
    expect(r.status).toBe(DRY_RUN_STATUS);
    expect(r.stdout + r.stderr).not.toContain(agentToken);
    expect(r.stdout + r.stderr).not.toContain(token);
    const { yml, config } = plannedConfig(r, 'planned-with-agent-token.yml');
    expect(yml).toContain("agent_token: '<hidden>'");
    expect(config).toMatchObject({ token: '<hidden>', agentToken: '<hidden>' });

    // From stdin, with the runner token from its file.
    const fromStdin = installer([...dryRunArgs(), '--agent-token-file', '-'], `${agentToken}\n`);
    expect(fromStdin.status).toBe(DRY_RUN_STATUS);
    expect(fromStdin.stdout + fromStdin.stderr).not.toContain(agentToken);

    const both = installer([...dryRunArgs('-'), '--agent-token-file', '-'], `${token}\n`);
    expect(both).toMatchObject({ status: 2 });
    expect(both.stderr).toContain('cannot both read stdin');
    const same = installer([...dryRunArgs(), '--agent-token-file', tokenFile]);
    expect(same.status).toBe(1);
    expect(same.stderr).toContain('the agent token is the runner token');
    expect(same.stdout + same.stderr).not.toContain(token);
    for (const args of [['--agent-token', agentToken], [`--agent-token=${agentToken}`]]) {
      const r2 = installer([...dryRunArgs(), ...args]);
      expect(r2.status).toBe(2);
      expect(r2.stdout + r2.stderr).not.toContain(agentToken);
    }
  });

  it('refuses ws:// to another host unless --allow-insecure-ws, which the config then carries', () => {
    const withUrl = (url: string, ...extra: string[]) => {
      const args = dryRunArgs();
      args[1] = url;
      return installer([...args, ...extra]);
    };
    const remote = withUrl('ws://10.0.0.5:8080/ws/agent');
    expect(remote.status).toBe(2);
    expect(remote.stderr).toContain(
      '--controller-url is ws:// to 10.0.0.5, which is not this host: the tokens would cross the network unencrypted; use wss://, or pass --allow-insecure-ws',
    );
    const local = withUrl('ws://127.0.0.1:8080/ws/agent');
    expect(local.status).toBe(DRY_RUN_STATUS);
    expect(plannedConfig(local, 'planned-local.yml').config.allowInsecureWs).toBe(false);
    const allowed = withUrl('ws://10.0.0.5:8080/ws/agent', '--allow-insecure-ws');
    expect(allowed.status).toBe(DRY_RUN_STATUS);
    const { yml, config } = plannedConfig(allowed, 'planned-insecure.yml');
    expect(yml).toContain('allow_insecure_ws: true');
    expect(config).toMatchObject({
      controllerUrl: 'ws://10.0.0.5:8080/ws/agent',
      allowInsecureWs: true,
    });
  });
});

describe('the systemd unit', () => {
  const text = readFileSync(UNIT, 'utf8');
  const unit = parseUnit(text);
  const service = new Map(unit.get('Service'));

  it('parses and runs the agent as e2epool-agent, never as root', () => {
    expect([...unit.keys()]).toEqual(['Unit', 'Service', 'Install']);
    expect(unit.get('Service')!.filter(([k]) => k === 'User')).toEqual([['User', 'e2epool-agent']]);
    expect(text).not.toMatch(/^\s*User\s*=\s*(root|0)\s*$/m);
    expect(service.get('Group')).toBe(SOCKET_GROUP);
    expect(service.get('ExecStart')).toBe('/usr/local/bin/e2epool agent');
    expect(service.get('Environment')).toBe('E2EPOOL_AGENT_CONFIG=/etc/e2epool/agent.yml');
    expect(service.get('Restart')).toBe('always');
    expect(service.get('RestartSec')).toBe('5');
    expect(new Map(unit.get('Unit')).get('After')).toBe('network-online.target');
    expect(new Map(unit.get('Unit')).get('Wants')).toBe('network-online.target');
    expect(new Map(unit.get('Install')).get('WantedBy')).toBe('multi-user.target');
  });

  it("names the user and socket group install-agent.sh creates, and the socket group is not the controller's", () => {
    const script = readFileSync(SCRIPT, 'utf8');
    const scriptValue = (name: string) =>
      new RegExp(`^readonly ${name}=(\\S+)$`, 'm').exec(script)?.[1];
    expect(scriptValue('AGENT_USER')).toBe(AGENT_USER);
    expect(scriptValue('SOCKET_GROUP')).toBe(SOCKET_GROUP);
    expect(service.get('User')).toBe(AGENT_USER);
    expect(service.get('Group')).toBe(SOCKET_GROUP);
    // The controller's units run in the group that reads controller.env's secrets;
    // CI users join the socket group, so the two must differ.
    for (const file of ['e2epool-api.service', 'e2epool-worker.service']) {
      const controller = new Map(parseUnit(readFileSync(join(OPS, file), 'utf8')).get('Service'));
      expect([file, controller.get('Group')]).toEqual([file, CONTROLLER_GROUP]);
    }
    expect(SOCKET_GROUP).not.toBe(CONTROLLER_GROUP);
  });

  it('does not restart into a configuration error (exit 78)', () => {
    expect(service.get('RestartPreventExitStatus')).toBe(String(CLI_EXIT.config));
  });

  it('gives the agent a runtime directory for its socket and time to drain on stop', () => {
    expect(service.get('RuntimeDirectory')).toBe('e2epool');
    const example = loadAgentConfig({ configPath: EXAMPLE, env: {} });
    expect(example.socketPath).toBe(`/run/${service.get('RuntimeDirectory')}/agent.sock`);
    expect(service.get('KillSignal')).toBe('SIGTERM');
    expect(service.get('KillMode')).toBe('mixed');
    expect(Number(service.get('TimeoutStopSec'))).toBeGreaterThan(600);
  });

  it('sets nothing that stops sudo or hides the host from reset commands', () => {
    // Reset scripts use sudo, which NoNewPrivileges=true breaks; with a non-root
    // User= systemd implies it for every seccomp-based option.
    expect(service.get('NoNewPrivileges')).toBe('false');
    const impliesNoNewPrivileges = [
      'LockPersonality',
      'RestrictRealtime',
      'RestrictSUIDSGID',
      'RestrictNamespaces',
      'RestrictAddressFamilies',
      'SystemCallFilter',
      'SystemCallArchitectures',
      'MemoryDenyWriteExecute',
      'PrivateDevices',
      'ProtectKernelTunables',
      'ProtectKernelModules',
      'ProtectKernelLogs',
      'ProtectClock',
      'ProtectHostname',
      'DynamicUser',
    ];
    // These give the service (and so the reset scripts) its own mount namespace.
    const mountNamespace = [
      'ProtectSystem',
      'ProtectHome',
      'PrivateTmp',
      'ProtectControlGroups',
      'ReadOnlyPaths',
      'InaccessiblePaths',
      'TemporaryFileSystem',
      'PrivateMounts',
    ];
    const keys = unit.get('Service')!.map(([k]) => k);
    expect(keys.filter((k) => impliesNoNewPrivileges.includes(k))).toEqual([]);
    expect(keys.filter((k) => mountNamespace.includes(k))).toEqual([]);
  });

  itWithSystemdAnalyze('passes systemd-analyze verify', () => {
    // verify checks that ExecStart is executable: point it at the stand-in.
    const copy = join(dir, 'e2epool-agent.service');
    writeFileSync(
      copy,
      text.replace('ExecStart=/usr/local/bin/e2epool', `ExecStart=${prefix}/bin/e2epool`),
    );
    const r = run('systemd-analyze', ['verify', '--man=no', copy]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

type PlistValue = string | number | boolean | PlistValue[] | { [key: string]: PlistValue };

interface XmlElement {
  name: string;
  children: Array<XmlElement | string>;
}

/**
 * A strict, small XML well-formedness checker for plists: prolog, DOCTYPE
 * without internal subset, comments, elements, attributes, entity references.
 * Throws with the offset of the first error.
 */
function parseXml(text: string): XmlElement {
  let pos = 0;
  const fail = (msg: string): never => {
    throw new Error(`XML error at offset ${pos}: ${msg}`);
  };
  const NAME = /[A-Za-z_:][\w.:-]*/y;
  const name = (): string => {
    NAME.lastIndex = pos;
    const m = NAME.exec(text);
    if (!m) return fail('expected a name');
    pos += m[0].length;
    return m[0];
  };
  const skipSpace = () => {
    while (pos < text.length && /\s/.test(text[pos]!)) pos++;
  };
  const checkText = (s: string) => {
    const bad = /&(?!(?:lt|gt|amp|quot|apos|#\d+|#x[0-9A-Fa-f]+);)/.exec(s);
    if (bad) fail('bare & (use &amp;)');
    if (s.includes(']]>')) fail(']]> in text');
  };
  const comment = () => {
    const end = text.indexOf('-->', pos + 4);
    if (end < 0) fail('unterminated comment');
    if (text.slice(pos + 4, end).includes('--')) fail('"--" inside a comment');
    pos = end + 3;
  };
  const misc = () => {
    for (;;) {
      skipSpace();
      if (text.startsWith('<!--', pos)) comment();
      else if (text.startsWith('<?', pos)) {
        const end = text.indexOf('?>', pos);
        if (end < 0) fail('unterminated processing instruction');
        pos = end + 2;
      } else return;
    }
  };
  const element = (): XmlElement => {
    if (text[pos] !== '<') fail('expected <');
    pos++;
    const el: XmlElement = { name: name(), children: [] };
    const seen = new Set<string>();
    for (;;) {
      skipSpace();
      if (text.startsWith('/>', pos)) {
        pos += 2;
        return el;
      }
      if (text[pos] === '>') {
        pos++;
        break;
      }
      const attr = name();
      if (seen.has(attr)) fail(`duplicate attribute ${attr}`);
      seen.add(attr);
      skipSpace();
      if (text[pos] !== '=') fail('expected =');
      pos++;
      skipSpace();
      const q = text[pos];
      if (q !== '"' && q !== "'") fail('expected a quoted attribute value');
      const end = text.indexOf(q!, pos + 1);
      if (end < 0) fail('unterminated attribute value');
      const value = text.slice(pos + 1, end);
      if (value.includes('<')) fail('< in an attribute value');
      checkText(value);
      pos = end + 1;
    }
    for (;;) {
      const lt = text.indexOf('<', pos);
      if (lt < 0) fail(`unclosed <${el.name}>`);
      const chunk = text.slice(pos, lt);
      checkText(chunk);
      if (chunk) el.children.push(chunk);
      pos = lt;
      if (text.startsWith('</', pos)) {
        pos += 2;
        const closing = name();
        if (closing !== el.name) fail(`</${closing}> closes <${el.name}>`);
        skipSpace();
        if (text[pos] !== '>') fail('expected >');
        pos++;
        return el;
      }
      if (text.startsWith('<!--', pos)) comment();
      else if (text.startsWith('<![CDATA[', pos)) {
        const end = text.indexOf(']]>', pos);
        if (end < 0) fail('unterminated CDATA');
        el.children.push(text.slice(pos + 9, end));
        pos = end + 3;
      } else if (text.startsWith('<?', pos)) {
        const end = text.indexOf('?>', pos);
        if (end < 0) fail('unterminated processing instruction');
        pos = end + 2;
      } else el.children.push(element());
    }
  };

  if (text.startsWith('\uFEFF')) pos = 1;
  if (text.startsWith('<?xml', pos)) {
    const end = text.indexOf('?>', pos);
    if (end < 0) fail('unterminated XML declaration');
    pos = end + 2;
  }
  misc();
  if (text.startsWith('<!DOCTYPE', pos)) {
    const m = /<!DOCTYPE\s+[^\s>[]+(?:\s+(?:PUBLIC\s+"[^"]*"\s+"[^"]*"|SYSTEM\s+"[^"]*"))?\s*>/y;
    m.lastIndex = pos;
    const d = m.exec(text);
    if (!d) fail('unsupported DOCTYPE');
    pos += d![0].length;
  }
  misc();
  const root = element();
  misc();
  if (pos !== text.length) fail('content after the root element');
  return root;
}

/** The value of a plist XML element (dict, array, string, integer, true, false). */
function plistValue(el: XmlElement): PlistValue {
  const elements = el.children.filter((c): c is XmlElement => typeof c !== 'string');
  const text = el.children.filter((c): c is string => typeof c === 'string').join('');
  if (el.name !== 'string' && text.trim() !== '' && elements.length > 0) {
    throw new Error(`<${el.name}> mixes text and elements`);
  }
  switch (el.name) {
    case 'string':
      return text;
    case 'integer':
      if (!/^-?\d+$/.test(text.trim())) throw new Error(`bad <integer>${text}</integer>`);
      return Number(text);
    case 'true':
    case 'false':
      if (el.children.length > 0) throw new Error(`<${el.name}/> must be empty`);
      return el.name === 'true';
    case 'array':
      return elements.map(plistValue);
    case 'dict': {
      const out: { [key: string]: PlistValue } = {};
      for (let i = 0; i < elements.length; i += 2) {
        const key = elements[i]!;
        const value = elements[i + 1];
        if (key.name !== 'key' || !value) throw new Error('<dict> needs <key> and value pairs');
        out[plistValue({ ...key, name: 'string' }) as string] = plistValue(value);
      }
      return out;
    }
    default:
      throw new Error(`unexpected <${el.name}> in a plist`);
  }
}

function parsePlist(text: string): PlistValue {
  const root = parseXml(text);
  const items = root.children.filter((c): c is XmlElement => typeof c !== 'string');
  if (root.name !== 'plist' || items.length !== 1)
    throw new Error('expected <plist> with one value');
  return plistValue(items[0]!);
}

describe('the launchd plist', () => {
  const text = readFileSync(PLIST, 'utf8');

  it('the well-formedness checker rejects broken XML', () => {
    expect(() => parseXml('<plist><dict></plist>')).toThrow('closes');
    expect(() => parseXml('<!-- a -- b --><plist/>')).toThrow('"--" inside a comment');
    expect(() => parseXml('<plist>a & b</plist>')).toThrow('bare &');
    expect(() => parseXml('<plist/><plist/>')).toThrow('after the root element');
  });

  it('is a well-formed plist that runs `e2epool agent` as _e2epool and keeps it alive', () => {
    expect(parsePlist(text)).toEqual({
      Label: 'com.e2epool.agent',
      UserName: '_e2epool',
      GroupName: '_e2epool',
      ProgramArguments: ['/usr/local/bin/e2epool', 'agent'],
      EnvironmentVariables: {
        E2EPOOL_AGENT_CONFIG: '/usr/local/etc/e2epool/agent.yml',
        PATH: expect.stringContaining('/usr/local/bin'),
      },
      RunAtLoad: true,
      KeepAlive: true,
      ThrottleInterval: 5,
      ExitTimeOut: 660,
      Umask: 0o027,
      StandardOutPath: '/usr/local/var/log/e2epool-agent.log',
      StandardErrorPath: '/usr/local/var/log/e2epool-agent.log',
    });
  });
});

describe('agent.example.yml', () => {
  it('documents every agent setting and is a config the agent accepts', () => {
    const text = readFileSync(EXAMPLE, 'utf8');
    for (const key of AGENT_KEYS) expect(text).toMatch(new RegExp(`^${key}:`, 'm'));
    const config = loadAgentConfig({ configPath: EXAMPLE, env: {} });
    expect(config).toMatchObject({
      socketPath: '/run/e2epool/agent.sock',
      socketGroup: SOCKET_GROUP,
      reconnectMaxDelay: 60,
      heartbeatInterval: 30,
      requestTimeout: 30,
    });
  });
});

describe('the tmpfiles.d entry', () => {
  it("links the CLI's default socket path to the agent's socket", () => {
    const entries = readFileSync(TMPFILES, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('#'))
      .map((l) => l.trim().split(/\s+/));
    // /var/run is /run on every systemd host.
    const linkPath = CLI_DEFAULT_SOCKET.replace(/^\/var\/run\//, '/run/');
    expect(entries).toEqual([['L', linkPath, '-', '-', '-', '-', '/run/e2epool/agent.sock']]);
  });
});
