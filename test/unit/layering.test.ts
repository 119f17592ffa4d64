import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/**
 * The folder layering of eslint.config.mjs (LAYERS) on snippets, through
 * ESLint's Node API. It runs in a child Node process: the config is an ES
 * module, which jest's module system cannot import.
 */
const root = join(__dirname, '../..');

interface Case {
  filePath: string;
  code: string;
}

/** The rule ids ESLint reports for each case, in order. */
function lint(cases: Case[]): string[][] {
  const script = `
    import { ESLint } from 'eslint';
    const cases = JSON.parse(process.env.LAYERING_CASES);
    const eslint = new ESLint({ cwd: process.cwd(), overrideConfigFile: 'eslint.config.mjs' });
    const out = [];
    for (const c of cases) {
      const [r] = await eslint.lintText(c.code, { filePath: c.filePath });
      out.push(r.messages.map((m) => m.ruleId ?? m.message));
    }
    process.stdout.write(JSON.stringify(out));
  `;
  const stdout = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: root,
    env: { ...process.env, LAYERING_CASES: JSON.stringify(cases) },
    encoding: 'utf8',
  });
  return JSON.parse(stdout) as string[][];
}

const RULE = '@typescript-eslint/no-restricted-imports';
const at = (file: string, code: string): Case => ({ filePath: join(root, file), code });

test('imports against the folder layering are errors, type imports too; allowed ones pass', () => {
  const results = lint([
    // The edge cycle this rule exists for: the gateway never imports the REST API.
    at('gateway/probe.ts', "import { x } from '../api/x';\nexport const y = x;\n"),
    at('gateway/probe.ts', "import type { X } from '../api/x';\nexport type Y = X;\n"),
    // A cycle between lower folders: the store never imports activities.
    at('store/probe.ts', "import { x } from '../activities/x';\nexport const y = x;\n"),
    at('store/migrations/probe.ts', "import { x } from '../../activities';\nexport const y = x;\n"),
    // The service never imports the edges above it.
    at('service/probe.ts', "import { x } from '../gateway/x';\nexport const y = x;\n"),
    // The agent: common/ and config/ only, types too.
    at('agent/probe.ts', "import type { X } from '../store/x';\nexport type Y = X;\n"),
    // Workflows: types of lower folders (their own rule), nothing of higher ones.
    at('workflows/probe.ts', "import type { X } from '../service/x';\nexport type Y = X;\n"),
    // Allowed: down the layers.
    at('api/probe.ts', "import { x } from '../gateway/x';\nexport const y = x;\n"),
    at('gateway/probe.ts', "import { x } from '../service/x';\nexport const y = x;\n"),
    at('agent/probe.ts', "import { x } from '../common/x';\nexport const y = x;\n"),
    at('workflows/probe.ts', "import type { X } from '../store/x';\nexport type Y = X;\n"),
  ]);
  expect(results).toEqual([[RULE], [RULE], [RULE], [RULE], [RULE], [RULE], [RULE], [], [], [], []]);
});

test('product code: a function over 80 lines and a file over 400 are errors; tests are not held to it', () => {
  /** A function of `lines` lines in all, signature and closing brace included. */
  const fn = (lines: number) =>
    [
      'export function f(): number {',
      '  let v = 0;',
      ...Array.from({ length: lines - 4 }, (_, k) => `  v += ${k};`),
      '  return v;',
      '}',
    ].join('\n') + '\n';
  const file = (lines: number) =>
    Array.from({ length: lines }, (_, k) => `export const c${k} = ${k};`).join('\n') + '\n';
  const results = lint([
    at('service/probe.ts', fn(80)),
    at('service/probe.ts', fn(81)),
    at('store/probe.ts', file(400)),
    at('store/probe.ts', file(401)),
    at('test/unit/probe.test.ts', fn(200)),
  ]);
  expect(results).toEqual([[], ['max-lines-per-function'], [], ['max-lines'], []]);
});
