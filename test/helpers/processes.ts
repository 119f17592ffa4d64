import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export const REPO = join(__dirname, '..', '..');
export const CLI = join(REPO, 'bin', 'e2epool.js');

/** A process started from the built CLI, with its output collected. */
export interface RunningProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or signal name), possibly before its output is all read. */
  exited: Promise<number | string>;
  /**
   * Resolves with the exit code (or signal name) once the process exited and
   * its stdout and stderr are read to the end (Node emits 'exit' before the
   * pipes drain). Never resolves while a process it started keeps them open.
   */
  closed: Promise<number | string>;
  /** Waits until `pattern` appears in stdout or stderr. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | string>;
}

/**
 * Starts `e2epool <args>` as a separate process, as an operator would: the
 * repository's bin/e2epool.js, or the executable `bin` (an installed e2epool).
 */
export function startCli(args: string[], env: NodeJS.ProcessEnv, bin?: string): RunningProcess {
  const [cmd, argv] = bin ? [bin, args] : [process.execPath, [CLI, ...args]];
  const child = spawn(cmd, argv, {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, E2EPOOL_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString('utf8');
    listeners.forEach((l) => l());
  });
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
    listeners.forEach((l) => l());
  });
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  const closed = new Promise<number | string>((resolve) =>
    child.once('close', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    closed,
    waitForOutput(pattern, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (pattern.test(out) || pattern.test(err)) {
            done();
            resolve();
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(
              `no output matching ${pattern} within ${timeoutMs} ms.\nstdout:\n${out}\nstderr:\n${err}`,
            ),
          );
        }, timeoutMs);
        const onExit = () => {
          done();
          reject(
            new Error(
              `process exited before printing ${pattern}.\nstdout:\n${out}\nstderr:\n${err}`,
            ),
          );
        };
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
          child.off('exit', onExit);
        };
        listeners.add(check);
        child.once('exit', onExit);
        check();
      });
    },
    async stop(signal = 'SIGTERM', timeoutMs = 30_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Runs `e2epool <args>` to completion (`bin`: as startCli). */
export async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 30_000,
  bin?: string,
) {
  const p = startCli(args, env, bin);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  // Its whole output: a short command can exit before the pipes have drained.
  const code = await p.closed;
  clearTimeout(timer);
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}
