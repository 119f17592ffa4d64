/**
 * `npm run docs:reference`: rewrites the generated parts of docs/reference.md
 * (between `<!-- generated:<part> -->` and `<!-- /generated:<part> -->`) from
 * the code: the commands from the `e2epool` program (commander), the settings
 * from the controller's schema and the agent's fields with their rows in
 * config/settings-docs.ts, the metrics from the API's and the worker's
 * prom-client registries. test/unit/docs-reference.test.ts fails when the file
 * differs from what this writes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { Counter, Gauge, Histogram, type Registry, Summary } from 'prom-client';
import { agentSettingDefaults } from '../agent/config';
import { createMetricsRegistry, type MetricsDeps } from '../api/metrics';
import { WorkerMetrics } from '../activities/metrics';
import { buildProgram } from '../cli/main';
import {
  AGENT_SETTING_DOCS,
  CONTROLLER_SETTING_DOCS,
  OTHER_SETTING_DOCS,
  type SettingDoc,
} from '../config/settings-docs';
import { controllerSettingDefaults, type ControllerSettingName } from '../config/settings';

/** The repository's root (this file runs from dev/ under ts-jest and from dist/dev/ when built). */
export const REPO_ROOT = __dirname.includes(`${join('dist', 'dev')}`)
  ? join(__dirname, '..', '..')
  : join(__dirname, '..');

export const REFERENCE_PATH = join(REPO_ROOT, 'docs', 'reference.md');

/** The folders of code that runs in an installation or in `npm run dev` (not tests, not benchmarks). */
export const SOURCE_FOLDERS = [
  'common',
  'config',
  'store',
  'activities',
  'workflows',
  'worker',
  'service',
  'gateway',
  'api',
  'agent',
  'cli',
  'dev',
  'temporal-dev',
  'bin',
] as const;

/** A markdown table; `|` in a cell is escaped. */
function table(head: string[], rows: string[][]): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}

/** Every command of the program with its path (`runners quarantine`), depth first. */
export function commandsOf(
  program: Command = buildProgram(),
): Array<{ path: string; cmd: Command }> {
  const out: Array<{ path: string; cmd: Command }> = [];
  const walk = (c: Command, prefix: string) => {
    for (const sub of c.commands) {
      const path = prefix ? `${prefix} ${sub.name()}` : sub.name();
      out.push({ path, cmd: sub });
      walk(sub, path);
    }
  };
  walk(program, '');
  return out;
}

function commandsTable(): string {
  const rows = commandsOf().map(({ path, cmd }) => {
    const args = cmd.registeredArguments.map((a) =>
      a.required ? `<${a.name()}>` : `[${a.name()}]`,
    );
    const options = cmd.options.map((o) => `\`${o.flags}\``).join(', ');
    return [`\`e2epool ${[path, ...args].join(' ')}\``, options || '—', cmd.description()];
  });
  return table(['command', 'options', 'what it does'], rows);
}

/** A default as the table shows it. */
function shownDefault(value: unknown, doc: SettingDoc): string {
  if (value === undefined || value === null || value === '')
    return doc.unsetMeans ? `unset: ${doc.unsetMeans}` : 'unset';
  return `\`${String(value)}\``;
}

function settingsTables(): string {
  const controllerDefaults = controllerSettingDefaults();
  const controller = (Object.keys(CONTROLLER_SETTING_DOCS) as ControllerSettingName[]).map(
    (name) => {
      const doc = CONTROLLER_SETTING_DOCS[name];
      return [`\`${name}\``, shownDefault(controllerDefaults[name], doc), doc.readBy, doc.meaning];
    },
  );
  const agentDefaults = agentSettingDefaults();
  const other = (group: 'agent' | 'dev') =>
    Object.entries(OTHER_SETTING_DOCS)
      .filter(([, d]) => d.group === group)
      .map(([name, d]) => [`\`${name}\``, d.shownDefault, d.readBy, d.meaning]);
  const [configPath, ...cliRest] = other('agent');
  const agent = [
    ...(configPath ? [configPath] : []),
    ...Object.entries(AGENT_SETTING_DOCS).map(([name, doc]) => [
      `\`${name}\``,
      shownDefault(agentDefaults[name], doc),
      doc.readBy,
      doc.meaning,
    ]),
    ...cliRest,
  ];
  const head = ['variable', 'default', 'read by', 'meaning'];
  return [
    '### Controller settings',
    table(head, controller),
    '### Agent and CLI settings',
    table(head, agent),
    '### Development and test settings',
    table(head, other('dev')),
  ].join('\n\n');
}

