import type { CheckpointDto } from '../../common/checkpoint';
import type { CheckpointState } from '../../common/states';
import type { RunnerAction } from './actions';
import type { FleetRow, FleetSnapshot } from './fleet';
import { html, type Html } from './html';

/** Times as the pages show them: UTC, to the second (the same text fleet.js writes). */
export function formatTime(iso: string | null): string {
  return iso ? `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC` : '';
}

/** A duration as the pages show it (the same text fleet.js writes). */
export function formatDuration(ms: number | null): string {
  if (ms === null) return '';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 59_950) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** The fleet page's link to a checkpoint. */
export function checkpointHref(name: string): string {
  return `/ui/checkpoints/${encodeURIComponent(name)}`;
}

function layout(
  title: string,
  body: Html,
  o: { loggedIn: boolean; script?: string } = { loggedIn: false },
): Html {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="referrer" content="no-referrer" />
        <title>${title} · e2epool</title>
        <link rel="stylesheet" href="/ui/assets/ui.css" />
      </head>
      <body>
        <header>
          <a class="brand" href="/ui">e2epool fleet</a>
          ${o.loggedIn ? html`<form method="post" action="/ui/logout" class="logout"><button type="submit">Log out</button></form>` : ''}
        </header>
        <main>${body}</main>
        ${o.script ? html`<script src="/ui/assets/${o.script}"></script>` : ''}
      </body>
    </html> `;
}

/** The login form; `error` is shown above it. */
export function loginPage(o: { error?: string; next?: string; configured: boolean }): Html {
  const form = o.configured
    ? html`<form method="post" action="/ui/login" class="login">
        <label for="token">Admin token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          required
          autofocus
        />
        ${o.next ? html`<input type="hidden" name="next" value="${o.next}" />` : ''}
        <button type="submit">Log in</button>
      </form>`
    : html`<p>The fleet page needs <code>E2EPOOL_ADMIN_TOKEN</code> in the API's environment.</p>`;
  return layout(
    'Log in',
    html`<h1>Log in</h1>
      ${o.error ? html`<p class="error" role="alert">${o.error}</p>` : ''} ${form}`,
  );
}

/** A page that only says what went wrong. */
export function errorPage(status: number, message: string, loggedIn: boolean): Html {
  return layout(
    `Error ${status}`,
    html`<h1>${status === 404 ? 'Not found' : 'Error'}</h1>
      <p class="error" role="alert">${message}</p>
      <p><a href="/ui">Back to the fleet</a></p>`,
    { loggedIn },
  );
}

const stateBadge = (state: CheckpointState) =>
  html`<span class="state state-${state}">${state}</span>`;

/** A runner without an agent_token: its CI jobs hold the credential its agent uses. */
const SHARED_CREDENTIAL = html`<span
  class="shared-credential"
  title="no agent_token: this runner's CI jobs hold the credential its agent uses"
  >shared credential</span
>`;

function agentCell(r: FleetRow): Html {
  const seen =
    r.agent === 'connected' || !r.agent_last_seen_at
      ? ''
      : html` <span class="muted">last seen ${formatTime(r.agent_last_seen_at)}</span>`;
  const shared = r.has_agent_token ? '' : html` ${SHARED_CREDENTIAL}`;
  return html`<span class="agent agent-${r.agent.replace(' ', '-')}">${r.agent}</span
    >${seen}${shared}`;
}

function gitlabCell(r: FleetRow, gitlabConfigured: boolean): Html {
  if (r.gitlab_runner_id === null) return html`<span class="muted">no gitlab_runner_id</span>`;
  const byUs = r.paused_by_e2epool_since
    ? html` <span class="muted">by e2epool since ${formatTime(r.paused_by_e2epool_since)}</span>`
    : '';
  if (!gitlabConfigured || !r.gitlab) {
    return r.paused_by_e2epool_since
      ? html`<span class="paused">paused</span>${byUs}`
      : html`<span class="muted">not paused by e2epool</span>`;
  }
  const g = r.gitlab;
  const answer =
    g.paused === null
      ? html`<span class="muted">${g.error ? 'GitLab did not answer' : 'asking GitLab…'}</span>`
      : g.paused
        ? html`<span class="paused">paused</span>`
        : html`<span class="active">active</span>`;
  const err = g.error ? html` <span class="error" title="${g.error}">(${g.error})</span>` : '';
  return html`${answer}${byUs}${err}`;
}

function checkpointCell(r: FleetRow): Html {
  const c = r.checkpoint;
  if (!c) return html`<span class="muted">none yet</span>`;
  return html`${c.active ? '' : html`<span class="muted">last: </span>`}<a
      href="${checkpointHref(c.name)}"
      >${c.name}</a
    >
    ${stateBadge(c.state)}${verifiedMark(c.verified)}`;
}

/** The proof of reset beside a checkpoint's state; nothing while there is no answer. */
function verifiedMark(v: boolean | null): Html | string {
  if (v === null) return '';
  return v
    ? html` <span class="muted">verified</span>`
    : html` <span class="error">NOT verified</span>`;
}

