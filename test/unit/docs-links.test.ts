import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { commandsOf, SOURCE_FOLDERS } from '../../dev/docs-reference';

/**
 * The documentation's links and commands: every relative link of README.md,
 * CONTRIBUTING.md and docs/*.md reaches a file, and its #anchor a heading
 * there (GitHub's slugs); every `e2epool <command>` shown is a command of the
 * program and every `npm run <script>` a script of package.json.
 */
const root = join(__dirname, '../..');
const DOCS = [
  'README.md',
  'CONTRIBUTING.md',
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** A document split into its prose (code blanked out) and its code (fenced blocks and spans). */
function parse(file: string): { prose: string; code: string[] } {
  const text = readFileSync(join(root, file), 'utf8');
  const code: string[] = [];
  const lines: string[] = [];
  let fence: string[] | null = null;
  for (const line of text.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) {
      if (fence) {
        code.push(fence.join('\n'));
        fence = null;
      } else fence = [];
      lines.push('');
      continue;
    }
    if (fence) {
      fence.push(line);
      lines.push('');
      continue;
    }
    lines.push(
      line.replace(/(`+)(.+?)\1/g, (_m, _ticks: string, span: string) => {
        code.push(span);
        return '`code`';
      }),
    );
  }
  return { prose: lines.join('\n'), code };
}

/** GitHub's anchor for a heading's text (github-slugger), before de-duplication. */
function githubSlug(heading: string): string {
  const text = heading
    .replace(/`([^`]*)`/g, '$1')
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .replace(/\*\*|__/g, '')
    .trim()
    .toLowerCase();
  return text.replace(/[^\p{L}\p{N}\p{M} _-]/gu, '').replace(/ /g, '-');
}

/** The anchors a markdown file offers: its headings' slugs (de-duplicated as GitHub does) and `<a id>`s. */
function anchorsOf(file: string): Set<string> {
  const { prose } = parse(relative(root, file));
  const raw = readFileSync(file, 'utf8');
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  // Headings are read from the text with code spans intact (they name things).
  const rawLines = raw.split('\n');
  prose.split('\n').forEach((line, i) => {
    if (!/^#{1,6} /.test(line)) return;
    const slug = githubSlug(rawLines[i]!.replace(/^#{1,6} /, ''));
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  });
  for (const m of raw.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) anchors.add(m[1]!);
  return anchors;
}

interface Link {
  file: string;
  target: string;
}

function linksOf(file: string): Link[] {
  const { prose } = parse(file);
  return [...prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)]
    .map((m) => ({ file, target: m[1]! }))
    .filter((l) => !/^[a-z][a-z0-9+.-]*:/i.test(l.target));
}

/** Why a link does not resolve, or null. */
function brokenBecause(link: Link): string | null {
  const [path, anchor] = link.target.split('#', 2) as [string, string | undefined];
  const target =
    path === '' ? join(root, link.file) : resolve(dirname(join(root, link.file)), path);
  if (!existsSync(target)) return `${relative(root, target)} does not exist`;
  if (anchor === undefined || anchor === '') return null;
  if (!target.endsWith('.md')) return null;
  return anchorsOf(target).has(anchor)
    ? null
    : `${relative(root, target)} has no heading #${anchor}`;
}

/**
 * The `e2epool` invocations in a piece of code: each shell command (split at
 * `&&`, `||`, `;`, `|`, `$(`, quotes) whose first word, after `sudo -u USER`,
 * `VAR=value`s and a YAML `- ` or `run: `, is `e2epool`.
 */
function e2epoolCommands(code: string): string[][] {
  const out: string[][] = [];
  for (const line of code.split('\n')) {
    for (let segment of line.split(/&&|\|\||[;|`'"]|\$\(/)) {
      segment = segment
        .replace(/^\s*(?:-\s+|run:\s+|\$\s+)?/, '')
        .replace(/^(?:sudo(?:\s+-u\s+\S+)?\s+)?/, '')
        .replace(/^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+/, '');
      const words = segment.trim().split(/\s+/);
      if (words[0] !== 'e2epool' || words.length < 2) continue;
      const args = words.slice(1).filter((w) => /^[a-z]/.test(w));
      if (args.length > 0 && /^[a-z]/.test(words[1]!)) out.push(args);
    }
  }
  return out;
}

/** Where code, configs and scripts point into the docs (comments, help texts). */
const POINTER_FOLDERS = [...SOURCE_FOLDERS, 'bench', 'test', 'ops', '.ci'];

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'histories' ? [] : filesUnder(path);
    return /\.(ts|js|mjs|sh|ya?ml|service|example|plist|tmpfiles)$|^run$/.test(e.name)
      ? [path]
      : [];
  });
}

const SCRIPTS = Object.keys(
  (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: object }).scripts,
);

describe('the documentation', () => {
  it('is README.md, CONTRIBUTING.md and docs/ (operators, ci, reference, contributing, protocol)', () => {
    expect(DOCS).toEqual(
      expect.arrayContaining([
        'docs/operators.md',
        'docs/ci.md',
        'docs/reference.md',
        'docs/contributing.md',
        'docs/protocol.md',
      ]),
    );
  });

  it('links only to files and headings that exist', () => {
    const links = DOCS.flatMap(linksOf);
    expect(links.length).toBeGreaterThan(50);
    const broken = links
      .map((l) => ({ l, why: brokenBecause(l) }))
      .filter((b) => b.why !== null)
      .map((b) => `${b.l.file}: (${b.l.target}): ${b.why}`);
    expect(broken).toEqual([]);
  });

  it('shows only e2epool commands the program has', () => {
    const commands = new Set(commandsOf().map((c) => c.path));
    const groups = new Set(
      commandsOf()
        .filter((c) => c.cmd.commands.length > 0)
        .map((c) => c.path),
    );
    const unknown: string[] = [];
    let seen = 0;
    for (const file of DOCS) {
      for (const code of parse(file).code) {
        for (const args of e2epoolCommands(code)) {
          seen += 1;
          // A group (`e2epool runners`) is followed by its subcommand.
          const path = groups.has(args[0]!) && args[1] ? `${args[0]} ${args[1]}` : args[0]!;
          const name = path.replace(/[^a-z -].*$/, '');
          if (!commands.has(name)) unknown.push(`${file}: e2epool ${path}`);
        }
      }
    }
    expect(seen).toBeGreaterThan(20);
    expect(unknown).toEqual([]);
  });

  it('shows only npm scripts that package.json has', () => {
    const unknown: string[] = [];
    for (const file of DOCS) {
      for (const code of parse(file).code) {
        for (const m of code.matchAll(/\bnpm run ([\w:-]+)/g)) {
          if (!SCRIPTS.includes(m[1]!)) unknown.push(`${file}: npm run ${m[1]}`);
        }
      }
    }
    expect(unknown).toEqual([]);
  });

  it("README's first commands run e2epool and its tests; .ci/run runs that test command", () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    expect(firstBlock).toMatch(/^npm ci && npm run dev\b/m);
    expect(firstBlock).toMatch(/^npm test\b/m);
    expect(readFileSync(join(root, '.ci/run'), 'utf8')).toMatch(/^npm test\b/m);
  });
});

describe('pointers from the code into the docs', () => {
  const files = [
    ...POINTER_FOLDERS.flatMap((f) => filesUnder(join(root, f))),
    join(root, 'jest.cluster.config.js'),
  ];
  const texts = files.map((f) => ({ file: relative(root, f), text: readFileSync(f, 'utf8') }));

  it('never name a README section (the README has none: point to docs/<file>.md, "<heading>")', () => {
    const stale = texts.flatMap(({ file, text }) =>
      [...text.matchAll(/README(?:\.md)?,? "[^"]*"?/g)].map((m) => `${file}: ${m[0]}`),
    );
    expect(stale).toEqual([]);
  });

  it('name headings and anchors that exist', () => {
    const broken: string[] = [];
    let seen = 0;
    for (const { file, text } of texts) {
      for (const m of text.matchAll(/docs\/([a-z-]+\.md)(?:#([\w-]+)|,? \(?"([^"\n]+)")/g)) {
        seen += 1;
        const target = join(root, 'docs', m[1]!);
        const anchor = m[2] ?? githubSlug(m[3]!);
        if (!existsSync(target)) broken.push(`${file}: docs/${m[1]} does not exist`);
        else if (!anchorsOf(target).has(anchor))
          broken.push(`${file}: docs/${m[1]} has no heading ${m[2] ? `#${m[2]}` : `"${m[3]}"`}`);
      }
    }
    expect(seen).toBeGreaterThan(20);
    expect(broken).toEqual([]);
  });
});

describe('githubSlug', () => {
  it.each([
    ['Runner hosts: the agent', 'runner-hosts-the-agent'],
    ['Cluster config (`ops/temporal/`)', 'cluster-config-opstemporal'],
    ['Tests under `CI=true`', 'tests-under-citrue'],
    ['`needs_attention`: a reset step keeps failing', 'needs_attention-a-reset-step-keeps-failing'],
    ["A checkpoint's page", 'a-checkpoints-page'],
    ['Sizing and upgrades', 'sizing-and-upgrades'],
  ])('%s -> %s', (heading, slug) => {
    expect(githubSlug(heading)).toBe(slug);
  });
});
