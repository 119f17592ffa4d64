const LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'component']);

/** Makes one pino JSON line readable in a terminal; other lines pass through. */
export function formatLogLine(source: string, line: string): string {
  if (!line.startsWith('{')) return `[${source}] ${line}`;
  try {
    const rec = JSON.parse(line) as Record<string, unknown>;
    const time = typeof rec.time === 'string' ? rec.time.slice(11, 19) : '';
    const level = LEVELS[Number(rec.level)] ?? String(rec.level);
    const extra = Object.entries(rec)
      .filter(([k]) => !SKIP.has(k))
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    return `${time} [${source}] ${level.padEnd(5)} ${String(rec.msg ?? '')}${extra ? `  ${extra}` : ''}`;
  } catch {
    return `[${source}] ${line}`;
  }
}
