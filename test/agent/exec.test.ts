import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CommandRunner, OUTPUT_CAP_CHARS, runShell } from '../../agent/exec';
import { waitFor } from '../helpers/wait';
import { alive, tempDir } from './helpers';

describe('running controller commands', () => {
  let tmp: ReturnType<typeof tempDir>;
  const leftovers: number[] = [];
  beforeEach(() => (tmp = tempDir()));
  afterEach(() => {
    for (const pid of leftovers.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    tmp.cleanup();
  });

  it('returns the exit code and both streams', async () => {
    const r = await runShell('echo out; echo err >&2; exit 3', { timeoutSeconds: 10 });
    expect(r).toEqual({ exit_code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(await runShell('true', { timeoutSeconds: 10 })).toEqual({
      exit_code: 0,
      stdout: '',
      stderr: '',
    });
  });

  it('reports a signal-killed shell as minus the signal number', async () => {
    const r = await runShell('kill -TERM $$', { timeoutSeconds: 10 });
    expect(r.exit_code).toBe(-15);
  });

  it('caps each stream at 65536 characters while still draining a much larger output', async () => {
    const started = Date.now();
    const r = await runShell(
      'head -c 5000000 /dev/zero | tr "\\0" a; head -c 100000 /dev/zero | tr "\\0" b >&2',
      {
        timeoutSeconds: 20,
      },
    );
    expect(r.exit_code).toBe(0);
    expect(r.stdout).toHaveLength(OUTPUT_CAP_CHARS);
    expect(r.stdout).toBe('a'.repeat(OUTPUT_CAP_CHARS));
    expect(r.stderr).toBe('b'.repeat(OUTPUT_CAP_CHARS));
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('decodes multi-byte characters split across reads', async () => {
    const r = await runShell("i=0; while [ $i -lt 3000 ]; do printf 'é✓'; i=$((i+1)); done", {
      timeoutSeconds: 20,
    });
    expect(r.stdout).toBe('é✓'.repeat(3000));
  });

  it('kills the whole process group on timeout, background children included', async () => {
    const pidFile = join(tmp.dir, 'bg.pid');
    let shellPid = 0;
    const started = Date.now();
    const r = await runShell(`sleep 30 & echo $! > ${pidFile}; sleep 30`, {
      timeoutSeconds: 0.5,
      onSpawn: (pid) => (shellPid = pid),
    });
    expect(r.exit_code).toBe(-1);
    expect(r.stderr).toBe('Command timed out after 0.5s');
    expect(Date.now() - started).toBeLessThan(5000);
    const bgPid = Number(readFileSync(pidFile, 'utf8').trim());
    expect(bgPid).toBeGreaterThan(0);
    leftovers.push(bgPid);
    await waitFor('the shell to be gone', () => !alive(shellPid), { timeoutMs: 3000 });
    await waitFor('the background sleep to be gone', () => !alive(bgPid), { timeoutMs: 3000 });
  });

  it('does not wait for a background child that keeps the output pipe open', async () => {
    const started = Date.now();
    const r = await runShell('sleep 20 & echo $!; echo done', { timeoutSeconds: 10 });
    const bgPid = Number(r.stdout.split('\n')[0]);
    leftovers.push(bgPid);
    expect(r.exit_code).toBe(0);
    expect(r.stdout).toContain('done');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('refuses empty commands and commands outside the allowlist', async () => {
    const any = new CommandRunner(null);
    expect(await any.run('', 5)).toEqual({ exit_code: -1, stdout: '', stderr: 'Empty command' });
    expect(await any.run(undefined, 5)).toMatchObject({ stderr: 'Empty command' });
    expect(await any.run('echo free', 5)).toMatchObject({ exit_code: 0, stdout: 'free\n' });

    const strict = new CommandRunner(['echo allowed', '/usr/local/bin/reset --hard']);
    expect(await strict.run('echo allowed', 5)).toMatchObject({
      exit_code: 0,
      stdout: 'allowed\n',
    });
    expect(await strict.run('echo allowed; id', 5)).toEqual({
      exit_code: -1,
      stdout: '',
      stderr: 'Command not allowed by agent configuration',
    });
  });

  it('uses the default timeout for a missing or invalid one', async () => {
    const runner = new CommandRunner(null);
    for (const t of [undefined, -1, 'soon', 0]) {
      expect(await runner.run('echo ok', t)).toMatchObject({ exit_code: 0 });
    }
  });

  it('drains running commands and then refuses new ones', async () => {
    const runner = new CommandRunner(null);
    const slow = runner.run('sleep 0.3; echo finished', 10);
    expect(runner.runningCount).toBe(1);
    await runner.drain();
    expect(runner.runningCount).toBe(0);
    await expect(slow).resolves.toMatchObject({ exit_code: 0, stdout: 'finished\n' });
    expect(await runner.run('echo late', 10)).toMatchObject({
      exit_code: -1,
      stderr: 'Agent is shutting down',
    });
  });
});
