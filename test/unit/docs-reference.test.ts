import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { agentSettingDefaults } from '../../agent/config';
import { CONTROLLER_SETTING_NAMES } from '../../config/settings';
import { OTHER_SETTING_DOCS } from '../../config/settings-docs';
import {
  commandsOf,
  metricsOf,
  REFERENCE_PATH,
  SOURCE_FOLDERS,
  STALE_MESSAGE,
} from '../../dev/docs-reference';

/**
 * docs/reference.md against the code: its generated tables (commands,
 * settings, metrics) are what `npm run docs:reference` writes today, and it
 * names every setting, metric and command there is.
 */
const root = join(__dirname, '../..');
const reference = readFileSync(REFERENCE_PATH, 'utf8');

/** The names in `names` that docs/reference.md never mentions in code quotes. */
const unnamed = (names: Iterable<string>) =>
  [...names].filter((n) => !reference.includes(`\`${n}`) && !reference.includes(`${n}\``));

/**
 * Names that look like settings but are not: the variables the cluster starter
 * hands to Temporal Server's config template, an error code, and the constant
 * the agent package's build defines.
 */
const NOT_SETTINGS = [
  /^E2EPOOL_TS_/,
  /^E2EPOOL_FINGERPRINT_MISMATCH$/,
  /^E2EPOOL_PACKAGE_BUILD_INFO$/,
];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return /\.(ts|js)$/.test(name) ? [path] : [];
  });
}

describe('docs/reference.md', () => {
  it('its generated tables are what npm run docs:reference writes from the code', () => {
    const script = join(root, 'dist/dev/docs-reference.js');
    if (!existsSync(script)) throw new Error(`${script} is missing: run npm run build first`);
    // A child process: prettier formats through a dynamic import jest's module system lacks.
    const r = spawnSync(process.execPath, [script, '--check'], { cwd: root, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr.trim() || STALE_MESSAGE);
  });

  it('names every setting of the controller, the agent and the CLI', () => {
    expect(unnamed(CONTROLLER_SETTING_NAMES)).toEqual([]);
    expect(unnamed(Object.keys(agentSettingDefaults()))).toEqual([]);
    expect(unnamed(Object.keys(OTHER_SETTING_DOCS))).toEqual([]);
  });

  it('names every E2EPOOL_* and TEMPORAL_* variable the code reads', () => {
    const names = new Set<string>();
    for (const folder of SOURCE_FOLDERS) {
      for (const file of sourceFiles(join(root, folder))) {
        for (const m of readFileSync(file, 'utf8').matchAll(
          /\b(?:E2EPOOL|TEMPORAL)_[A-Z0-9_]*[A-Z0-9]\b/g,
        )) {
          if (!NOT_SETTINGS.some((re) => re.test(m[0]))) names.add(m[0]);
        }
      }
    }
    expect(names.size).toBeGreaterThan(60);
    expect(unnamed(names)).toEqual([]);
  });

  it('names every metric the API and the worker serve', () => {
    const metrics = metricsOf();
    expect(metrics.map((m) => m.name)).toEqual(
      expect.arrayContaining(['e2epool_checkpoints_active', 'e2epool_step_duration_seconds']),
    );
    expect(unnamed(metrics.map((m) => m.name))).toEqual([]);
  });

  it('names every command of the e2epool program', () => {
    const paths = commandsOf().map((c) => c.path);
    expect(paths).toEqual(expect.arrayContaining(['api', 'create', 'runners quarantine']));
    expect(unnamed(paths.map((p) => `e2epool ${p}`))).toEqual([]);
  });
});
