import { spawnSync } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Command } from 'commander';
import { Client } from 'pg';
import { parse as parseYaml } from 'yaml';
import { buildProgram } from '../../cli/main';
import { createMigratedDatabase, createTestDatabase, type TestDatabase } from '../helpers/db';
import {
  bareMetalRunnerYaml,
  controllerEnv,
  proxmoxRunnerYaml,
  testRunners,
  uniqueId,
  writeInventory,
} from '../helpers/env';
import { runCli, startCli } from '../helpers/processes';
import { waitFor } from '../helpers/wait';

/**
 * The CLI conventions every command keeps (docs/reference.md, "Command line: output and exit codes"), checked on real processes: results alone on
 * stdout and logs on stderr, a read-only export-inventory, exit codes 2 / 75 /
 * 78, `--version` everywhere, doctor streaming its lines, shell completion.
 */

const R = testRunners(['exported', 'pve']);
const VERSION = /^e2epool \d+\.\d+\.\d+\S* \([0-9a-f]{7,}\)\n$/;

/** Every command of the tree as its words: [['api'], ['runners', 'quarantine'], ...]. */
function commandPaths(cmd: Command, prefix: string[] = []): string[][] {
  return cmd.commands.flatMap((c) => {
    const path = [...prefix, c.name()];
    return [path, ...commandPaths(c, path)];
  });
}

/** Runs `fn` over `items`, `n` at a time (spawning ~50 processes one by one is slow under load). */
async function inBatches<T, R>(items: T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += n)
    out.push(...(await Promise.all(items.slice(i, i + n).map(fn))));
  return out;
}

async function tablesOf(url: string): Promise<string[]> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ tablename: string }>(
      `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`,
    );
    return rows.map((r) => r.tablename);
  } finally {
    await c.end();
  }
}

describe('export-inventory and migrate: results on stdout, logs on stderr, export never writes', () => {
  let db: TestDatabase;
  const env = (extra: Record<string, string> = {}) =>
    controllerEnv({
      E2EPOOL_DATABASE_URL: db.url,
      E2EPOOL_INVENTORY_PATH: writeInventory('runners: []\n'),
      ...extra,
    });
  beforeAll(async () => {
    db = await createTestDatabase('cliconv');
  });
  afterAll(async () => db?.drop());

  it('on an empty database export-inventory exits 78 saying to migrate, and creates nothing', async () => {
    for (const args of [['export-inventory'], ['export-inventory', '--json']]) {
      const r = await runCli(args, env());
      expect(r.code).toBe(78);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(
        /^e2epool export-inventory: the database schema is behind this e2epool \(\d+ migration\(s\) pending: .*\); run `e2epool migrate` first \(nothing was written\)\n$/,
      );
    }
    expect(await tablesOf(db.url)).toEqual([]);
  });

  it('migrate prints only its result on stdout; its log line goes to stderr', async () => {
    const r = await runCli(['migrate'], env());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^applied: \S+(, \S+)*\n$/);
    const logs = r.stderr.trimEnd().split('\n');
    expect(logs.map((l) => (JSON.parse(l) as { msg: string }).msg)).toContain('database migrated');
  });

  it('export-inventory > file is clean YAML even when it logs; --json is the same document', async () => {
    const imported = await runCli(
      ['import-inventory', writeInventory(`runners:\n${bareMetalRunnerYaml(R.exported)}`)],
      env(),
    );
    expect(imported.code).toBe(0);
    // An obsolete setting makes the command log a warning: it must not reach stdout.
    const noisy = env({ E2EPOOL_REDIS_URL: 'redis://old', E2EPOOL_LOG_LEVEL: 'debug' });
    const yaml = await runCli(['export-inventory'], noisy);
    expect(yaml.code).toBe(0);
    expect(yaml.stdout).not.toContain('"level"');
    const doc = parseYaml(yaml.stdout) as { runners: Array<Record<string, unknown>> };
    expect(doc.runners.map((r) => [r.runner_id, r.backend])).toEqual([
      [R.exported.id, 'bare_metal'],
    ]);
    expect(yaml.stderr).toMatch(/"level":40.*E2EPOOL_REDIS_URL has no meaning/);

    const json = await runCli(['export-inventory', '--json'], noisy);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual(doc);
    expect(json.stdout).not.toContain(R.exported.token);
  });
});

