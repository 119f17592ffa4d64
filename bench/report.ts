/**
 * A benchmark's figures for `npm run bench -- --record` (bench/run.ts): each
 * bench prints them for people and, when E2EPOOL_BENCH_REPORT names a file,
 * appends them there as one JSON line for the recorder.
 */
import { appendFileSync } from 'node:fs';

/** Figures of one bench: numbers, or a text already formatted for the record. */
export type Figures = Record<string, number | string>;

export function report(bench: string, figures: Figures): void {
  const file = process.env.E2EPOOL_BENCH_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify({ bench, ...figures })}\n`);
}
