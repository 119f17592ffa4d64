/**
 * The fleet page's stylesheet and scripts, served from /ui/assets/. They
 * live here as strings so `tsc` ships them in dist/ with no build step and
 * the Content-Security-Policy can forbid inline scripts and styles. The
 * scripts put text into the page only through textContent and attributes,
 * never as markup, and speak only to same-origin /ui routes.
 */

const css = `
:root { color-scheme: light dark; --muted: #777; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; }
header { display: flex; align-items: center; justify-content: space-between; padding: 8px 16px; border-bottom: 1px solid #8884; }
header .brand { font-weight: 600; text-decoration: none; color: inherit; }
main { padding: 8px 16px; }
h1 { font-size: 20px; }
h1 .count { font-size: 14px; font-weight: normal; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #8883; vertical-align: top; }
#fleet th { position: sticky; top: 0; background: Canvas; }
.muted { color: var(--muted); }
.error { color: var(--bad); }
.notice { color: var(--ok); }
.agent-connected, .active { color: var(--ok); }
.agent-unreachable { color: var(--bad); font-weight: 600; }
.agent-disconnected, .paused, .held, .shared-credential, .draining { color: var(--warn); }
.quarantined { color: var(--bad); font-weight: 600; }
.refresh-running { color: var(--warn); font-weight: 600; }
.refresh-failed, .refresh-terminated, .refresh-timed_out { color: var(--bad); }
form.unquarantine { display: inline; margin-left: 6px; }
form.runner-action { display: inline; }
.c-actions form.runner-action + form.runner-action { margin-left: 4px; }
dialog#confirm-action { max-width: 32em; }
dialog#confirm-action textarea { width: 100%; box-sizing: border-box; }
.state { padding: 0 4px; border-radius: 3px; border: 1px solid currentColor; font-size: 12px; }
.state-needs_attention, .state-reset_failed, .state-create_failed { color: var(--bad); }
.state-created, .state-finalize_queued { color: var(--warn); }
.state-reset, .state-deleted, .state-gc_reset { color: var(--ok); }
.facts th { width: 12em; }
.facts pre { margin: 0; white-space: pre-wrap; }
form.login { display: flex; flex-direction: column; gap: 8px; max-width: 24em; }
.log { font: 12px/1.4 ui-monospace, monospace; background: #8881; padding: 8px; max-height: 70vh; overflow: auto; }
.log-line { white-space: pre-wrap; word-break: break-all; }
.log-line .at { color: var(--muted); margin-right: 8px; }
.log-stderr { color: var(--bad); }
.log-step { font-weight: 600; }
.log-result-ok { color: var(--ok); }
.log-result-error { color: var(--bad); }
.log-result-running { color: var(--warn); }
.log-end { color: var(--muted); font-style: italic; }
`;

/** Shared by both scripts: how times and durations read (as pages.ts writes them). */
const format = `
  function formatTime(iso) {
    return iso ? iso.slice(0, 10) + ' ' + iso.slice(11, 19) + ' UTC' : '';
  }
  function formatDuration(ms) {
    if (ms === null || ms === undefined) return '';
    if (ms < 1000) return ms + ' ms';
    if (ms < 59950) return (ms / 1000).toFixed(1) + ' s';
    var s = Math.round(ms / 1000);
    return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  }
  /** An element with attributes and children (strings become text nodes, never markup). */
  function el(tag, attrs) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === '') continue;
      e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }
  function toLogin() {
    location.href = '/ui/login?next=' + encodeURIComponent(location.pathname);
  }
`;

