/**
 * Where a lifecycle's time goes, in counts: Postgres round trips,
 * transactions and NOTIFYs made by this process (every query of the pg
 * driver, the API's and the worker's alike), and what each workflow run's
 * history holds (workflow tasks, activities by name, timers, search-attribute
 * and memo upserts). bench/lifecycle.ts prints them for e2epool and the
 * baseline side by side.
 */
import type { Client, WorkflowHandle } from '@temporalio/client';

/** Postgres counts since install (or since a snapshot, via `diff`). */
export interface PgCounts {
  roundTrips: number;
  transactions: number;
  notifies: number;
  /** Round trips by statement, its first words (`INSERT INTO operation_logs`, `BEGIN`, ...). */
  byStatement: Record<string, number>;
}

const counts: PgCounts = { roundTrips: 0, transactions: 0, notifies: 0, byStatement: {} };
const inTx = new WeakSet<object>();

function statementOf(sql: string): string {
  const words = sql.replace(/\s+/g, ' ').trim().split(' ');
  const n = /^(INSERT|DELETE)$/i.test(words[0] ?? '')
    ? 3
    : /^(UPDATE|WITH)$/i.test(words[0] ?? '')
      ? 2
      : 1;
  const head = words.slice(0, n).join(' ');
  if (/^SELECT$/i.test(head)) {
    const from = /\bFROM\s+(\w+)/i.exec(sql);
    if (/pg_notify/i.test(sql)) return 'SELECT pg_notify';
    return from ? `SELECT … FROM ${from[1]}` : 'SELECT';
  }
  return head;
}

/** Counts every query of the pg driver in this process from now on. Idempotent. */
export function countPostgres(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pg = require('pg') as { Client: { prototype: Record<string, unknown> } };
  const proto = pg.Client.prototype;
  if ((proto as { __counted?: boolean }).__counted) return;
  (proto as { __counted?: boolean }).__counted = true;
  const query = proto.query as (...args: unknown[]) => unknown;
  proto.query = function (this: object, ...args: unknown[]) {
    const first = args[0];
    const sql =
      typeof first === 'string'
        ? first
        : typeof (first as { text?: unknown })?.text === 'string'
          ? (first as { text: string }).text
          : '';
    counts.roundTrips++;
    const st = statementOf(sql);
    counts.byStatement[st] = (counts.byStatement[st] ?? 0) + 1;
    if (/pg_notify|^\s*NOTIFY/i.test(sql)) counts.notifies++;
    if (/^\s*(BEGIN|START TRANSACTION)/i.test(sql)) inTx.add(this);
    else if (/^\s*(COMMIT|ROLLBACK)/i.test(sql)) {
      inTx.delete(this);
      counts.transactions++;
    } else if (!inTx.has(this)) counts.transactions++;
    return query.apply(this, args);
  };
}

export function pgSnapshot(): PgCounts {
  return { ...counts, byStatement: { ...counts.byStatement } };
}

export function pgDiff(a: PgCounts, b: PgCounts): PgCounts {
  const byStatement: Record<string, number> = {};
  for (const [k, v] of Object.entries(b.byStatement)) {
    const d = v - (a.byStatement[k] ?? 0);
    if (d) byStatement[k] = d;
  }
  return {
    roundTrips: b.roundTrips - a.roundTrips,
    transactions: b.transactions - a.transactions,
    notifies: b.notifies - a.notifies,
    byStatement,
  };
}

/** What one workflow run's history holds. */
export interface HistoryCounts {
  events: number;
  workflowTasks: number;
  activities: number;
  localActivities: number;
  timers: number;
  searchAttributeUpserts: number;
  memoUpserts: number;
  /** Activities scheduled, by type, in order of first appearance. */
  activityNames: Record<string, number>;
}

export async function historyCounts(
  client: Client,
  workflowId: string,
  runId?: string,
): Promise<HistoryCounts> {
  const handle: WorkflowHandle = client.workflow.getHandle(workflowId, runId);
  const events = (await handle.fetchHistory()).events ?? [];
  const c: HistoryCounts = {
    events: events.length,
    workflowTasks: 0,
    activities: 0,
    localActivities: 0,
    timers: 0,
    searchAttributeUpserts: 0,
    memoUpserts: 0,
    activityNames: {},
  };
  for (const e of events) {
    if (e.workflowTaskCompletedEventAttributes) c.workflowTasks++;
    if (e.timerStartedEventAttributes) c.timers++;
    if (e.upsertWorkflowSearchAttributesEventAttributes) c.searchAttributeUpserts++;
    if (e.workflowPropertiesModifiedEventAttributes) c.memoUpserts++;
    if (e.markerRecordedEventAttributes?.markerName === 'core_local_activity') c.localActivities++;
    const a = e.activityTaskScheduledEventAttributes;
    if (a) {
      c.activities++;
      const name = a.activityType?.name ?? '?';
      c.activityNames[name] = (c.activityNames[name] ?? 0) + 1;
    }
  }
  return c;
}

/** Per-lifecycle means of `xs` (numbers, or counts by name). */
export function meanOf<T extends object>(xs: T[]): T {
  const out: Record<string, unknown> = {};
  for (const x of xs) {
    for (const [k, v] of Object.entries(x)) {
      if (typeof v === 'number') out[k] = ((out[k] as number) ?? 0) + v / xs.length;
      else {
        const m = ((out[k] as Record<string, number>) ??= {});
        for (const [n, c] of Object.entries(v as Record<string, number>))
          m[n] = (m[n] ?? 0) + c / xs.length;
      }
    }
  }
  return out as T;
}

/** The counts of both sides as a table: one row per figure, `e2epool | baseline`. */
export function countsTable(
  title: string,
  sides: Array<{ name: string; pg: PgCounts; history?: HistoryCounts }>,
): string {
  const f = (n: number | undefined) => (n === undefined ? '-' : Number(n.toFixed(2)).toString());
  const rows: Array<[string, Array<number | undefined>]> = [
    ['pg round trips', sides.map((s) => s.pg.roundTrips)],
    ['pg transactions', sides.map((s) => s.pg.transactions)],
    ['pg NOTIFYs', sides.map((s) => s.pg.notifies)],
  ];
  const h = (k: keyof Omit<HistoryCounts, 'activityNames'>, label: string) =>
    rows.push([label, sides.map((s) => s.history?.[k])]);
  h('events', 'history events');
  h('workflowTasks', 'workflow tasks');
  h('activities', 'activities');
  h('localActivities', 'local activities');
  h('timers', 'timers');
  h('searchAttributeUpserts', 'search-attribute upserts');
  h('memoUpserts', 'memo upserts');
  const width = Math.max(...rows.map(([l]) => l.length), 26);
  const lines = [
    `\n${title}`,
    `${''.padEnd(width)}  ${sides.map((s) => s.name.padEnd(10)).join(' ')}`,
  ];
  for (const [label, vs] of rows)
    lines.push(`${label.padEnd(width)}  ${vs.map((v) => f(v).padEnd(10)).join(' ')}`);
  for (const s of sides) {
    if (s.history && Object.keys(s.history.activityNames).length)
      lines.push(
        `${s.name} activities: ${Object.entries(s.history.activityNames)
          .map(([n, c]) => `${n}×${f(c)}`)
          .join(', ')}`,
      );
    const st = Object.entries(s.pg.byStatement).sort((a, b) => b[1] - a[1]);
    if (st.length)
      lines.push(`${s.name} statements: ${st.map(([n, c]) => `${n} ×${f(c)}`).join('; ')}`);
  }
  return `${lines.join('\n')}\n`;
}
