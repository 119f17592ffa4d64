/** What the benchmarks measure with: quantiles, a process's RSS, waiting for an API. */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The `q` quantile of ascending `sorted` (NaN when empty). */
export function quantile(sorted: number[], q: number): number {
  return sorted.length === 0
    ? NaN
    : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** Resident memory of a process in MiB (NaN once it is gone). */
export function rssMiB(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Waits up to 2 minutes for `GET /healthz` to answer 200; fails at once if `child` exits. */
export async function waitHealthy(url: string, child?: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child && child.exitCode !== null)
      throw new Error(`${url}: the process exited (${child.exitCode})`);
    try {
      if ((await fetch(`${url}/healthz`)).status === 200) return;
    } catch {
      /* starting */
    }
    await sleep(200);
  }
  throw new Error(`${url} did not become healthy`);
}

/** CPU time (user + system) of a process so far, in seconds; 0 once it is gone. */
export function cpuSeconds(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

/** Every Postgres server process of the machine (the bench's databases live there). */
export function postgresCpuSeconds(): number {
  let total = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'postgres')
        total += cpuSeconds(Number(d));
    } catch {
      /* gone */
    }
  }
  return total;
}