/**
 * Deps the API's registry is built with, whatever MetricsDeps comes to hold:
 * each is read only when a scrape collects, which never happens here.
 */
function idleMetricsDeps(): MetricsDeps {
  const never = (): never => {
    throw new Error('not collected when generating docs');
  };
  const stub: object = new Proxy(never, { get: () => stub });
  return stub as MetricsDeps;
}

/** Every e2epool_* metric, with the processes that serve it. */
export function metricsOf(): Array<{
  name: string;
  type: string;
  labels: readonly string[];
  help: string;
  servedBy: string;
}> {
  const registries: Array<[string, Registry]> = [
    ['api', createMetricsRegistry(idleMetricsDeps())],
    ['worker', new WorkerMetrics().registry],
  ];
  const byName = new Map<string, { type: string; labels: string[]; help: string; by: string[] }>();
  for (const [by, registry] of registries) {
    for (const m of registry.getMetricsAsArray()) {
      if (!m.name.startsWith('e2epool_')) continue;
      const type =
        m instanceof Histogram
          ? 'histogram'
          : m instanceof Counter
            ? 'counter'
            : m instanceof Summary
              ? 'summary'
              : m instanceof Gauge
                ? 'gauge'
                : 'untyped';
      const labels = (m as unknown as { labelNames?: string[] }).labelNames ?? [];
      const entry = byName.get(m.name) ?? { type, labels, help: m.help, by: [] };
      entry.by.push(by);
      byName.set(m.name, entry);
    }
  }
  return [...byName.entries()].map(([name, e]) => ({
    name,
    type: e.type,
    labels: e.labels,
    help: e.help,
    servedBy: e.by.length > 1 ? 'both' : e.by[0]!,
  }));
}

function metricsTable(): string {
  const rows = metricsOf().map((m) => [
    `\`${m.name}${m.labels.length ? `{${m.labels.join(',')}}` : ''}\``,
    m.type,
    m.servedBy,
    m.help,
  ]);
  return table(['metric', 'type', 'served by', 'what (its HELP text)'], rows);
}

/** The generated parts, by marker name. */
function parts(): Record<string, string> {
  return { commands: commandsTable(), settings: settingsTables(), metrics: metricsTable() };
}

/**
 * `text` (docs/reference.md) with every generated part rewritten, formatted as
 * `npm run format` would. Throws when a marker is missing.
 */
export async function renderReference(text: string): Promise<string> {
  let out = text;
  for (const [name, body] of Object.entries(parts())) {
    const open = `<!-- generated:${name} -->`;
    const close = `<!-- /generated:${name} -->`;
    const start = out.indexOf(open);
    const end = out.indexOf(close);
    if (start < 0 || end < start)
      throw new Error(`docs/reference.md lacks the markers ${open} ... ${close}`);
    const note = `<!-- written by npm run docs:reference from the code; edit the code, not this part -->`;
    out = `${out.slice(0, start + open.length)}\n${note}\n\n${body}\n\n${out.slice(end)}`;
  }
  // Loaded here: prettier's CommonJS entry imports its ES modules dynamically, which jest
  // (where the tests import this file for its lists) cannot do.
  const prettier = await import('prettier');
  const config = (await prettier.resolveConfig(REFERENCE_PATH)) ?? {};
  return prettier.format(out, { ...config, filepath: REFERENCE_PATH });
}

/** The message of a stale reference (the test prints it). */
export const STALE_MESSAGE =
  'docs/reference.md is stale: its generated tables differ from the code; run `npm run docs:reference` and commit the result';

/** Rewrites docs/reference.md; with `--check`, only exits 1 (and says so) when it is stale. */
async function main(): Promise<void> {
  const before = readFileSync(REFERENCE_PATH, 'utf8');
  const after = await renderReference(before);
  if (after === before) {
    console.log('docs/reference.md is up to date');
    return;
  }
  if (process.argv.includes('--check')) {
    console.error(STALE_MESSAGE);
    process.exitCode = 1;
    return;
  }
  writeFileSync(REFERENCE_PATH, after);
  console.log('docs/reference.md rewritten from the code');
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
