import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CONTROLLER_SETTING_NAMES, loadSettings } from '../../config/settings';
import { loadTemporalSettings } from '../../config/temporal';
import { itWithSystemdAnalyze, parseUnit } from '../helpers/systemd';
import { CLI_EXIT } from '../../common/failures';

/**
 * The controller's systemd units and their environment file example
 * (ops/systemd/): they must name real commands and real settings, and the
 * example must be a valid configuration once its placeholders are filled.
 */
const OPS = resolve(__dirname, '../../ops/systemd');
const UNITS = { api: 'e2epool-api.service', worker: 'e2epool-worker.service' } as const;

/** KEY=value lines of an EnvironmentFile (comments and blank lines skipped). */
function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const kv = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (!kv) throw new Error(`line ${i + 1}: not KEY=value: ${raw}`);
    env[kv[1]!] = kv[2]!;
  }
  return env;
}

const example = envFile(readFileSync(join(OPS, 'controller.env.example'), 'utf8'));

describe.each(Object.entries(UNITS))('the %s unit', (command, file) => {
  const text = readFileSync(join(OPS, file), 'utf8');
  const unit = parseUnit(text);
  const service = new Map(unit.get('Service'));

  it(`runs \`e2epool ${command}\` as the unprivileged e2epool user with the shared environment file`, () => {
    expect([...unit.keys()]).toEqual(['Unit', 'Service', 'Install']);
    expect(service.get('ExecStart')).toBe(`/usr/local/bin/e2epool ${command}`);
    expect(service.get('User')).toBe('e2epool');
    expect(service.get('EnvironmentFile')).toBe('/etc/e2epool/controller.env');
    expect(service.get('Restart')).toBe('always');
    expect(service.get('KillSignal')).toBe('SIGTERM');
    expect(new Map(unit.get('Install')).get('WantedBy')).toBe('multi-user.target');
  });

  itWithSystemdAnalyze(
    'is accepted by systemd-analyze verify (with the e2epool command in place)',
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'e2epool-units-'));
      const bin = join(dir, 'e2epool');
      writeFileSync(bin, '#!/bin/sh\n');
      chmodSync(bin, 0o755);
      const copy = join(dir, file);
      writeFileSync(copy, text.replace('ExecStart=/usr/local/bin/e2epool', `ExecStart=${bin}`));
      const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
      if (r.error) throw r.error;
      // Only complaints about this unit count (the host's own units may have some).
      const ours = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes(file));
      expect(ours).toEqual([]);
    },
  );

  it('names only a command the e2epool CLI has', () => {
    const r = spawnSync(process.execPath, [resolve(__dirname, '../../bin/e2epool.js'), 'help'], {
      encoding: 'utf8',
    });
    expect(`${r.stdout}${r.stderr}`).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));
  });
});

describe.each(Object.values(UNITS))('%s', (file) => {
  it('does not restart into a refusal that needs an operator (a bad setting, search attributes: exit 78)', () => {
    const service = new Map(parseUnit(readFileSync(join(OPS, file), 'utf8')).get('Service'));
    expect(service.get('RestartPreventExitStatus')).toBe(String(CLI_EXIT.config));
  });

  it('says how the release package installs it (no build on the host)', () => {
    const text = readFileSync(join(OPS, file), 'utf8');
    expect(text).not.toMatch(/npm ci --omit=dev && npm run build/);
    expect(readFileSync(join(OPS, UNITS.api), 'utf8')).toContain(
      'npm install -g --prefix /usr/local ./e2epool-<version>.tgz',
    );
  });
});

describe('controller.env.example', () => {
  it('sets only settings that exist', () => {
    const unknown = Object.keys(example).filter(
      (k) => k.startsWith('E2EPOOL_') && !CONTROLLER_SETTING_NAMES.includes(k),
    );
    expect(unknown).toEqual([]);
  });

  it('comments out only settings that exist, and the values it shows are valid', () => {
    const text = readFileSync(join(OPS, 'controller.env.example'), 'utf8');
    const shown = Object.fromEntries(
      [...text.matchAll(/^# ?(E2EPOOL_[A-Z0-9_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]),
    );
    expect(Object.keys(shown).filter((k) => !CONTROLLER_SETTING_NAMES.includes(k))).toEqual([]);
    expect(Object.keys(shown)).toEqual(
      expect.arrayContaining(['E2EPOOL_METRICS_TOKEN', 'E2EPOOL_AUTH_FAILURE_BURST']),
    );
    expect(() =>
      loadSettings({ ...example, ...shown, E2EPOOL_ADMIN_TOKEN: 'f'.repeat(64) }),
    ).not.toThrow();
  });

  it('refuses to start with its admin token placeholder, naming the variable', () => {
    expect(example.E2EPOOL_ADMIN_TOKEN).toBe('CHANGE-ME');
    expect(() => loadSettings(example)).toThrow(
      /^invalid setting E2EPOOL_ADMIN_TOKEN: is the example placeholder/,
    );
  });

  it('is a valid configuration of both processes once its files exist and its admin token is set', () => {
    const settings = loadSettings({ ...example, E2EPOOL_ADMIN_TOKEN: 'f'.repeat(64) });
    expect(settings).toMatchObject({
      inventoryPath: '/etc/e2epool/inventory.yml',
      taskQueue: 'e2epool',
      gitlabUrl: 'https://gitlab.example.com',
    });
    // envconfig reads the TLS files themselves: stand-ins here.
    const dir = mkdtempSync(join(tmpdir(), 'e2epool-env-'));
    const env = { ...example };
    for (const k of Object.keys(env).filter((k) => k.endsWith('_PATH'))) {
      const path = join(dir, k);
      writeFileSync(path, `contents of ${k}\n`);
      env[k] = path;
    }
    const temporal = loadTemporalSettings(env);
    expect(temporal).toMatchObject({ address: 'temporal.example.com:7233', namespace: 'e2epool' });
    expect(temporal.connectionOptions.tls).toBeTruthy();
  });
});