/** The checkpoint page's proof-of-reset fact: the answer and its detail. */
function verifiedFact(f: CheckpointFactsDto): string {
  const answer = f.verified === null ? 'no' : f.verified ? 'yes' : 'FAILED';
  return f.verify_detail ? `${answer}: ${f.verify_detail}` : f.verified === null ? '' : answer;
}

function lastResetCell(r: FleetRow): Html {
  const l = r.last_reset;
  if (!l) return html`<span class="muted">none yet</span>`;
  return html`${formatDuration(l.duration_ms)}
    <span class="muted">${l.state}, ended ${formatTime(l.ended_at)}</span>`;
}

/** A button's label. */
const ACTION_LABEL: Record<RunnerAction, string> = {
  drain: 'Drain',
  undrain: 'Undrain',
  quarantine: 'Quarantine',
  unquarantine: 'Unquarantine',
  retry: 'Retry',
  release: 'Release',
};

/**
 * A runner button: a form POST with the session's form token; fleet.js asks
 * for confirmation (and a quarantine's reason) in a dialog before it is sent.
 * fleet.js builds the same.
 */
function actionForm(r: FleetRow, a: RunnerAction, csrf: string): Html {
  return html`<form
    method="post"
    action="/ui/runners/${encodeURIComponent(r.runner_id)}/${a}"
    class="runner-action ${a}"
    data-action="${a}"
    data-runner="${r.runner_id}"
    data-checkpoint="${r.checkpoint?.name ?? ''}"
  >
    <input type="hidden" name="csrf" value="${csrf}" />
    <button type="submit">${ACTION_LABEL[a]}</button>
  </form>`;
}

/** The buttons of a row's actions cell (fleet.js decides the same way). */
export function rowActions(r: FleetRow): RunnerAction[] {
  const out: RunnerAction[] = [];
  // Every runner: an inventory.yml runner's drain and quarantine are kept in runner_state.
  out.push(r.draining ? 'undrain' : 'drain');
  if (!r.quarantine) out.push('quarantine');
  if (r.checkpoint?.state === 'needs_attention') out.push('retry', 'release');
  return out;
}

/** The quarantine cell: why, since when, and the unquarantine button (fleet.js builds the same). */
function quarantineCell(r: FleetRow, csrf: string): Html {
  const q = r.quarantine;
  if (!q) return html`<span class="muted">no</span>`;
  return html`<span class="quarantined" title="${q.reason}">quarantined</span>
    <span class="muted">(${q.source}) since ${formatTime(q.quarantined_at)}:</span>
    <span class="quarantine-reason">${q.reason}</span> ${actionForm(r, 'unquarantine', csrf)}`;
}

/**
 * The baseline-refresh cell: the runner's running or last refresh workflow
 * (its id, linked to the Temporal Web UI when E2EPOOL_TEMPORAL_UI_URL is
 * set), its status and, while it runs, its step (fleet.js builds the same).
 */
function refreshCell(r: FleetRow): Html {
  const f = r.refresh;
  if (!f) return html`<span class="muted">${r.backend === 'proxmox' ? 'none' : ''}</span>`;
  const id = f.url
    ? html`<a class="refresh-id" href="${f.url}" target="_blank" rel="noopener"
        >${f.workflow_id}</a
      >`
    : html`<span class="refresh-id">${f.workflow_id}</span>`;
  return html`${id}
    <span class="refresh-status refresh-${f.status}">${f.status}</span
    >${f.step ? html` <span class="refresh-step">${f.step}</span>` : ''}${f.rollout_id ? html` <span class="muted refresh-rollout">(rollout ${f.rollout_id})</span>` : ''}`;
}

/** One fleet table row (fleet.js builds the same cells from /ui/api/fleet). */
export function fleetRow(r: FleetRow, gitlabConfigured: boolean, csrf: string): Html {
  return html`<tr data-runner="${r.runner_id}">
    <td class="c-runner">${r.runner_id}</td>
    <td class="c-backend">
      ${r.backend}${r.baseline ? html` <span class="muted baseline">baseline ${r.baseline}</span>` : ''}${r.draining ? html` <span class="draining">draining</span>` : ''}
    </td>
    <td class="c-agent">${agentCell(r)}</td>
    <td class="c-gitlab">${gitlabCell(r, gitlabConfigured)}</td>
    <td class="c-checkpoint">${checkpointCell(r)}</td>
    <td class="c-quarantine">${quarantineCell(r, csrf)}</td>
    <td class="c-held">
      ${r.held_until ? html`<span class="held">until ${formatTime(r.held_until)}</span>` : ''}
    </td>
    <td class="c-refresh">${refreshCell(r)}</td>
    <td class="c-reset">${lastResetCell(r)}</td>
    <td class="c-actions">${rowActions(r).map((a) => actionForm(r, a, csrf))}</td>
  </tr>`;
}

/**
 * The dialog fleet.js opens for a runner button: what the action does, a
 * quarantine's reason, Confirm or Cancel. Its own form sends the action, so a
 * refresh of the table while it is open changes nothing.
 */
