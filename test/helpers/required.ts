import { spawnSync } from 'node:child_process';

/**
 * Under `CI=true` (`.ci/run` sets it) a test whose tool is missing fails: a
 * skipped test would pass silently and CI would prove nothing about it.
 * Elsewhere it is skipped, its title saying what is missing.
 */
export const IN_CI = process.env.CI === 'true';

/** Whether `cmd` is found on PATH. */
export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd]).status === 0;
}

type TestFn = (name: string, fn: jest.ProvidesCallback, timeout?: number) => void;
type DescribeFn = (name: string, fn: () => void) => void;

const missing = (what: string, install: string) => `${what} is required under CI=true (${install})`;

/**
 * `it` for a test that needs `what` (`available` says whether it is there):
 * run when available; else failed under CI=true, skipped elsewhere.
 */
export function itNeeding(available: boolean, what: string, install: string): TestFn {
  if (available) return it;
  if (IN_CI)
    return (name) =>
      it(name, () => {
        throw new Error(missing(what, install));
      });
  return (name, fn, timeout) => it.skip(`${name}: SKIPPED, no ${what} (${install})`, fn, timeout);
}

/** `describe` for tests that need `what`: as itNeeding, for a whole block. */
export function describeNeeding(available: boolean, what: string, install: string): DescribeFn {
  if (available) return describe;
  if (IN_CI)
    return (name) =>
      describe(name, () =>
        it(`needs ${what}`, () => {
          throw new Error(missing(what, install));
        }),
      );
  return (name, fn) => describe.skip(`${name}: SKIPPED, no ${what} (${install})`, fn);
}
