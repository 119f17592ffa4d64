import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { writeBuildInfo, type BuildInfo } from '../../common/build-info';

/**
 * `npm run package`: the agent for runner hosts, without a clone, `npm ci`
 * or a build there. Writes into artifacts/ (or --out DIR):
 *   e2epool-agent-<version>.js            one file, needs only Node (20.19+)
 *   e2epool-agent-<version>-linux-x64     the same as a Node single-executable application
 *   e2epool-agent_<version>_amd64.deb     that executable, the systemd unit, the tmpfiles
 *                                         entry, /etc/e2epool/agent.yml and a postinst
 *   SHA256SUMS                            `sha256sum -c SHA256SUMS` checks the three
 * Runs from the compiled tree (dist/agent/packaging/build-package.js); the
 * bundle is built from the TypeScript sources by esbuild.
 */

/** The repository: this file runs compiled (dist/agent/packaging/) and is read by ts-jest (agent/packaging/). */
const REPO = resolve(
  __dirname,
  ...(basename(resolve(__dirname, '..', '..')) === 'dist' ? ['..', '..', '..'] : ['..', '..']),
);
const PACKAGING = join(REPO, 'agent', 'packaging');
const ENTRY = join(REPO, 'cli', 'agent-package.ts');
/** Node's single-executable fuse: postject flips it so the binary runs the injected blob. */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** Where the .deb puts the executable; /usr/bin/e2epool links to it for CI jobs. */
const DEB_BIN = '/usr/bin/e2epool-agent';

/**
 * Modules of cli/main.ts that only the controller's commands load. The
 * agent program drops those commands, so their modules (and Temporal,
 * TypeORM, express with them) stay out of the bundle.
 */
const CONTROLLER_ONLY = /^\.\/(controller|doctor|bootstrap|registry)$/;
/** Packages that must never end up in the bundle: finding one means CONTROLLER_ONLY missed a path. */
const FORBIDDEN_INPUT = /node_modules\/(@temporalio|typeorm|pg|express|axios|prom-client)\//;

/** What a package build produced (paths in the output directory). */
export interface PackageOutputs {
  version: string;
  commit: string;
  bundle: string;
  executable: string;
  deb: string;
  sums: string;
}

/** The file names for `version` (all three carry package.json's version). */
export function artifactNames(version: string) {
  return {
    bundle: `e2epool-agent-${version}.js`,
    executable: `e2epool-agent-${version}-linux-x64`,
    deb: `e2epool-agent_${version}_amd64.deb`,
  };
}

function run(cmd: string, args: string[], cwd = REPO): void {
  execFileSync(cmd, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] });
}

/** esbuild: cli/agent-package.ts and everything it loads, in one CommonJS file. */
async function buildBundle(outfile: string, info: BuildInfo): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports, @typescript-eslint/consistent-type-imports
  const esbuild = require('esbuild') as typeof import('esbuild');
  const result = await esbuild.build({
    entryPoints: [ENTRY],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    banner: { js: '#!/usr/bin/env node' },
    define: {
      E2EPOOL_PACKAGE_BUILD_INFO: JSON.stringify(info),
      // Hazard: in one bundle `module` is the bundle's, so every `if (require.main ===
      // module)` block of our scripts (build-info.ts writes a file there, main.ts runs
      // the full CLI) would run. Nothing else the agent loads reads require.main
      // (thread-stream does, for pino transports, which the agent does not use).
      'require.main': 'undefined',
    },
    metafile: true,
    logLevel: 'warning',
    plugins: [
      {
        name: 'stubs',
        setup(build) {
          build.onResolve({ filter: CONTROLLER_ONLY }, (args) =>
            args.importer === join(REPO, 'cli', 'main.ts')
              ? { path: args.path, namespace: 'controller-only' }
              : undefined,
          );
          // ws tries these optional native add-ons in try/catch. Not external: the
          // executable's require() would warn on stderr that it loads builtins only.
          build.onResolve({ filter: /^(bufferutil|utf-8-validate)$/ }, (args) => ({
            path: args.path,
            namespace: 'absent',
          }));
          build.onLoad({ filter: /.*/, namespace: 'absent' }, () => ({
            contents: 'throw new Error("not in the agent package");',
            loader: 'js',
          }));
          build.onLoad({ filter: /.*/, namespace: 'controller-only' }, () => ({
            contents:
              'throw new Error("this is the agent package: the controller commands are not in it");',
            loader: 'js',
          }));
        },
      },
    ],
  });
  const leaked = Object.keys(result.metafile.inputs).filter((p) => FORBIDDEN_INPUT.test(p));
  if (leaked.length > 0) {
    throw new Error(
      `the agent bundle pulled in controller packages: ${leaked.slice(0, 5).join(', ')}`,
    );
  }
  chmodSync(outfile, 0o755);
}

