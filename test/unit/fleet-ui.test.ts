import pino from 'pino';
import { AdminToken } from '../../api/auth';
import type { FleetRow } from '../../api/ui/fleet';
import { GitLabPauseCache } from '../../api/ui/gitlab-pauses';
import { escapeHtml, html } from '../../api/ui/html';
import { checkpointPage, fleetPage, formatDuration, loginPage } from '../../api/ui/pages';
import { SESSION_SECONDS, UiSessions } from '../../api/ui/session';
import { fail } from '../../common/fail';

const XSS = `<script>alert('x')</script>"&`;
const ESCAPED = '&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;';

const row = (over: Partial<FleetRow> = {}): FleetRow => ({
  runner_id: 'r1',
  backend: 'bare_metal',
  baseline: null,
  draining: false,
  source: 'api',
  agent: 'connected',
  agent_last_seen_at: null,
  has_agent_token: true,
  gitlab_runner_id: null,
  gitlab: null,
  paused_by_e2epool_since: null,
  checkpoint: null,
  quarantine: null,
  held_until: null,
  refresh: null,
  last_reset: null,
  ...over,
});

describe('fleet page HTML', () => {
  it('escapes every interpolated value; Html passes as markup', () => {
    expect(escapeHtml(XSS)).toBe(ESCAPED);
    expect(html`<p title="${XSS}">${XSS}${html`<b>${XSS}</b>`}</p>`.text).toBe(
      `<p title="${ESCAPED}">${ESCAPED}<b>${ESCAPED}</b></p>`,
    );
    expect(html`${[XSS, html`<i>ok</i>`]}${null}${undefined}${false}${0}`.text).toBe(
      `${ESCAPED}<i>ok</i>0`,
    );
  });

  it('a runner id, a checkpoint name or an error that holds markup is shown as text', () => {
    const page = fleetPage(
      {
        generated_at: '2026-01-01T00:00:00.000Z',
        gitlab_configured: true,
        runners: [
          row({
            runner_id: XSS,
            gitlab_runner_id: 7,
            gitlab: { paused: null, checked_at: null, error: XSS },
            checkpoint: {
              name: XSS,
              job_id: '1',
              state: 'created',
              active: true,
              created_at: '2026-01-01T00:00:00.000Z',
              ended_at: null,
              verified: false,
            },
          }),
        ],
      },
      5000,
    ).text;
    expect(page).not.toContain('<script>alert');
    expect(page).toContain(`<tr data-runner="${ESCAPED}">`);
    expect(page).toContain(`<td class="c-runner">${ESCAPED}</td>`);
    // In a URL too: percent-encoded, then escaped.
    expect(page).toContain(
      `href="/ui/checkpoints/${encodeURIComponent(XSS).replace(/'/g, '&#39;')}"`,
    );
    expect(page).toContain(`title="${ESCAPED}"`);
    // The only scripts are our own file.
    expect(page.match(/<script/g)).toEqual(['<script']);
    expect(page).toContain('<script src="/ui/assets/fleet.js"></script>');

    const cp = checkpointPage(
      {
        name: 'job-1-1700000000-abcdef01',
        runner_id: 'r1',
        backend: 'bare_metal',
        job_id: '1',
        state: 'needs_attention',
        active: true,
        finalize_status: 'failure',
        finalize_source: 'hook',
        created_at: '2026-01-01T00:00:00.000Z',
        finalized_at: null,
        ended_at: null,
        reset_attempts: 1,
        error_detail: XSS,
        held_until: null,
        verified: false,
        verify_detail: XSS,
      },
      null,
    ).text;
    expect(cp).toContain(`<pre>${ESCAPED}</pre>`);
    expect(cp).toContain(`FAILED: ${ESCAPED}`);
    expect(cp).not.toContain('<script>alert');
    expect(loginPage({ configured: true, error: XSS, next: XSS }).text).not.toContain(
      '<script>alert',
    );
  });

  it('formats durations for people', () => {
    expect([0, 999, 1000, 12_345, 59_999, 60_000, 754_000].map(formatDuration)).toEqual([
      '0 ms',
      '999 ms',
      '1.0 s',
      '12.3 s',
      '1 min 0 s',
      '1 min 0 s',
      '12 min 34 s',
    ]);
  });
});

