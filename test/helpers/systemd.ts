import { hasCommand, itNeeding } from './required';

/** Reading systemd unit files in tests. */

/** systemd unit syntax: sections, `Key=value` lines, comments, `\` continuations. */
export function parseUnit(text: string): Map<string, Array<[string, string]>> {
  const sections = new Map<string, Array<[string, string]>>();
  let current: Array<[string, string]> | undefined;
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const section = /^\[([A-Za-z]+)\]$/.exec(line);
    if (section) {
      current = [];
      sections.set(section[1]!, current);
      return;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (!kv || !current) throw new Error(`line ${i + 1}: not "Key=value" in a section: ${raw}`);
    current.push([kv[1]!, kv[2]!]);
  });
  return sections;
}

/**
 * `it` for a test that runs `systemd-analyze verify`: it fails under CI=true
 * when systemd-analyze is missing, and is skipped (saying so) elsewhere.
 */
export const itWithSystemdAnalyze = itNeeding(
  hasCommand('systemd-analyze'),
  'systemd-analyze',
  'apt-get install systemd',
);