/** Node's single-executable application: this node binary with the bundle injected. */
async function buildExecutable(bundle: string, out: string, work: string): Promise<void> {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(
      `the executable is built for linux-x64 from this node; this is ${process.platform}-${process.arch}`,
    );
  }
  const blob = join(work, 'sea-prep.blob');
  const config = join(work, 'sea-config.json');
  // The code cache (V8's, for this very node, which the executable is) saves CI jobs
  // about a tenth of each command's start-up CPU.
  writeFileSync(
    config,
    JSON.stringify({
      main: bundle,
      output: blob,
      disableExperimentalSEAWarning: true,
      useCodeCache: true,
    }),
  );
  run(process.execPath, ['--experimental-sea-config', config], work);
  copyFileSync(process.execPath, out);
  chmodSync(out, 0o755);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const postject = require('postject') as {
    inject(file: string, name: string, data: Buffer, o: { sentinelFuse: string }): Promise<void>;
  };
  await postject.inject(out, 'NODE_SEA_BLOB', readFileSync(blob), { sentinelFuse: SEA_FUSE });
}

/** The unit with ExecStart pointing at the package's executable. */
export function debUnit(unit: string): string {
  const from = /^ExecStart=\/usr\/local\/bin\/e2epool agent$/m;
  if (!from.test(unit)) throw new Error('e2epool-agent.service: ExecStart line not found');
  return unit
    .replace(from, `ExecStart=${DEB_BIN} agent`)
    .replace(
      /^# Installed by agent\/packaging\/install-agent\.sh[^]*?# docs\/operators\.md, "Runner hosts: the agent"\.$/m,
      '# Installed by the e2epool-agent .deb (local changes: `systemctl edit e2epool-agent`).\n' +
        '# See docs/operators.md, "Runner hosts: the agent".',
    );
}

function put(root: string, path: string, content: string | Buffer, mode: number): void {
  const dest = join(root, path);
  mkdirSync(dirname(dest), { recursive: true });
  writeFileSync(dest, content);
  chmodSync(dest, mode);
}