describe('exit codes', () => {
  it('--version on every command and subcommand prints the version and exits 0', async () => {
    const paths = commandPaths(buildProgram()).filter((p) => p[p.length - 1] !== 'help');
    expect(paths.length).toBeGreaterThan(15);
    const results = await inBatches([[], ...paths], 4, async (p) => ({
      p,
      r: await runCli([...p, '--version'], {}),
    }));
    for (const { p, r } of results)
      expect({ p, code: r.code, stdout: r.stdout }).toEqual({
        p,
        code: 0,
        stdout: expect.stringMatching(VERSION),
      });
  });

  it('a usage error exits 2 on every command, having done nothing', async () => {
    const paths = commandPaths(buildProgram()).filter((p) => p[p.length - 1] !== 'help');
    const results = await inBatches([[], ...paths], 4, async (p) => ({
      p,
      r: await runCli([...p, '--no-such-option'], {
        // Were anything to run, it would find nothing to talk to.
        E2EPOOL_AGENT_CONFIG: '/nonexistent/agent.yml',
        E2EPOOL_DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
      }),
    }));
    for (const { p, r } of results)
      expect({ p, code: r.code, stdout: r.stdout }).toEqual({ p, code: 2, stdout: '' });
    const none = await runCli([], {});
    expect([none.code, none.stdout]).toEqual([2, '']);
    expect(none.stderr).toContain('Usage: e2epool');
  });

  describe('admin commands: 75 for a temporary refusal, 1 for the rest', () => {
    let server: Server;
    let url: string;
    beforeAll(async () => {
      const answers: Record<string, [number, string]> = {
        draining: [423, 'Runner is draining'],
        down: [503, 'Temporal unavailable, try again later'],
        clash: [409, 'Already quarantined'],
        nobody: [404, "Runner 'nobody' not found"],
      };
      server = createServer((req: IncomingMessage, res: ServerResponse) => {
        const id = decodeURIComponent(req.url!.split('/')[3] ?? '');
        const [status, detail] = answers[id] ?? [500, 'unexpected'];
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ detail }));
      });
      await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => new Promise((ok) => server.close(ok)));

    it.each([
      ['draining', 75],
      ['down', 75],
      ['clash', 1],
      ['nobody', 1],
    ])('runners quarantine %s (HTTP answer) exits %i', async (runner, code) => {
      const r = await runCli(['runners', 'quarantine', runner, '--reason', 'test', '--url', url], {
        E2EPOOL_ADMIN_TOKEN: 'a'.repeat(40),
      });
      expect([r.code, r.stdout]).toEqual([code, '']);
      expect(r.stderr).toMatch(/^e2epool: quarantine refused \(HTTP \d+\): /);
    });
  });
});

