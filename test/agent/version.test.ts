import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, runCli } from '../helpers/processes';
import { requireBuiltCli } from './helpers';

const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };

describe('e2epool --version', () => {
  beforeAll(() => requireBuiltCli());

  it('npm run build wrote dist/build-info.json with the package version and the checkout commit', () => {
    const info = JSON.parse(readFileSync(join(REPO, 'dist', 'build-info.json'), 'utf8')) as unknown;
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();
    expect(info).toEqual({ version: pkg.version, commit: head });
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
