import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

/**
 * Remembers the pids `npm run dev` started, so a run that was killed hard
 * (no chance to stop its children) is cleaned up by the next one.
 */
export class ProcessRegistry {
  private readonly pids: Record<string, number> = {};

  constructor(private readonly file: string) {}

  /** Kills processes left by a previous run that did not shut down. Returns what it killed. */
  reapStale(): string[] {
    if (!existsSync(this.file)) return [];
    const killed: string[] = [];
    try {
      const old = JSON.parse(readFileSync(this.file, 'utf8')) as Record<string, number>;
      for (const [name, pid] of Object.entries(old)) {
        if (isOurs(pid, name)) {
          try {
            process.kill(pid, 'SIGTERM');
            killed.push(`${name} (pid ${pid})`);
          } catch {
            /* already gone */
          }
        }
      }
    } catch {
      /* unreadable: nothing to reap */
    }
    rmSync(this.file, { force: true });
    return killed;
  }

  add(name: string, pid: number | undefined): void {
    if (pid === undefined) return;
    this.pids[name] = pid;
    writeFileSync(this.file, JSON.stringify(this.pids));
  }

  clear(): void {
    rmSync(this.file, { force: true });
  }
}

/** True if `pid` is alive and (where /proc exists) still looks like what we started. */
function isOurs(pid: number, name: string): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const cmdlineFile = `/proc/${pid}/cmdline`;
  if (!existsSync(cmdlineFile)) return true;
  const cmd = readFileSync(cmdlineFile, 'utf8');
  const expect =
    name === 'temporal' ? 'temporal' : name === 'postgres' ? 'postgres-main' : 'cli/main';
  return cmd.includes(expect);
}
