import { cell, EXIT, exitCodeOfStatus, table } from '../../cli/operator-output';

describe('operator command output', () => {
  it('maps the controller’s refusals to exit codes: 401/403 config, 423/429/502/503/504 temporary, other 1', () => {
    expect([401, 403].map(exitCodeOfStatus)).toEqual([EXIT.config, EXIT.config]);
    expect([423, 429, 502, 503, 504].map(exitCodeOfStatus)).toEqual(Array(5).fill(EXIT.temporary));
    expect([400, 404, 409, 422, 500].map(exitCodeOfStatus)).toEqual(Array(5).fill(EXIT.failed));
    expect(EXIT).toEqual({ ok: 0, failed: 1, usage: 2, temporary: 75, config: 78 });
  });

  it('shows control characters escaped, null as -, objects as JSON; pads every column but the last', () => {
    expect(cell('a\u001b[2Jb\r\n\u009b\u2028')).toBe('a\\x1b[2Jb\\x0d\\x0a\\x9b\\x2028');
    expect([cell(null), cell(undefined), cell(''), cell(0), cell(['x'])]).toEqual([
      '-',
      '-',
      '-',
      '0',
      '["x"]',
    ]);
    expect(
      table(
        ['A', 'LONGER'],
        [
          ['wide value', null],
          ['b', 'x'],
        ],
      ),
    ).toBe(['A           LONGER', 'wide value  -', 'b           x'].join('\n'));
  });
});
