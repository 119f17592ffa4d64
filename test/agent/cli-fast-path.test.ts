import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAgentArgs } from '../../cli/agent-commands';
import { buildProgram } from '../../cli/main';
import { CLI } from '../helpers/processes';
import { requireBuiltCli, tempDir } from './helpers';

/**
 * The commands a CI job runs start without commander (cli/agent-commands),
 * and that fast way parses a call exactly as commander would, or hands it over.
 */

/** What commander gives the action of `args`' command (the action itself replaced). */
async function commanderParse(args: string[]): Promise<{ name: string; opts: unknown }> {
  const program = buildProgram();
  let got: { name: string; opts: unknown } | undefined;
  for (const cmd of program.commands) {
    cmd.action((opts: Record<string, unknown>) => {
      got = { name: cmd.name(), opts: { ...opts } };
    });
  }
  await program.parseAsync(['node', 'e2epool', ...args]);
  if (!got) throw new Error(`commander ran no command for ${JSON.stringify(args)}`);
  return got;
}

describe('the fast way in to the agent commands', () => {
  it.each([
    ['status', '--checkpoint', 'job-1-2-abc'],
    ['status', '--socket', '/run/a.sock', '--checkpoint', 'job-1-2-abc'],
    ['status', '--checkpoint=job-1', '--socket=/run/a.sock'],
    ['status', '--checkpoint', ''],
    ['create', '--job-id', '42'],
    ['create', '--job-id', '42', '--wait', '0', '--socket', '/s'],
    ['create', '--wait=2.5', '--job-id=7'],
    ['finalize', '--checkpoint', 'c', '--status', 'failed'],
    ['finalize', '--status', 'canceled', '--checkpoint', 'c', '--socket', '/s'],
    ['logs', '--checkpoint', 'c'],
    ['logs', '--follow', '--checkpoint', 'c', '--socket', '/s'],
    ['ping'],
    ['ping', '--socket', '/s'],
    ['ping', '--json'],
    ['status', '--checkpoint', 'c', '--json'],
    ['logs', '--json', '--follow', '--checkpoint', 'c'],
    ['finalize', '--checkpoint', 'c', '--status', 'cancelled'],
  ])('parses %j as commander does', async (...args) => {
    expect(parseAgentArgs(args)).toEqual(await commanderParse(args));
  });

  it.each([
    [],
    ['api'],
    ['help', 'status'],
    ['status'],
    ['status', '--help'],
    ['status', '-h', '--checkpoint', 'c'],
    ['status', '--checkpoint', 'c', '-V'],
    ['status', '--checkpoint', '--socket', '/s'],
    ['status', '--checkpoint', 'c', '--socket'],
    ['status', '--checkpoint', 'c', 'extra'],
    ['status', '--checkpoint', 'c', '--', '--socket', '/s'],
    ['status', '--checkpoint', 'a', '--checkpoint', 'b'],
    ['status', '--checkpoint', 'c', '--follow'],
    ['status', '--checkpoint=-V'],
    ['create'],
    ['create', '--job-id', '1', '--wait', 'soon'],
    ['create', '--job-id', '1', '--wait=-1'],
    ['finalize', '--checkpoint', 'c'],
    ['finalize', '--checkpoint', 'c', '--status', 'running'],
    ['logs', '--checkpoint', 'c', '--follow=yes'],
    ['ping', '--version'],
    ['ping', '--json=yes'],
    ['create', '--job-id', '1', '--json'],
    ['finalize', '--checkpoint', 'c', '--status', 'success', '--json'],
  ])('leaves %j to commander', (...args) => {
    expect(parseAgentArgs(args)).toBeUndefined();
  });
});

describe('what the CLI loads for the commands a CI job runs', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeAll(() => requireBuiltCli());
  beforeEach(() => (tmp = tempDir()));
  afterEach(() => tmp.cleanup());

  /**
   * No package at all: commander (with the whole command tree and the build
   * info it prints for --version) was the largest part of the start-up once
   * the controller's modules were out; ws, zod, pino, yaml, typeorm and
   * Temporal are each slower to load than the whole command.
   */
  it('the bundle is what the compiled modules are, without a package', () => {
    const bundle = readFileSync(
      join(CLI, '..', '..', 'dist', 'cli', 'agent-commands.bundle.js'),
      'utf8',
    );
    for (const m of ['agent/cli', 'agent/ipc', 'agent/config', 'cli/agent-commands'])
      expect(bundle).toContain(`// dist/${m}.js`);
    expect(bundle).not.toContain('node_modules');
  });

  it.each([
    ['status', '--checkpoint', 'x'],
    ['create', '--job-id', '1', '--wait', '0'],
    ['finalize', '--checkpoint', 'x', '--status', 'success'],
    ['logs', '--checkpoint', 'x', '--follow'],
    ['ping'],
    ['status', '--checkpoint', 'x', '--json'],
    ['logs', '--checkpoint', 'x', '--json'],
    ['ping', '--json'],
    ['finalize', '--checkpoint', 'x', '--status', 'cancelled'],
  ])('loads no package and not cli/main for %j', (...args) => {
    const hook = join(tmp.dir, 'loaded.js');
    const out = join(tmp.dir, 'loaded.json');
    writeFileSync(
      hook,
      `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(out)}, ` +
        'JSON.stringify(Object.keys(require.cache))));\n',
    );
    const r = spawnSync(
      process.execPath,
      ['--require', hook, CLI, ...args, '--socket', join(tmp.dir, 'missing.sock')],
      {
        env: { PATH: process.env.PATH, E2EPOOL_AGENT_CONFIG: join(tmp.dir, 'none.yml') },
        encoding: 'utf8',
      },
    );
    expect(r.stderr).toContain('agent is not running');
    expect(r.status).toBe(2);
    const loaded = (JSON.parse(readFileSync(out, 'utf8')) as string[]).filter((m) => m !== hook);
    // One file besides bin/e2epool.js: the bundle `npm run build` makes (cli/bundle-fast-path.ts).
    expect(loaded.map((m) => m.replace(/^.*\/(bin|dist)\//, '$1/')).sort()).toEqual([
      'bin/e2epool.js',
      'dist/cli/agent-commands.bundle.js',
    ]);
    expect(loaded.filter((m) => m.includes('/node_modules/'))).toEqual([]);
    expect(loaded.filter((m) => /\/dist\/(cli\/main|common\/build-info)\.js$/.test(m))).toEqual([]);
  });
});
