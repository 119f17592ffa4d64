/** What the benchmarks measure with: quantiles, a process's RSS, waiting for an API. */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

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
