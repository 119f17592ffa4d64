/**
 * `npm run bench`: the lifecycle, agents, logs and reset benches, one after the
 * other. `npm run bench -- --record [--note "what changed"]` also appends
 * their figures as one row to bench/RESULTS.md (date, commit, machine), so a
 * change to the create/finalize/reset path or the CLI leaves its run in
 * review. A bench that fails fails the run, and nothing is recorded.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import type { Figures } from './report';

const BENCHES = ['lifecycle', 'agents', 'logs', 'reset'] as const;
const RESULTS = join(__dirname, '..', '..', 'bench', 'RESULTS.md');

function parseArgs(argv: string[]): { record: boolean; note: string } {
  let record = false;
  let note = '';
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--record') record = true;
    else if (argv[i] === '--note' && argv[i + 1] !== undefined) note = argv[++i]!;
    else throw new Error(`usage: npm run bench -- [--record] [--note TEXT] (got ${argv[i]})`);
  }
  return { record, note };
}

/** `abc1234`, or `abc1234+` when the work tree has changes the commit lacks. */
function commit(): string {
  const git = (...a: string[]) => execFileSync('git', a, { encoding: 'utf8' }).trim();
  try {
    return `${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain') ? '+' : ''}`;
  } catch {
    return 'unknown';
  }
}

function machine(load: number): string {
  const gib = Math.round(totalmem() / 2 ** 30);
  return `${cpus().length} cores, ${gib} GiB, Node ${process.versions.node.split('.')[0]}, load ${load.toFixed(1)}`;
}

/** The row for RESULTS.md, its cells in the table's column order. */
function row(figures: Map<string, Figures>, load: number, note: string): string {
  const cell = (bench: string, key: string) => String(figures.get(bench)?.[key] ?? 'not run');
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const cells = [
    date,
    `\`${commit()}\``,
    machine(load),
    cell('lifecycle', 'create'),
    cell('lifecycle', 'throughput'),
    cell('lifecycle', 'finalize'),
    cell('agents', 'status'),
    cell('agents', 'pingP99'),
    cell('agents', 'rss'),
    cell('logs', 'finalizeToReset'),
    cell('reset', 'goldenVsPerJob'),
    note.replace(/\|/g, '\\|').replace(/\n/g, ' '),
  ];
  return `| ${cells.join(' | ')} |\n`;
}

/** Re-aligns the table as `npm run lint` (Prettier) expects it. */
async function formatResults(): Promise<void> {
  const prettier = await import('prettier');
  const text = readFileSync(RESULTS, 'utf8');
  const options = (await prettier.resolveConfig(RESULTS)) ?? {};
  writeFileSync(RESULTS, await prettier.format(text, { ...options, filepath: RESULTS }));
}

async function main(): Promise<void> {
  const { record, note } = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'e2epool-bench-'));
  const reportFile = join(dir, 'figures.jsonl');
  const load = loadavg()[0]!;
  try {
    for (const bench of BENCHES) {
      const r = spawnSync(process.execPath, [join(__dirname, `${bench}.js`)], {
        stdio: 'inherit',
        env: { ...process.env, E2EPOOL_BENCH_REPORT: reportFile },
      });
      if (r.status !== 0) {
        process.stderr.write(`bench ${bench} failed (exit ${r.status}); nothing recorded\n`);
        process.exit(1);
      }
    }
    if (!record) return;
    const figures = new Map<string, Figures>();
    for (const line of readFileSync(reportFile, 'utf8').split('\n').filter(Boolean)) {
      const { bench, ...rest } = JSON.parse(line) as Figures & { bench: string };
      figures.set(bench, rest);
    }
    appendFileSync(RESULTS, row(figures, load, note));
    await formatResults();
    process.stdout.write(
      `\nbench: recorded in bench/RESULTS.md (load average at start ${load.toFixed(1)})\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