/** The .deb's tree under `root` (DEBIAN/ included), then `dpkg-deb --build`. */
function buildDeb(executable: string, version: string, out: string, work: string): void {
  const root = join(work, 'deb');
  const deb = join(PACKAGING, 'deb');
  mkdirSync(join(root, 'usr', 'bin'), { recursive: true });
  copyFileSync(executable, join(root, DEB_BIN));
  chmodSync(join(root, DEB_BIN), 0o755);
  symlinkSync(basename(DEB_BIN), join(root, 'usr', 'bin', 'e2epool'));
  const unit = readFileSync(join(PACKAGING, 'e2epool-agent.service'), 'utf8');
  put(root, 'usr/lib/systemd/system/e2epool-agent.service', debUnit(unit), 0o644);
  const tmpfiles = readFileSync(join(PACKAGING, 'e2epool-agent.tmpfiles'), 'utf8');
  const by = '# Installed as /etc/tmpfiles.d/e2epool-agent.conf by install-agent.sh.';
  if (!tmpfiles.startsWith(by)) throw new Error('e2epool-agent.tmpfiles: header line not found');
  put(
    root,
    'usr/lib/tmpfiles.d/e2epool-agent.conf',
    tmpfiles.replace(by, '# Installed by the e2epool-agent .deb.'),
    0o644,
  );
  // The postinst runs install-agent.sh's host checks (--host-only): one copy of that logic.
  put(
    root,
    'usr/lib/e2epool/install-agent.sh',
    readFileSync(join(PACKAGING, 'install-agent.sh')),
    0o755,
  );
  // Group root until the postinst gives it to group e2epool-agent: never readable by CI jobs.
  put(root, 'etc/e2epool/agent.yml', readFileSync(join(deb, 'agent.yml')), 0o640);
  const doc = 'usr/share/doc/e2epool-agent';
  put(root, `${doc}/agent.example.yml`, readFileSync(join(PACKAGING, 'agent.example.yml')), 0o644);
  for (const script of ['postinst', 'prerm', 'postrm']) {
    put(root, `DEBIAN/${script}`, readFileSync(join(deb, script)), 0o755);
  }
  put(root, 'DEBIAN/conffiles', '/etc/e2epool/agent.yml\n', 0o644);
  const installedKb = execFileSync('du', ['-sk', '--exclude=DEBIAN', root], {
    encoding: 'utf8',
  }).split('\t')[0];
  const control = readFileSync(join(deb, 'control'), 'utf8')
    .replace('@VERSION@', version)
    .replace('@INSTALLED_SIZE@', String(installedKb));
  put(root, 'DEBIAN/control', control, 0o644);
  // gzip -1: every dpkg reads it; the default level and xz take ten times longer on the node binary.
  run('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', root, out]);
}

/** `sha256sum` format: "<hex>  <name>" per file. */
function writeSums(dir: string, names: string[]): string {
  const lines = names.map(
    (n) =>
      `${createHash('sha256')
        .update(readFileSync(join(dir, n)))
        .digest('hex')}  ${n}\n`,
  );
  const path = join(dir, 'SHA256SUMS');
  writeFileSync(path, lines.join(''));
  return path;
}

/** Builds the three artifacts and SHA256SUMS into `outDir` (replacing earlier ones). */
export async function buildPackage(
  outDir: string,
  log: (line: string) => void = () => {},
): Promise<PackageOutputs> {
  const work = mkdtempSync(join(tmpdir(), 'e2epool-package-'));
  try {
    const info = writeBuildInfo(REPO, work);
    const names = artifactNames(info.version);
    rmSync(outDir, { recursive: true, force: true });
    mkdirSync(outDir, { recursive: true });
    const paths = {
      bundle: join(outDir, names.bundle),
      executable: join(outDir, names.executable),
      deb: join(outDir, names.deb),
    };
    const step = async (what: string, f: () => unknown) => {
      const t0 = Date.now();
      await f();
      log(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    };
    await step(`bundle ${names.bundle}`, () => buildBundle(paths.bundle, info));
    await step(`executable ${names.executable}`, () =>
      buildExecutable(paths.bundle, paths.executable, work),
    );
    await step(`package ${names.deb}`, () =>
      buildDeb(paths.executable, info.version, paths.deb, work),
    );
    const sums = writeSums(outDir, [names.bundle, names.executable, names.deb]);
    return { version: info.version, commit: info.commit, ...paths, sums };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (require.main === module) {
  const i = process.argv.indexOf('--out');
  const outDir = resolve(
    i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : join(REPO, 'artifacts'),
  );
  const t0 = Date.now();
  buildPackage(outDir, (l) => process.stdout.write(`package: ${l}\n`))
    .then((o) => {
      process.stdout.write(
        `package: e2epool-agent ${o.version} (${o.commit.slice(0, 7)}) in ${relative(process.cwd(), outDir) || '.'}/ ` +
          `in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`,
      );
    })
    .catch((err: unknown) => {
      process.stderr.write(`package: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    });
}
