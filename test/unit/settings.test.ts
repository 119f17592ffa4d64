import {
  CONTROLLER_SETTING_NAMES,
  ConfigError,
  loadSettings,
  obsoleteSettingsIn,
} from '../../config/settings';
import { loadTemporalSettings } from '../../config/temporal';

describe('loadSettings', () => {
  it('uses the defaults of the Python implementation when nothing is set', () => {
    const s = loadSettings({});
    expect(s).toMatchObject({
      databaseUrl: 'postgresql://e2epool:e2epool@localhost:5432/e2epool',
      inventoryPath: 'inventory.yml',
      checkpointTtlSeconds: 1800,
      pollerIntervalSeconds: 20,
      pollerMinAgeSeconds: 120,
      finalizeCooldownSeconds: 5,
      readinessTimeoutSeconds: 120,
      readinessPollIntervalSeconds: 5,
      dbPoolSize: 10,
      httpTimeoutSeconds: 30,
      wsHeartbeatIntervalSeconds: 30,
      wsHeartbeatTimeoutSeconds: 90,
      port: 8080,
      workerMetricsPort: 9464,
      workerMaxCachedWorkflows: 250,
      taskQueue: 'e2epool',
      gitlabUrl: undefined,
      githubUrl: 'https://api.github.com',
      githubToken: undefined,
      gitlabMaxRps: 10,
      gitlabPollShare: 0.35,
      logStreamsPerRunner: 8,
      logStreamsMax: 500,
      logStreamStallSeconds: 60,
    });
  });

  it('takes a fractional GitLab rate budget and poll share', () => {
    const s = loadSettings({ E2EPOOL_GITLAB_MAX_RPS: '2.5', E2EPOOL_GITLAB_POLL_SHARE: '0.25' });
    expect(s).toMatchObject({ gitlabMaxRps: 2.5, gitlabPollShare: 0.25 });
  });

  it('takes a GitHub Enterprise Server API URL and a token', () => {
    const s = loadSettings({
      E2EPOOL_GITHUB_URL: 'https://ghe.example.com/api/v3/',
      E2EPOOL_GITHUB_TOKEN: 'ghp_secret',
    });
    expect(s).toMatchObject({
      githubUrl: 'https://ghe.example.com/api/v3',
      githubToken: 'ghp_secret',
    });
    expect(() => loadSettings({ E2EPOOL_GITHUB_URL: 'api.github.com' })).toThrow(
      /^invalid setting E2EPOOL_GITHUB_URL: expected an http\(s\) URL/,
    );
    expect(loadSettings({ E2EPOOL_GITHUB_TOKEN: '' }).githubToken).toBeUndefined();
  });

  it('parses numbers, fractional seconds and URLs', () => {
    const s = loadSettings({
      E2EPOOL_PORT: '9090',
      E2EPOOL_WORKER_METRICS_PORT: '0',
      E2EPOOL_CHECKPOINT_TTL_SECONDS: '0.5',
      E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
      E2EPOOL_GITLAB_URL: 'https://gitlab.example.com/',
      E2EPOOL_POLLER_ENABLED: 'false',
    });
    expect(s.port).toBe(9090);
    expect(s.workerMetricsPort).toBe(0);
    expect(s.checkpointTtlSeconds).toBe(0.5);
    expect(s.finalizeCooldownSeconds).toBe(0);
    expect(s.gitlabUrl).toBe('https://gitlab.example.com');
    expect(s.pollerEnabled).toBe(false);
  });

  it('reads the HTTP timeout from E2EPOOL_HTTP_TIMEOUT, or its older name E2EPOOL_HTTPX_TIMEOUT', () => {
    expect(loadSettings({ E2EPOOL_HTTP_TIMEOUT: '12' }).httpTimeoutSeconds).toBe(12);
    expect(loadSettings({ E2EPOOL_HTTPX_TIMEOUT: '7.5' }).httpTimeoutSeconds).toBe(7.5);
    // Both set: the new name wins, and an old value it overrides is not even checked.
    expect(
      loadSettings({ E2EPOOL_HTTP_TIMEOUT: '12', E2EPOOL_HTTPX_TIMEOUT: '7' }).httpTimeoutSeconds,
    ).toBe(12);
    expect(
      loadSettings({ E2EPOOL_HTTP_TIMEOUT: '12', E2EPOOL_HTTPX_TIMEOUT: 'soon' })
        .httpTimeoutSeconds,
    ).toBe(12);
    // An empty new name is unset: the old one is read.
    expect(
      loadSettings({ E2EPOOL_HTTP_TIMEOUT: '', E2EPOOL_HTTPX_TIMEOUT: '7' }).httpTimeoutSeconds,
    ).toBe(7);
    // A bad value is reported under the name it was read from.
    expect(() => loadSettings({ E2EPOOL_HTTPX_TIMEOUT: '0' })).toThrow(
      /^invalid setting E2EPOOL_HTTPX_TIMEOUT: must be a positive number of seconds \(got "0"\)$/,
    );
    expect(() => loadSettings({ E2EPOOL_HTTP_TIMEOUT: '-1' })).toThrow(
      /^invalid setting E2EPOOL_HTTP_TIMEOUT: must be a positive number of seconds/,
    );
    expect(CONTROLLER_SETTING_NAMES).toEqual(
      expect.arrayContaining(['E2EPOOL_HTTP_TIMEOUT', 'E2EPOOL_HTTPX_TIMEOUT']),
    );
  });

  it('treats an empty variable as unset', () => {
    expect(loadSettings({ E2EPOOL_PORT: '' }).port).toBe(8080);
  });

  it.each([
    ['E2EPOOL_PORT', 'abc', /E2EPOOL_PORT: expected an integer.*"abc"/],
    ['E2EPOOL_PORT', '70000', /E2EPOOL_PORT: expected an integer between 0 and 65535/],
    [
      'E2EPOOL_WORKER_METRICS_PORT',
      '-1',
      /E2EPOOL_WORKER_METRICS_PORT: expected an integer between 0 and 65535/,
    ],
    [
      'E2EPOOL_CHECKPOINT_TTL_SECONDS',
      '0',
      /E2EPOOL_CHECKPOINT_TTL_SECONDS: must be a positive number/,
    ],
    ['E2EPOOL_FINALIZE_COOLDOWN_SECONDS', '-1', /E2EPOOL_FINALIZE_COOLDOWN_SECONDS: must be >= 0/],
    ['E2EPOOL_DB_POOL_SIZE', '2.5', /E2EPOOL_DB_POOL_SIZE: expected an integer/],
    ['E2EPOOL_GITLAB_URL', 'gitlab.example.com', /E2EPOOL_GITLAB_URL: expected an http\(s\) URL/],
    ['E2EPOOL_TASK_QUEUE', 'bad queue', /E2EPOOL_TASK_QUEUE/],
    ['E2EPOOL_GITLAB_MAX_RPS', '0', /E2EPOOL_GITLAB_MAX_RPS: must be a positive number/],
    ['E2EPOOL_GITLAB_MAX_RPS', '-3', /E2EPOOL_GITLAB_MAX_RPS: must be a positive number/],
    ['E2EPOOL_GITLAB_MAX_RPS', 'ten', /E2EPOOL_GITLAB_MAX_RPS: expected a number/],
    ['E2EPOOL_GITLAB_MAX_RPS', 'Infinity', /E2EPOOL_GITLAB_MAX_RPS: expected a number/],
    ['E2EPOOL_GITLAB_POLL_SHARE', '1', /E2EPOOL_GITLAB_POLL_SHARE: must be a number between 0/],
    ['E2EPOOL_GITLAB_POLL_SHARE', '0', /E2EPOOL_GITLAB_POLL_SHARE: must be a number between 0/],
    [
      'E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS',
      '1',
      /E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS: expected an integer between 2 and 100000/,
    ],
    [
      'E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS',
      '250.5',
      /E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS: expected an integer between 2 and 100000/,
    ],
    ['E2EPOOL_POLLER_ENABLED', 'maybe', /E2EPOOL_POLLER_ENABLED: expected true or false/],
    ['E2EPOOL_LOG_LEVEL', 'loud', /E2EPOOL_LOG_LEVEL/],
    [
      'E2EPOOL_LOG_STREAMS_PER_RUNNER',
      '0',
      /E2EPOOL_LOG_STREAMS_PER_RUNNER: expected an integer between 1 and 10000/,
    ],
    ['E2EPOOL_LOG_STREAMS_MAX', 'many', /E2EPOOL_LOG_STREAMS_MAX: expected an integer/],
    [
      'E2EPOOL_LOG_STREAM_STALL_SECONDS',
      '0',
      /E2EPOOL_LOG_STREAM_STALL_SECONDS: must be a positive number/,
    ],
  ])('rejects %s=%s with one line naming the variable', (key, value, pattern) => {
    let err: unknown;
    try {
      loadSettings({ [key]: value });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toMatch(pattern);
    expect(msg).not.toContain('\n');
  });

  it('never echoes a secret value in its error', () => {
    expect(() => loadSettings({ E2EPOOL_DATABASE_URL: 'mysql://root:hunter2@db/x' })).toThrow(
      /^invalid setting E2EPOOL_DATABASE_URL: expected a postgres/,
    );
    try {
      loadSettings({ E2EPOOL_DATABASE_URL: 'mysql://root:hunter2@db/x' });
    } catch (e) {
      expect((e as Error).message).not.toContain('hunter2');
    }
  });

  it('reads E2EPOOL_ADMIN_TOKEN (unset when empty) and never echoes a bad one', () => {
    expect(loadSettings({}).adminToken).toBeUndefined();
    expect(loadSettings({ E2EPOOL_ADMIN_TOKEN: '' }).adminToken).toBeUndefined();
    const token = 'a1b2c3'.repeat(6);
    expect(loadSettings({ E2EPOOL_ADMIN_TOKEN: token }).adminToken).toBe(token);
    expect(() => loadSettings({ E2EPOOL_ADMIN_TOKEN: 'two words' })).toThrow(
      /^invalid setting E2EPOOL_ADMIN_TOKEN: must not contain white space$/,
    );
  });

  it('refuses an admin token shorter than 32 characters, and the example placeholder, naming the variable', () => {
    expect(() => loadSettings({ E2EPOOL_ADMIN_TOKEN: 'x'.repeat(31) })).toThrow(
      /^invalid setting E2EPOOL_ADMIN_TOKEN: must be at least 32 characters/,
    );
    expect(loadSettings({ E2EPOOL_ADMIN_TOKEN: 'x'.repeat(32) }).adminToken).toBe('x'.repeat(32));
    for (const placeholder of ['CHANGE-ME', `CHANGE-ME-${'0'.repeat(40)}`, 'changeme'.repeat(5)])
      expect(() => loadSettings({ E2EPOOL_ADMIN_TOKEN: placeholder })).toThrow(
        /^invalid setting E2EPOOL_ADMIN_TOKEN: is the example placeholder/,
      );
  });

  it('requires a GitLab URL when a GitLab token is set', () => {
    expect(() => loadSettings({ E2EPOOL_GITLAB_TOKEN: 'glpat-x' })).toThrow(
      /E2EPOOL_GITLAB_URL: required/,
    );
  });

  it('lists obsolete Celery/Redis settings with their replacement', () => {
    const found = obsoleteSettingsIn({ E2EPOOL_REDIS_URL: 'redis://x', E2EPOOL_PORT: '1' });
    expect(found).toEqual([['E2EPOOL_REDIS_URL', expect.stringContaining('TEMPORAL_ADDRESS')]]);
  });
});

describe('loadTemporalSettings', () => {
  it('follows the Temporal environment conventions', () => {
    const t = loadTemporalSettings({
      TEMPORAL_ADDRESS: 'temporal.internal:7233',
      TEMPORAL_NAMESPACE: 'ci',
      TEMPORAL_CONFIG_FILE: '/nonexistent.toml',
    });
    expect(t.address).toBe('temporal.internal:7233');
    expect(t.namespace).toBe('ci');
  });

  it('defaults to localhost:7233 and the default namespace', () => {
    const t = loadTemporalSettings({ TEMPORAL_CONFIG_FILE: '/nonexistent.toml' });
    expect(t).toMatchObject({ address: 'localhost:7233', namespace: 'default' });
  });

  it('rejects a malformed address naming TEMPORAL_ADDRESS', () => {
    expect(() =>
      loadTemporalSettings({
        TEMPORAL_ADDRESS: 'http://x:7233/y',
        TEMPORAL_CONFIG_FILE: '/nonexistent.toml',
      }),
    ).toThrow(/TEMPORAL_ADDRESS/);
  });
});
