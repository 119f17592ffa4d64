import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import { EXEC_OUTPUT_CAP, type ExecData, type ExecOutputStream } from '../common/agent-protocol';

/** Each of stdout and stderr is cut to this many characters. */
export const OUTPUT_CAP_CHARS = EXEC_OUTPUT_CAP;
/** Used when the controller sends no usable timeout (the old agent's default). */
const DEFAULT_EXEC_TIMEOUT_SECONDS = 120;
/** After the shell exits, how long background children may keep its pipes open. */
const PIPE_GRACE_MS = 500;
/** setTimeout's largest delay (about 24.8 days); larger ones would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Commands running at once; more are refused rather than queued. */
const MAX_RUNNING_COMMANDS = 16;

/**
 * Collects a stream up to `cap` characters. Past the cap it keeps reading and
 * discards, so a chatty command never blocks on a full pipe and never grows our
 * memory beyond the cap.
 */
class CappedText {
  private parts: string[] = [];
  private length = 0;
  private readonly decoder = new StringDecoder('utf8');

  constructor(private readonly cap: number) {}

  add(chunk: Buffer): void {
    if (this.length >= this.cap) return;
    const s = this.decoder.write(chunk);
    const room = this.cap - this.length;
    const kept = s.length > room ? s.slice(0, room) : s;
    this.parts.push(kept);
    this.length += kept.length;
  }

  text(): string {
    if (this.length < this.cap) {
      const tail = this.decoder.end();
      this.parts.push(tail.slice(0, this.cap - this.length));
    }
    return this.parts.join('');
  }
}

export interface RunOptions {
  /** Seconds; the whole process group is killed when it elapses. */
  timeoutSeconds: number;
  /** Called with the shell's pid once it is spawned (tests, logs). */
  onSpawn?: (pid: number) => void;
  /** Called with each chunk of output as it is read, in order within each stream. */
  onOutput?: (stream: ExecOutputStream, chunk: Buffer) => void;
}

/**
 * Where a command's output goes while it runs (an OutputStreamer): `end`
 * resolves once everything written has been passed on.
 */
export interface OutputSink {
  write(stream: ExecOutputStream, chunk: Buffer): void;
  end(): Promise<void>;
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/**
 * Runs `cmd` with `/bin/sh -c` in its own process group, so that a timeout
 * kills the shell and everything it started. Never rejects.
 *
 * The command is done when the shell has exited and its output pipes have
 * closed; a background child that keeps the pipes open delays the result by at
 * most PIPE_GRACE_MS (it is left running: it may be a service the command meant
 * to start). Exit code: the shell's, minus the signal number if a signal ended
 * it, -1 on timeout or when the shell could not start.
 */
export function runShell(cmd: string, opts: RunOptions): Promise<ExecData> {
  return new Promise<ExecData>((resolve) => {
    const out = new CappedText(OUTPUT_CAP_CHARS);
    const err = new CappedText(OUTPUT_CAP_CHARS);
    let settled = false;
    let timedOut = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
    let graceTimer: NodeJS.Timeout | undefined;

    const child = spawn('/bin/sh', ['-c', cmd], {
      detached: true, // own process group: kill(-pid) reaches the children too
      stdio: ['ignore', 'pipe', 'pipe'],
    });

    const timer = setTimeout(
      () => {
        // The shell already exited and only its pipes are open: that is not a timeout.
        if (exit) return finish(result());
        timedOut = true;
        if (child.pid !== undefined) killGroup(child.pid);
        // The pipes close once every process holding them is dead; a process that
        // escaped the group (setsid) must not keep us waiting.
        graceTimer = setTimeout(() => finish(result()), PIPE_GRACE_MS);
      },
      Math.min(opts.timeoutSeconds * 1000, MAX_TIMER_MS),
    );

    const finish = (data: ExecData) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(graceTimer);
      child.stdout?.destroy();
      child.stderr?.destroy();
      resolve(data);
    };

    const result = (): ExecData => {
      if (timedOut) {
        return {
          exit_code: -1,
          stdout: out.text(),
          stderr: `Command timed out after ${opts.timeoutSeconds}s`,
        };
      }
      let code = exit?.code ?? -1;
      if (exit?.code === null && exit.signal) code = -(constants.signals[exit.signal] ?? 1);
      return { exit_code: code, stdout: out.text(), stderr: err.text() };
    };

    child.stdout!.on('data', (c: Buffer) => {
      out.add(c);
      opts.onOutput?.('stdout', c);
    });
    child.stderr!.on('data', (c: Buffer) => {
      err.add(c);
      opts.onOutput?.('stderr', c);
    });
    child.on('error', (e) => {
      // spawn failed (e.g. no /bin/sh); no 'exit' follows.
      if (child.pid === undefined) finish({ exit_code: -1, stdout: '', stderr: e.message });
    });
    child.on('spawn', () => {
      if (child.pid !== undefined) opts.onSpawn?.(child.pid);
    });
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      if (!timedOut) graceTimer = setTimeout(() => finish(result()), PIPE_GRACE_MS);
    });
    child.on('close', () => finish(result()));
  });
}

/** Why a command was refused without running it. */
export type Refusal =
  | 'Empty command'
  | 'Command not allowed by agent configuration'
  | 'Too many commands running'
  | 'Agent is shutting down';

/**
 * Runs the controller's commands: checks them against the allowlist, tracks the
 * running ones so shutdown can wait for them.
 */
export class CommandRunner {
  private readonly running = new Set<Promise<ExecData>>();
  private readonly allowed: ReadonlySet<string> | null;
  private closed = false;

  constructor(allowedCommands: readonly string[] | null) {
    this.allowed = allowedCommands ? new Set(allowedCommands) : null;
  }

  get runningCount(): number {
    return this.running.size;
  }

  /** Why `cmd` may not run, or undefined if it may. */
  private refusal(cmd: unknown): Refusal | undefined {
    if (typeof cmd !== 'string' || cmd.trim() === '') return 'Empty command';
    if (this.allowed && !this.allowed.has(cmd)) return 'Command not allowed by agent configuration';
    if (this.closed) return 'Agent is shutting down';
    if (this.running.size >= MAX_RUNNING_COMMANDS) return 'Too many commands running';
    return undefined;
  }

  /**
   * Runs a command the controller sent; never rejects. With `output`, its
   * output goes there too while it runs, and the result comes only after
   * `output.end()` resolved: nothing about a command follows its result.
   */
  run(cmd: unknown, timeout: unknown, output?: OutputSink): Promise<ExecData> {
    const refused = this.refusal(cmd);
    if (refused) return Promise.resolve({ exit_code: -1, stdout: '', stderr: refused });
    const timeoutSeconds =
      typeof timeout === 'number' && Number.isFinite(timeout) && timeout > 0
        ? timeout
        : DEFAULT_EXEC_TIMEOUT_SECONDS;
    const p = runShell(cmd as string, {
      timeoutSeconds,
      ...(output && { onOutput: (stream, chunk) => output.write(stream, chunk) }),
    }).then(async (data) => {
      await output?.end();
      return data;
    });
    this.running.add(p);
    void p.then(() => this.running.delete(p));
    return p;
  }

  /**
   * Refuses new commands, then resolves when every running one has finished
   * (each is bounded by its own timeout).
   */
  async drain(): Promise<void> {
    this.closed = true;
    while (this.running.size > 0) await Promise.all([...this.running]);
  }
}
