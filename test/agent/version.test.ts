import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeBuildInfo } from '../../common/build-info';
import { REPO, runCli } from '../helpers/processes';
import { requireBuiltCli } from './helpers';

/** HEAD of this checkout, or "unknown" when the tests run from a tree without git. */
function head(): string {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd: REPO,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return 'unknown';
  }
}

const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };

describe('e2epool --version', () => {
  beforeAll(() => requireBuiltCli());

  it('npm run build wrote dist/build-info.json: the package version and a git commit', () => {
    const info = JSON.parse(readFileSync(join(REPO, 'dist', 'build-info.json'), 'utf8')) as unknown;
    // The build may predate the newest commit here: only its shape is known.
    expect(info).toEqual({
      version: pkg.version,
      commit: head() === 'unknown' ? 'unknown' : expect.stringMatching(/^[0-9a-f]{40}$/),
    });
  });

  it("the build step records the checkout's HEAD", () => {
    const out = mkdtempSync(join(tmpdir(), 'e2epool-build-info-'));
    try {
      writeBuildInfo(REPO, out);
      expect(JSON.parse(readFileSync(join(out, 'build-info.json'), 'utf8'))).toEqual({
        version: pkg.version,
        commit: head(),
      });
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it.each(['--version', '-V', 'agent --version', 'agent -V'])(
    'e2epool %s prints "e2epool <version> (<commit>)" and exits 0',
    async (args) => {
      const { commit } = JSON.parse(
        readFileSync(join(REPO, 'dist', 'build-info.json'), 'utf8'),
      ) as { commit: string };
      const r = await runCli(args.split(' '), {});
      expect(r).toEqual({
        code: 0,
        stdout: `e2epool ${pkg.version} (${commit.slice(0, 7)})\n`,
        stderr: '',
      });
    },
  );
});