describe('fleet page sessions', () => {
  const admin = new AdminToken('the-admin-token');

  it('accepts what it issued until it expires; never contains the token', () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const sessions = new UiSessions(admin, () => now);
    const value = sessions.issue();
    expect(value).not.toContain('the-admin-token');
    expect(sessions.verify(value)).toBe(true);
    expect(sessions.issue()).not.toBe(value);
    now += SESSION_SECONDS * 1000 - 1000;
    expect(sessions.verify(value)).toBe(true);
    now += 1000;
    expect(sessions.verify(value)).toBe(false);
  });

  it('refuses a changed value, a session of another admin token, and anything without one', () => {
    const sessions = new UiSessions(admin);
    const value = sessions.issue();
    const [exp, id, mac] = value.split('.') as [string, string, string];
    // A later expiry with the old mac.
    expect(sessions.verify(`${Number(exp) + 3600}.${id}.${mac}`)).toBe(false);
    expect(
      sessions.verify(`${exp}.${id.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))}.${mac}`),
    ).toBe(false);
    expect(sessions.verify(`${exp}.${id}.${mac.slice(0, -1)}`)).toBe(false);
    expect(new UiSessions(new AdminToken('rotated')).verify(value)).toBe(false);
    expect(new UiSessions(new AdminToken(undefined)).verify(value)).toBe(false);
    for (const v of [undefined, '', 'the-admin-token', `${value}.x`, value.replace(/\./g, ',')])
      expect(sessions.verify(v)).toBe(false);
  });
});

describe('GitLab pause cache', () => {
  const log = pino({ level: 'silent' });

  it('never waits: answers what it knows, asks GitLab once per runner per max age, a bounded number at a time', async () => {
    let inFlight = 0;
    let most = 0;
    const asked: number[] = [];
    const client = {
      runnerPaused: async (id: number) => {
        asked.push(id);
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, 5));
        inFlight--;
        return id % 2 === 0;
      },
    };
    const cache = new GitLabPauseCache(client, { maxAgeMs: 60_000, concurrency: 3, log });
    const ids = Array.from({ length: 20 }, (_, i) => i + 1);
    const first = cache.lookup(ids);
    expect([...first.values()].every((p) => p.paused === null && p.checkedAt === null)).toBe(true);
    // Lookups during a pass start no second one.
    cache.lookup(ids);
    await cache.settled();
    expect(asked.sort((a, b) => a - b)).toEqual(ids);
    expect(most).toBe(3);
    const second = cache.lookup(ids);
    expect(second.get(2)).toMatchObject({ paused: true, error: null });
    expect(second.get(3)).toMatchObject({ paused: false, error: null });
    await cache.settled();
    expect(asked).toHaveLength(20); // fresh answers: GitLab not asked again

    // e2epool's own pause of runner 3 makes its answer stale: only it is asked again.
    cache.lookup(ids, new Map([[3, new Date(Date.now() + 1000)]]));
    await cache.settled();
    expect(asked.slice(20)).toEqual([3]);
  });

  it('keeps the last answer when GitLab fails, and stops asking until Retry-After on a 429', async () => {
    let mode: 'ok' | 'down' | 'limited' = 'ok';
    const asked: number[] = [];
    const client = {
      runnerPaused: async (id: number) => {
        asked.push(id);
        if (mode === 'down') throw fail('GitLabUnavailable', 'GitLab GET /runners/1: 502');
        if (mode === 'limited')
          throw fail('GitLabRateLimited', 'GitLab GET /runners/1: 429', {
            nextRetryDelayMs: 60_000,
          });
        return true;
      },
    };
    const cache = new GitLabPauseCache(client, { maxAgeMs: 0, concurrency: 1, log });
    cache.lookup([1, 2]);
    await cache.settled();
    mode = 'down';
    cache.lookup([1, 2]);
    await cache.settled();
    expect(cache.lookup([1, 2]).get(1)).toMatchObject({
      paused: true,
      error: 'GitLabUnavailable: GitLab GET /runners/1: 502',
    });
    await cache.settled();
    mode = 'limited';
    const before = asked.length;
    cache.lookup([1, 2]);
    await cache.settled();
    // The first 429 ends the pass: runner 2 is not asked.
    expect(asked.length - before).toBe(1);
    cache.lookup([1, 2]);
    await cache.settled();
    expect(asked.length - before).toBe(1);
    // A runner that left the inventory is forgotten.
    expect([...cache.lookup([2]).keys()]).toEqual([2]);
  });
});
