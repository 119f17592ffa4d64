import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import {
  agentConfig,
  AgentConfigError,
  cliConnectSettings,
  DEFAULT_CONFIG_PATH,
  loadAgentConfig,
  readFlatYaml,
} from '../../agent/config';
import { prng, tempDir } from './helpers';

describe('agent config', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => (tmp = tempDir()));
  afterEach(() => tmp.cleanup());
  const file = (text: string, name = 'agent.yml') => {
    const p = join(tmp.dir, name);
    writeFileSync(p, text, { mode: 0o600 });
    return p;
  };
  const missing = () => join(tmp.dir, 'missing.yml');

  it('has the documented defaults', () => {
    expect(agentConfig()).toEqual(
      expect.objectContaining({
        controllerUrl: 'ws://localhost:8080/ws/agent',
        runnerId: '',
        token: '',
        socketPath: '/var/run/e2epool-agent.sock',
        reconnectMaxDelay: 60,
        heartbeatInterval: 30,
        socketGroup: null,
        allowedCommands: null,
        requestTimeout: 30,
      }),
    );
  });

  it('reads the YAML file, and E2EPOOL_<KEY> overrides each key', () => {
    const path = file(
      [
        'controller_url: wss://ctl.example/ws/agent',
        'runner_id: metal-1',
        'token: "s3cret"',
        'socket_path: /run/e2e.sock # trailing comment',
        'reconnect_max_delay: 10',
        'heartbeat_interval: 5',
        'socket_group: gitlab-runner',
        'allowed_commands:',
        '  - /usr/local/bin/reset-runner',
        '  - "true"',
        'request_timeout: 12.5',
      ].join('\n'),
    );
    const base = loadAgentConfig({ configPath: path, env: {} });
    expect(base).toEqual({
      controllerUrl: 'wss://ctl.example/ws/agent',
      runnerId: 'metal-1',
      token: 's3cret',
      agentToken: '',
      allowInsecureWs: false,
      socketPath: '/run/e2e.sock',
      reconnectMaxDelay: 10,
      heartbeatInterval: 5,
      socketGroup: 'gitlab-runner',
      allowedCommands: ['/usr/local/bin/reset-runner', 'true'],
      requestTimeout: 12.5,
    });
    const overridden = loadAgentConfig({
      configPath: path,
      env: {
        E2EPOOL_RUNNER_ID: 'metal-2',
        E2EPOOL_TOKEN: 'other',
        E2EPOOL_SOCKET_PATH: '/tmp/x.sock',
        E2EPOOL_HEARTBEAT_INTERVAL: '0.5',
        E2EPOOL_SOCKET_GROUP: '998',
        E2EPOOL_ALLOWED_COMMANDS: '["a b", "c"]',
        E2EPOOL_REQUEST_TIMEOUT: '', // empty = unset
      },
    });
    expect(overridden).toMatchObject({
      runnerId: 'metal-2',
      token: 'other',
      socketPath: '/tmp/x.sock',
      heartbeatInterval: 0.5,
      socketGroup: 998,
      allowedCommands: ['a b', 'c'],
      requestTimeout: 12.5,
    });
    expect(
      loadAgentConfig({ configPath: path, env: { E2EPOOL_ALLOWED_COMMANDS: 'one\ntwo words\n' } })
        .allowedCommands,
    ).toEqual(['one', 'two words']);
  });

  it('finds the file from --config, else $E2EPOOL_AGENT_CONFIG, else the default path', () => {
    const a = file('runner_id: from-flag\n', 'a.yml');
    const b = file('runner_id: from-env\n', 'b.yml');
    expect(loadAgentConfig({ configPath: a, env: { E2EPOOL_AGENT_CONFIG: b } }).runnerId).toBe(
      'from-flag',
    );
    expect(loadAgentConfig({ env: { E2EPOOL_AGENT_CONFIG: b } }).runnerId).toBe('from-env');
    expect(DEFAULT_CONFIG_PATH).toBe('/etc/e2epool/agent.yml');
  });

  it.each([
    [
      'reconnect_max_delay: soon\n',
      /^invalid agent setting reconnect_max_delay \(in .*\): expected a positive number of seconds \(got "soon"\)$/,
    ],
    ['heartbeat_interval: 0\n', /^invalid agent setting heartbeat_interval .*positive/],
    [
      'controller_url: http://ctl:8080/ws/agent\n',
      /^invalid agent setting controller_url .*ws:\/\/ or wss:\/\//,
    ],
    ['socket_path: ""\n', /^invalid agent setting socket_path .*must not be empty/],
    ['allowed_commands: ls\n', /^invalid agent setting allowed_commands .*list/],
    ['socket_group: [1]\n', /^invalid agent setting socket_group .*group name or gid/],
    ['sockt_path: /x\n', /^unknown agent setting sockt_path in /],
    ['runner_id: [unclosed\n', /^cannot parse agent config /],
  ])('rejects %j with one line naming the key', (yaml, message) => {
    const path = file(yaml);
    let err: unknown;
    try {
      loadAgentConfig({ configPath: path, env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AgentConfigError);
    const msg = (err as Error).message;
    expect(msg).toMatch(message);
    expect(msg).not.toContain('\n');
  });

  it('names the environment variable of a bad override and never echoes a token', () => {
    expect(() => loadAgentConfig({ configPath: missing(), env: {} })).toThrow(
      `agent config not found: ${missing()}`,
    );
    expect(() =>
      loadAgentConfig({ configPath: file(''), env: { E2EPOOL_REQUEST_TIMEOUT: '-1' } }),
    ).toThrow(/^invalid agent setting request_timeout \(from E2EPOOL_REQUEST_TIMEOUT\)/);
    const path = file('token: [not-a-string-secret]\n');
    expect(() => loadAgentConfig({ configPath: path, env: {} })).toThrow(
      /^invalid agent setting token \(in .*\): expected a string$/,
    );
  });

  it('reads agent_token (and E2EPOOL_AGENT_TOKEN) beside token, and never echoes it', () => {
    const path = file('runner_id: r\ntoken: rest-secret\nagent_token: agent-secret\n');
    expect(loadAgentConfig({ configPath: path, env: {} })).toMatchObject({
      token: 'rest-secret',
      agentToken: 'agent-secret',
    });
    expect(
      loadAgentConfig({ configPath: path, env: { E2EPOOL_AGENT_TOKEN: 'from-env' } }).agentToken,
    ).toBe('from-env');
    const bad = file('agent_token: [agent-secret-in-a-list]\n', 'bad.yml');
    expect(() => loadAgentConfig({ configPath: bad, env: {} })).toThrow(
      /^invalid agent setting agent_token \(in .*\): expected a string$/,
    );
  });

  it('refuses ws:// to a controller that is not this host, unless allow_insecure_ws: true', () => {
    const remote = file('controller_url: ws://ctl.example:8080/ws/agent\n', 'remote.yml');
    let err: unknown;
    try {
      loadAgentConfig({ configPath: remote, env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AgentConfigError);
    expect((err as Error).message).toBe(
      `invalid agent setting controller_url (in ${remote}): ws:// to ctl.example:8080, which is not this host, ` +
        'would send the token unencrypted; use wss:// (or set allow_insecure_ws: true on a network you trust)',
    );
    expect(() =>
      loadAgentConfig({
        configPath: file('runner_id: r\n', 'none.yml'),
        env: { E2EPOOL_CONTROLLER_URL: 'ws://10.1.2.3/ws/agent' },
      }),
    ).toThrow(
      /controller_url \(from E2EPOOL_CONTROLLER_URL\): ws:\/\/ to 10\.1\.2\.3, which is not this host/,
    );
    expect(
      loadAgentConfig({
        configPath: file(
          'controller_url: ws://ctl.example/ws/agent\nallow_insecure_ws: true\n',
          'ok.yml',
        ),
        env: {},
      }).allowInsecureWs,
    ).toBe(true);
    expect(
      loadAgentConfig({ configPath: remote, env: { E2EPOOL_ALLOW_INSECURE_WS: 'true' } })
        .controllerUrl,
    ).toBe('ws://ctl.example:8080/ws/agent');
    expect(() => agentConfig({ controllerUrl: 'ws://192.168.1.5:8080/ws/agent' })).toThrow(
      AgentConfigError,
    );
    // Loopback stays allowed; wss:// anywhere.
    for (const url of [
      'ws://localhost:8080/ws/agent',
      'ws://127.0.0.1:8080/ws/agent',
      'ws://127.3.4.5/ws/agent',
      'ws://[::1]:8080/ws/agent',
      'wss://ctl.example/ws/agent',
    ])
      expect(agentConfig({ controllerUrl: url }).controllerUrl).toBe(url);
    expect(() =>
      loadAgentConfig({ configPath: file('allow_insecure_ws: maybe\n', 'maybe.yml'), env: {} }),
    ).toThrow(/allow_insecure_ws .*: expected true or false/);
  });

  it('validates programmatic configs the same way', () => {
    expect(agentConfig({ runnerId: 'r', token: 't', heartbeatInterval: 0.1 })).toMatchObject({
      runnerId: 'r',
      heartbeatInterval: 0.1,
      socketPath: '/var/run/e2epool-agent.sock',
    });
    expect(() => agentConfig({ heartbeatInterval: -1 })).toThrow(/heartbeat_interval/);
  });

  describe('for the CLI', () => {
    it('needs no file: environment and defaults suffice', () => {
      expect(cliConnectSettings({ env: { E2EPOOL_AGENT_CONFIG: missing() } })).toEqual({
        socketPath: '/var/run/e2epool-agent.sock',
        requestTimeout: 30,
        configNote: undefined,
      });
      expect(
        cliConnectSettings({
          env: { E2EPOOL_AGENT_CONFIG: missing(), E2EPOOL_SOCKET_PATH: '/tmp/env.sock' },
        }).socketPath,
      ).toBe('/tmp/env.sock');
    });

    it('reads socket_path from the file; --socket wins over everything', () => {
      const path = file('socket_path: /run/file.sock\nrequest_timeout: 7\ntoken: x\n');
      expect(cliConnectSettings({ env: { E2EPOOL_AGENT_CONFIG: path } })).toMatchObject({
        socketPath: '/run/file.sock',
        requestTimeout: 7,
      });
      expect(
        cliConnectSettings({
          socket: '/run/flag.sock',
          env: { E2EPOOL_AGENT_CONFIG: path, E2EPOOL_SOCKET_PATH: '/run/env.sock' },
        }).socketPath,
      ).toBe('/run/flag.sock');
    });

    it('survives an invalid or unreadable file and says why it was not used', () => {
      const bad = file('socket_path: [unclosed\n');
      const s = cliConnectSettings({ env: { E2EPOOL_AGENT_CONFIG: bad } });
      expect(s.socketPath).toBe('/var/run/e2epool-agent.sock');
      expect(s.configNote).toMatch(/cannot parse agent config/);

      const dir = join(tmp.dir, 'dir.yml');
      mkdirSync(dir);
      expect(cliConnectSettings({ env: { E2EPOOL_AGENT_CONFIG: dir } }).configNote).toMatch(
        /could not read .*dir.yml/,
      );

      if (process.getuid?.() !== 0) {
        // Root reads anything; the real-process test in cli.test.ts covers root.
        const locked = file('socket_path: /run/locked.sock\n', 'locked.yml');
        chmodSync(locked, 0o000);
        expect(cliConnectSettings({ env: { E2EPOOL_AGENT_CONFIG: locked } }).configNote).toMatch(
          /permission denied/,
        );
      }
    });
  });

  describe('the flat YAML reader used by the CLI', () => {
    it('agrees with the yaml package wherever it gives an answer', () => {
      const rand = prng(7);
      const values = [
        '/run/a.sock',
        '"/run/q.sock"',
        "'it''s'",
        '42',
        '0123',
        '1.5',
        '.5',
        '-3',
        '1e3',
        'true',
        'False',
        'null',
        '~',
        '',
        'a # comment',
        'a#b',
        '"x" # c',
        'ws://h:1/p?q=1',
        'x: y',
        '[1, 2]',
        '{a: 1}',
        '0x1F',
        '.inf',
        '"esc\\n"',
        '&anchor v',
        '*ref',
        '|',
        '- item',
        'héllo wörld',
      ];
      let answered = 0;
      for (let i = 0; i < 500; i++) {
        const lines = Array.from({ length: 1 + Math.floor(rand() * 4) }, (_, j) => {
          const v = values[Math.floor(rand() * values.length)]!;
          return `key_${j}: ${v}`;
        });
        if (rand() < 0.2) lines.splice(1, 0, '# a comment', '');
        if (rand() < 0.1) lines.push('  nested: 1');
        const text = lines.join('\n') + '\n';
        const flat = readFlatYaml(text);
        if (flat === undefined) continue;
        answered++;
        expect([text, flat]).toEqual([text, parseYaml(text) ?? {}]);
      }
      expect(answered).toBeGreaterThan(100);
    });
  });
});