const fleetJs = `'use strict';
(function () {
${format}
  var table = document.getElementById('fleet');
  var status = document.getElementById('fleet-status');
  var every = Number(table.getAttribute('data-refresh-ms')) || 5000;
  var csrf = table.getAttribute('data-csrf') || '';
  var LABEL = { drain: 'Drain', undrain: 'Undrain', quarantine: 'Quarantine',
    unquarantine: 'Unquarantine', retry: 'Retry', release: 'Release' };

  /** A runner button, as pages.ts actionForm writes it. */
  function actionForm(r, a) {
    return el('form', {
      method: 'post',
      action: '/ui/runners/' + encodeURIComponent(r.runner_id) + '/' + a,
      class: 'runner-action ' + a,
      'data-action': a,
      'data-runner': r.runner_id,
      'data-checkpoint': r.checkpoint ? r.checkpoint.name : '',
    }, el('input', { type: 'hidden', name: 'csrf', value: csrf }), el('button', { type: 'submit' }, LABEL[a]));
  }
  /** The buttons of a row, as pages.ts rowActions decides. */
  function actionsCell(r) {
    var td = el('td', { class: 'c-actions' });
    var list = [];
    list.push(r.draining ? 'undrain' : 'drain');
    if (!r.quarantine) list.push('quarantine');
    if (r.checkpoint && r.checkpoint.state === 'needs_attention') list.push('retry', 'release');
    list.forEach(function (a) { td.appendChild(actionForm(r, a)); });
    return td;
  }

  function stateBadge(state) {
    return el('span', { class: 'state state-' + state }, state);
  }
  function agentCell(r) {
    var td = el('td', { class: 'c-agent' },
      el('span', { class: 'agent agent-' + r.agent.replace(' ', '-') }, r.agent));
    if (r.agent !== 'connected' && r.agent_last_seen_at) {
      td.appendChild(document.createTextNode(' '));
      td.appendChild(el('span', { class: 'muted' }, 'last seen ' + formatTime(r.agent_last_seen_at)));
    }
    if (!r.has_agent_token) {
      td.appendChild(document.createTextNode(' '));
      td.appendChild(el('span', {
        class: 'shared-credential',
        title: "no agent_token: this runner's CI jobs hold the credential its agent uses",
      }, 'shared credential'));
    }
    return td;
  }
  function gitlabCell(r, gitlabConfigured) {
    var td = el('td', { class: 'c-gitlab' });
    if (r.gitlab_runner_id === null) {
      td.appendChild(el('span', { class: 'muted' }, 'no gitlab_runner_id'));
      return td;
    }
    var byUs = r.paused_by_e2epool_since
      ? el('span', { class: 'muted' }, 'by e2epool since ' + formatTime(r.paused_by_e2epool_since))
      : null;
    if (!gitlabConfigured || !r.gitlab) {
      if (byUs) {
        td.appendChild(el('span', { class: 'paused' }, 'paused'));
        td.appendChild(document.createTextNode(' '));
        td.appendChild(byUs);
      } else td.appendChild(el('span', { class: 'muted' }, 'not paused by e2epool'));
      return td;
    }
    var g = r.gitlab;
    td.appendChild(g.paused === null
      ? el('span', { class: 'muted' }, g.error ? 'GitLab did not answer' : 'asking GitLab\\u2026')
      : g.paused ? el('span', { class: 'paused' }, 'paused') : el('span', { class: 'active' }, 'active'));
    if (byUs) { td.appendChild(document.createTextNode(' ')); td.appendChild(byUs); }
    if (g.error) {
      td.appendChild(document.createTextNode(' '));
      td.appendChild(el('span', { class: 'error', title: g.error }, '(' + g.error + ')'));
    }
    return td;
  }
  function checkpointCell(r) {
    var td = el('td', { class: 'c-checkpoint' });
    var c = r.checkpoint;
    if (!c) { td.appendChild(el('span', { class: 'muted' }, 'none yet')); return td; }
    if (!c.active) td.appendChild(el('span', { class: 'muted' }, 'last: '));
    td.appendChild(el('a', { href: '/ui/checkpoints/' + encodeURIComponent(c.name) }, c.name));
    td.appendChild(document.createTextNode(' '));
    td.appendChild(stateBadge(c.state));
    if (c.verified === true) td.appendChild(el('span', { class: 'muted' }, ' verified'));
    if (c.verified === false) td.appendChild(el('span', { class: 'error' }, ' NOT verified'));
    return td;
  }
  function lastResetCell(r) {
    var l = r.last_reset;
    if (!l) return el('td', { class: 'c-reset' }, el('span', { class: 'muted' }, 'none yet'));
    return el('td', { class: 'c-reset' }, formatDuration(l.duration_ms) + ' ',
      el('span', { class: 'muted' }, l.state + ', ended ' + formatTime(l.ended_at)));
  }
  function quarantineCell(r) {
    var q = r.quarantine;
    if (!q) return el('td', { class: 'c-quarantine' }, el('span', { class: 'muted' }, 'no'));
    return el('td', { class: 'c-quarantine' },
      el('span', { class: 'quarantined', title: q.reason }, 'quarantined'), ' ',
      el('span', { class: 'muted' }, '(' + q.source + ') since ' + formatTime(q.quarantined_at) + ':'), ' ',
      el('span', { class: 'quarantine-reason' }, q.reason), ' ',
      actionForm(r, 'unquarantine'));
  }
  function refreshCell(r) {
    var f = r.refresh;
    var td = el('td', { class: 'c-refresh' });
    if (!f) { td.appendChild(el('span', { class: 'muted' }, r.backend === 'proxmox' ? 'none' : '')); return td; }
    td.appendChild(f.url
      ? el('a', { class: 'refresh-id', href: f.url, target: '_blank', rel: 'noopener' }, f.workflow_id)
      : el('span', { class: 'refresh-id' }, f.workflow_id));
    td.appendChild(document.createTextNode(' '));
    td.appendChild(el('span', { class: 'refresh-status refresh-' + f.status }, f.status));
    if (f.step) { td.appendChild(document.createTextNode(' ')); td.appendChild(el('span', { class: 'refresh-step' }, f.step)); }
    if (f.rollout_id) td.appendChild(el('span', { class: 'muted refresh-rollout' }, ' (rollout ' + f.rollout_id + ')'));
    return td;
  }
  function row(r, gitlabConfigured) {
    return el('tr', { 'data-runner': r.runner_id },
      el('td', { class: 'c-runner' }, r.runner_id),
      el('td', { class: 'c-backend' }, r.backend,
        r.baseline ? el('span', { class: 'muted baseline' }, ' baseline ' + r.baseline) : null,
        r.draining ? el('span', { class: 'draining' }, ' draining') : null),
      agentCell(r),
      gitlabCell(r, gitlabConfigured),
      checkpointCell(r),
      quarantineCell(r),
      el('td', { class: 'c-held' },
        r.held_until ? el('span', { class: 'held' }, 'until ' + formatTime(r.held_until)) : null),
      refreshCell(r),
      lastResetCell(r),
      actionsCell(r));
  }
  function render(data) {
    var body = el('tbody');
    data.runners.forEach(function (r) { body.appendChild(row(r, data.gitlab_configured)); });
    table.replaceChild(body, table.tBodies[0]);
    status.textContent = 'as of ' + formatTime(data.generated_at);
  }
  function refresh() {
    fetch(table.getAttribute('data-src'), { credentials: 'same-origin', headers: { accept: 'application/json' } })
      .then(function (res) {
        if (res.status === 401) { toLogin(); return null; }
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.json();
      })
      .then(function (data) { if (data) render(data); })
      .catch(function (err) { status.textContent = 'refresh failed (' + err.message + '); trying again'; })
      .finally(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);

  // A runner button asks first, in the dialog, whose own form then sends the
  // action: the row's form may be replaced by a refresh while it is open.
  var dialog = document.getElementById('confirm-action');
  var confirmForm = document.getElementById('confirm-form');
  var reasonField = document.getElementById('confirm-reason-field');
  var reason = document.getElementById('confirm-reason');
  function question(a, runner, checkpoint) {
    var r = "runner '" + runner + "'";
    var c = "checkpoint '" + checkpoint + "' of " + r;
    switch (a) {
      case 'drain': return 'Drain ' + r + '? It takes no new checkpoint until it is undrained; its current one finishes.';
      case 'undrain': return 'Undrain ' + r + '? It takes checkpoints again and is unpaused.';
      case 'quarantine': return 'Quarantine ' + r + '? Creates get 423 and it stays paused after its current checkpoint until it is unquarantined.';
      case 'unquarantine': return 'Unquarantine ' + r + '? It takes checkpoints again and is unpaused.';
      case 'retry': return 'Retry the reset of ' + c + '?';
      case 'release': return 'Release ' + c + '? The runner is unpaused without a clean reset and the checkpoint ends reset_failed.';
    }
    return a + ' ' + r + '?';
  }
  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains('runner-action')) return;
    ev.preventDefault();
    var a = form.getAttribute('data-action');
    confirmForm.setAttribute('action', form.getAttribute('action'));
    document.getElementById('confirm-text').textContent =
      question(a, form.getAttribute('data-runner'), form.getAttribute('data-checkpoint'));
    document.getElementById('confirm-ok').textContent = LABEL[a] || 'Confirm';
    var asks = a === 'quarantine';
    // A hidden reason is disabled: neither required nor sent.
    if (asks) { reasonField.removeAttribute('hidden'); reason.disabled = false; reason.required = true; }
    else { reasonField.setAttribute('hidden', ''); reason.disabled = true; reason.required = false; }
    reason.value = '';
    dialog.showModal();
    (asks ? reason : document.getElementById('confirm-cancel')).focus();
  });
  document.getElementById('confirm-cancel').addEventListener('click', function () { dialog.close(); });
})();
`;