describe('e2epool doctor', () => {
  let migrated: Awaited<ReturnType<typeof createMigratedDatabase>>;
  let pve: Server;
  let held: ServerResponse[] = [];
  let released = false;
  beforeAll(async () => {
    migrated = await createMigratedDatabase('doctorstream');
    // A Proxmox node that keeps every request waiting until the test releases it.
    pve = createServer((_req, res) => {
      if (released) res.writeHead(401).end();
      else held.push(res);
    });
    await new Promise<void>((ok) => pve.listen(0, '127.0.0.1', ok));
  });
  afterAll(async () => {
    pve.closeAllConnections();
    await new Promise((ok) => pve.close(ok));
    await migrated?.close();
  });

  it('prints each line as soon as its check is done, before the slow ones end', async () => {
    const pveUrl = `http://127.0.0.1:${(pve.address() as AddressInfo).port}`;
    const inventory = `runners:\n${proxmoxRunnerYaml(
      { url: pveUrl, tokenId: 'e2epool@pve!ci', tokenSecret: 'pve-secret-stream' },
      { runnerId: R.pve.id, token: R.pve.token, vmid: 4242 },
    )}`;
    const doctor = startCli(
      ['doctor', '--timeout', '120'],
      controllerEnv({
        E2EPOOL_DATABASE_URL: migrated.db.url,
        E2EPOOL_TASK_QUEUE: uniqueId('tq-doctor-stream'),
        E2EPOOL_INVENTORY_PATH: writeInventory(inventory),
      }),
    );
    try {
      // The controller's own checks are printed while the Proxmox check still waits.
      await doctor.waitForOutput(/^ok inventory: .*\n\w+ agent-credential: .*\n/m, 60_000);
      await waitFor('the Proxmox check to reach the node', () => held.length > 0);
      expect(doctor.child.exitCode).toBeNull();
      expect(doctor.stdout()).not.toContain('proxmox-api');
      released = true;
      for (const res of held) res.writeHead(401).end();
      held = [];
      expect(await doctor.exited).toBe(1);
      const lines = doctor.stdout().trimEnd().split('\n');
      expect(lines.map((l) => l.replace(/:.*/, ''))).toEqual(
        expect.arrayContaining([
          'fail worker',
          'ok inventory',
          `fail ${R.pve.id} proxmox-api`,
          `fail ${R.pve.id} agent`,
        ]),
      );
      expect(doctor.stdout() + doctor.stderr()).not.toContain('pve-secret-stream');
    } finally {
      await doctor.stop('SIGKILL', 1000);
    }
  });
});

describe('e2epool completion', () => {
  const paths = commandPaths(buildProgram());

  it('bash: names every command, and completes commands and options in a real bash', async () => {
    const r = await runCli(['completion', 'bash'], {});
    expect([r.code, r.stderr]).toEqual([0, '']);
    for (const p of paths) expect(r.stdout).toContain(`'${p.join(' ')}')`);
    const complete = (...words: string[]) => {
      const script = `${r.stdout}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')})
COMP_CWORD=$((\${#COMP_WORDS[@]} - 1))
_e2epool
printf '%s\\n' "\${COMPREPLY[@]}"`;
      const out = spawnSync('bash', ['--norc', '--noprofile', '-c', script], { encoding: 'utf8' });
      expect(out.stderr).toBe('');
      return out.stdout.trim().split('\n');
    };
    const top = buildProgram().commands.map((c) => c.name());
    expect(complete('e2epool', '')).toEqual(expect.arrayContaining(top));
    expect(complete('e2epool', 'exp')).toEqual(['export-inventory']);
    expect(complete('e2epool', 'runners', '')).toEqual(
      expect.arrayContaining(['quarantine', 'unquarantine']),
    );
    expect(complete('e2epool', 'status', '--')).toEqual(
      expect.arrayContaining(['--checkpoint', '--socket', '--json', '--version', '--help']),
    );
    expect(complete('e2epool', 'completion', '')).toEqual(expect.arrayContaining(['bash', 'zsh']));
    expect(complete('e2epool', 'finalize', '--status', 'cancelled', '--so')).toEqual(['--socket']);
  });

  it('zsh: a #compdef script naming every command and option', async () => {
    const r = await runCli(['completion', 'zsh'], {});
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(r.stdout.startsWith('#compdef e2epool\n')).toBe(true);
    for (const p of paths) {
      expect(r.stdout).toContain(`'${p.join(' ')}')`);
      expect(r.stdout).toContain(`'${p[p.length - 1]}:`);
    }
    expect(r.stdout).toContain("'--json:");
  });

  it('an unknown shell is a usage error (2)', async () => {
    const r = await runCli(['completion', 'fish'], {});
    expect([r.code, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toContain('Allowed choices are bash, zsh');
  });
});