function confirmDialog(csrf: string): Html {
  return html`<dialog id="confirm-action">
    <form method="post" id="confirm-form">
      <p id="confirm-text"></p>
      <input type="hidden" name="csrf" value="${csrf}" />
      <p id="confirm-reason-field" hidden>
        <label for="confirm-reason">Reason (shown on this page and in the API)</label><br />
        <textarea id="confirm-reason" name="reason" maxlength="500" rows="3" cols="50"></textarea>
      </p>
      <button type="submit" id="confirm-ok">Confirm</button>
      <button type="button" id="confirm-cancel">Cancel</button>
    </form>
  </dialog>`;
}

/** The fleet page: a table refreshed by fleet.js every `refreshMs`; `csrf`: the session's form token. */
export function fleetPage(
  s: FleetSnapshot,
  refreshMs: number,
  notice: string | null = null,
  csrf = '',
): Html {
  return layout(
    'Fleet',
    html`<h1>Fleet <span class="muted count">${s.runners.length} runners</span></h1>
      ${notice ? html`<p class="notice" role="status">${notice}</p>` : ''}
      <p id="fleet-status" class="muted" aria-live="polite">as of ${formatTime(s.generated_at)}</p>
      <table
        id="fleet"
        data-src="/ui/api/fleet"
        data-refresh-ms="${refreshMs}"
        data-gitlab="${s.gitlab_configured ? 'yes' : 'no'}"
        data-csrf="${csrf}"
      >
        <thead>
          <tr>
            <th>runner</th>
            <th>backend</th>
            <th>agent</th>
            <th>GitLab</th>
            <th>checkpoint</th>
            <th>quarantine</th>
            <th>held for debugging</th>
            <th>baseline refresh</th>
            <th>last reset</th>
            <th>actions</th>
          </tr>
        </thead>
        <tbody>
          ${s.runners.map((r) => fleetRow(r, s.gitlab_configured, csrf))}
        </tbody>
      </table>
      ${s.runners.length === 0 ? html`<p class="muted">The inventory has no runners.</p>` : ''}
      ${confirmDialog(csrf)}`,
    { loggedIn: true, script: 'fleet.js' },
  );
}

/** A checkpoint's facts as the checkpoint page and /ui/api/checkpoints/{name} show them. */
export interface CheckpointFactsDto extends CheckpointDto {
  backend: string;
  active: boolean;
  ended_at: string | null;
  reset_attempts: number;
  error_detail: string | null;
  held_until: string | null;
}

/** The checkpoint page: its facts, and its log followed live by checkpoint.js; `csrf`: the session's form token. */
export function checkpointPage(f: CheckpointFactsDto, notice: string | null, csrf = ''): Html {
  const fact = (label: string, key: keyof CheckpointFactsDto, value: Html | string) =>
    html`<tr>
      <th>${label}</th>
      <td data-fact="${key}">${value}</td>
    </tr>`;
  const href = checkpointHref(f.name);
  return layout(
    f.name,
    html`<p><a href="/ui">← fleet</a></p>
      <h1>${f.name}</h1>
      ${notice ? html`<p class="notice" role="status">${notice}</p>` : ''}
      <table class="facts" id="facts" data-src="/ui/api/checkpoints/${encodeURIComponent(f.name)}">
        ${fact('runner', 'runner_id', f.runner_id)} ${fact('backend', 'backend', f.backend)}
        ${fact('job', 'job_id', f.job_id)} ${fact('state', 'state', stateBadge(f.state))}
        ${fact('finalize', 'finalize_status', f.finalize_status ? `${f.finalize_status} (${f.finalize_source ?? 'unknown source'})` : '')}
        ${fact('created', 'created_at', formatTime(f.created_at))}
        ${fact('finalized', 'finalized_at', formatTime(f.finalized_at))}
        ${fact('ended', 'ended_at', formatTime(f.ended_at))}
        ${fact('reset rounds', 'reset_attempts', String(f.reset_attempts))}
        ${fact('reset verified', 'verified', verifiedFact(f))}
        ${fact('held for debugging', 'held_until', f.held_until ? `until ${formatTime(f.held_until)}` : '')}
        ${fact('last error', 'error_detail', f.error_detail ? html`<pre>${f.error_detail}</pre>` : '')}
      </table>
      <form
        method="post"
        action="${href}/release-hold"
        id="release-hold"
        ${f.held_until ? '' : html`hidden`}
      >
        <input type="hidden" name="csrf" value="${csrf}" />
        <button type="submit">Release hold</button>
        <span class="muted">reset the runner and unpause it now</span>
      </form>
      <h2>Log</h2>
      <p id="log-status" class="muted" aria-live="polite">loading…</p>
      <div id="log" class="log" data-src="${href}/logs"></div>
      <noscript
        ><p>The live log needs JavaScript; <a href="${href}/logs">the log as JSON</a>.</p></noscript
      >`,
    { loggedIn: true, script: 'checkpoint.js' },
  );
}