const checkpointJs = `'use strict';
(function () {
${format}
  var box = document.getElementById('log');
  var status = document.getElementById('log-status');
  var facts = document.getElementById('facts');
  var release = document.getElementById('release-hold');

  function append(kind, e, cls) {
    var nearBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 24;
    var text;
    if (kind === 'step') {
      text = e.step + ' ' + e.result + (e.duration_ms !== undefined ? ' (' + formatDuration(e.duration_ms) + ')' : '') +
        (e.text ? ': ' + e.text : '');
    } else text = e.text;
    box.appendChild(el('div', { class: 'log-line log-' + kind + (cls || ''), 'data-seq': String(e.seq) },
      el('span', { class: 'at' }, e.at ? e.at.slice(11, 23) : ''), text));
    if (nearBottom) box.scrollTop = box.scrollHeight;
  }

  function setFact(key, value) {
    var td = facts.querySelector('[data-fact="' + key + '"]');
    if (!td) return;
    td.textContent = '';
    if (value === null || value === '') return;
    td.appendChild(typeof value === 'string' ? document.createTextNode(value) : value);
  }
  var factsTimer = null;
  function refreshFacts() {
    if (factsTimer) return;
    factsTimer = setTimeout(function () {
      factsTimer = null;
      fetch(facts.getAttribute('data-src'), { credentials: 'same-origin', headers: { accept: 'application/json' } })
        .then(function (res) {
          if (res.status === 401) { toLogin(); return null; }
          return res.ok ? res.json() : null;
        })
        .then(function (f) {
          if (!f) return;
          setFact('state', el('span', { class: 'state state-' + f.state }, f.state));
          setFact('finalize_status', f.finalize_status ? f.finalize_status + ' (' + (f.finalize_source || 'unknown source') + ')' : '');
          setFact('finalized_at', formatTime(f.finalized_at));
          setFact('ended_at', formatTime(f.ended_at));
          setFact('reset_attempts', String(f.reset_attempts));
          var answer = f.verified === null ? 'no' : f.verified ? 'yes' : 'FAILED';
          setFact('verified', f.verify_detail ? answer + ': ' + f.verify_detail : f.verified === null ? '' : answer);
          setFact('held_until', f.held_until ? 'until ' + formatTime(f.held_until) : '');
          setFact('error_detail', f.error_detail ? el('pre', {}, f.error_detail) : '');
          if (f.held_until) release.removeAttribute('hidden'); else release.setAttribute('hidden', '');
        })
        .catch(function () { /* the next step event tries again */ });
    }, 300);
  }

  var source = new EventSource(box.getAttribute('data-src'));
  source.onopen = function () { status.textContent = 'following live'; };
  ['step', 'stdout', 'stderr'].forEach(function (kind) {
    source.addEventListener(kind, function (ev) {
      var e = JSON.parse(ev.data);
      append(kind, e, kind === 'step' ? ' log-result-' + e.result : '');
      if (kind === 'step') refreshFacts();
    });
  });
  source.addEventListener('end', function () {
    source.close();
    box.appendChild(el('div', { class: 'log-line log-end' }, 'end of log: the checkpoint has ended'));
    status.textContent = 'complete';
    refreshFacts();
  });
  source.onerror = function () {
    // The browser reconnects by itself (sending Last-Event-ID) unless the
    // server refused the stream (e.g. the session expired).
    if (source.readyState === EventSource.CLOSED) {
      status.textContent = 'the log stream was refused; reload the page (log in again?)';
    } else status.textContent = 'connection lost; reconnecting\\u2026';
  };
})();
`;

/** The assets by file name, with their content types. */
export const ASSETS: ReadonlyMap<string, { type: string; body: string }> = new Map([
  ['ui.css', { type: 'text/css; charset=utf-8', body: css }],
  ['fleet.js', { type: 'text/javascript; charset=utf-8', body: fleetJs }],
  ['checkpoint.js', { type: 'text/javascript; charset=utf-8', body: checkpointJs }],
]);
