import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Which e2epool this process is: the package version and the git commit it was
 * built from. Node builtins only: the agent CLI reads it in every CI job.
 */
export interface BuildInfo {
  version: string;
  /** Full git commit hash, or "unknown" (built outside a git checkout, or not built: ts-jest). */
  commit: string;
}

/** The file `npm run build` writes next to the compiled tree (dist/build-info.json). */
export const BUILD_INFO_FILE = 'build-info.json';

const UNKNOWN = 'unknown';

function readJson(path: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

const str = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 ? v : null);

/**
 * Reads `<root>/build-info.json`; without it (not built, e.g. under ts-jest)
 * the version comes from package.json in `root` or its parent and the commit is "unknown".
 */
export function readBuildInfo(root: string): BuildInfo {
  const built = readJson(join(root, BUILD_INFO_FILE));
  const version = str(built?.version);
  if (version) return { version, commit: str(built?.commit) ?? UNKNOWN };
  for (const dir of [root, join(root, '..')]) {
    const pkg = readJson(join(dir, 'package.json'));
    const v = pkg?.name === 'e2epool' ? str(pkg.version) : null;
    if (v) return { version: v, commit: UNKNOWN };
  }
  return { version: UNKNOWN, commit: UNKNOWN };
}

let cached: BuildInfo | undefined;

/** This process's version and commit, read once (dist/build-info.json, else package.json). */
export function buildInfo(): BuildInfo {
  // Compiled, this file is dist/common/build-info.js; under ts-jest, common/build-info.ts.
  cached ??= readBuildInfo(join(__dirname, '..'));
  return cached;
}

/**
 * Sets this process's version and commit. The single-file agent bundle and
 * executable (cli/agent-package.ts) have no build-info.json beside them: the
 * package build bakes the values in.
 */
export function setBuildInfo(info: BuildInfo): void {
  cached = info;
}

/** The commit's short form (7 characters), or "unknown". */
export function shortCommit(commit: string): string {
  return /^[0-9a-f]{7,}$/i.test(commit) ? commit.slice(0, 7) : UNKNOWN;
}

/** What `e2epool --version` prints: `e2epool <version> (<short commit>)`. */
export function versionText(info: BuildInfo = buildInfo()): string {
  return `e2epool ${info.version} (${shortCommit(info.commit)})`;
}

/** The major version (the number before the first dot), or null when `version` is not x.y…. */
export function majorVersion(version: string): number | null {
  const m = /^v?(\d+)\.\d+/.exec(version.trim());
  return m ? Number(m[1]) : null;
}

/** True when both versions parse and their majors differ (an unparsable one is not called a mismatch). */
export function majorDiffers(a: string, b: string): boolean {
  const ma = majorVersion(a);
  const mb = majorVersion(b);
  return ma !== null && mb !== null && ma !== mb;
}

/**
 * A version as received from the other end (a header): kept only when short
 * and made of version characters, so a peer cannot put arbitrary text in our logs.
 */
export function peerVersion(raw: unknown): string | null {
  const v = Array.isArray(raw) ? raw[0] : raw;
  return typeof v === 'string' && /^[0-9A-Za-z.+_-]{1,64}$/.test(v) ? v : null;
}

/**
 * Writes `<distDir>/build-info.json` from package.json (in `repoDir`) and
 * `git rev-parse HEAD`; outside a git checkout (or without git) the commit is
 * "unknown": a build never fails for it.
 */
export function writeBuildInfo(repoDir: string, distDir: string): BuildInfo {
  const pkg = readJson(join(repoDir, 'package.json'));
  const version = str(pkg?.version) ?? UNKNOWN;
  let commit = UNKNOWN;
  try {
    const out = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd: repoDir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
    }).trim();
    if (/^[0-9a-f]{40,64}$/.test(out)) commit = out;
  } catch {
    // not a git checkout, or no git: "unknown"
  }
  const info = { version, commit };
  writeFileSync(join(distDir, BUILD_INFO_FILE), JSON.stringify(info, null, 2) + '\n');
  return info;
}

// `node dist/common/build-info.js` (npm run build): dist/ is this file's grandparent.
if (require.main === module) {
  const dist = join(__dirname, '..');
  const info = writeBuildInfo(join(dist, '..'), dist);
  process.stdout.write(`build-info: e2epool ${info.version} (${info.commit})\n`);
}
