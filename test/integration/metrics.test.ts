import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { createStore } from '../../store';
import { FakeAgents } from '../helpers/fake-agents';
import {
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { exposedNames, parseSamples, scrape, sumOf } from '../helpers/metrics';
import { insertCheckpoint } from '../helpers/db';
import { REPO } from '../helpers/processes';
import { hasCommand, itNeeding } from '../helpers/required';
import { connectRawAgent } from '../helpers/raw-agent';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';

// One runner (and GitLab runner) per test: every metric below is read as a
// change across the test, or by labels of the test's own runner.
const R = testRunners(['finalized', 'polled', 'refused', 'session', 'stuck']);
const GITLAB_RUNNER = { finalized: 61, polled: 62, refused: 63 } as const;
const SCRIPTS = { reset_cmd: '/opt/reset.sh', cleanup_cmd: '/opt/cleanup.sh' };
const INVENTORY = `runners:\n${[
  bareMetalRunnerYaml(R.finalized, { ...SCRIPTS, gitlab_runner_id: GITLAB_RUNNER.finalized }),
  bareMetalRunnerYaml(R.polled, { ...SCRIPTS, gitlab_runner_id: GITLAB_RUNNER.polled }),
  bareMetalRunnerYaml(R.refused, { ...SCRIPTS, gitlab_runner_id: GITLAB_RUNNER.refused }),
  bareMetalRunnerYaml(R.session),
  bareMetalRunnerYaml(R.stuck),
].join('')}`;
const DASHBOARD = join(REPO, 'ops', 'grafana', 'e2epool-dashboard.json');
const ALERTS = join(REPO, 'ops', 'prometheus', 'alerts.yml');
const itWithPromtool = itNeeding(hasCommand('promtool'), 'promtool', 'apt-get install prometheus');

const STEP = 'e2epool_step_duration_seconds_count';
const CLEAN = 'e2epool_time_to_clean_seconds';
const GITLAB = 'e2epool_gitlab_requests_total';
const PAUSED = 'e2epool_runner_paused_seconds_total';

describe('metrics an operator can alert on (worker and API /metrics)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let gitlab: GitLabStandIn;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);
  const worker = () => scrape(c.worker.metricsUrl);
  const api = () => scrape(`${c.api.url}/metrics`);

  beforeAll(async () => {
    for (const r of [R.finalized, R.polled, R.refused]) agents.connect(r.id, new Date(0));
    gitlab = await startGitLabStandIn();
    for (const id of Object.values(GITLAB_RUNNER)) gitlab.addRunner(id);
    c = await startTestController({
      inventory: INVENTORY,
      agents,
      env: {
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.1',
        // A GitLab budget whose poll share lets every runner here poll that often
        // (a smaller fleet budget would stretch the interval: config/checkpoint-input.ts).
        E2EPOOL_GITLAB_MAX_RPS: '1000',
        E2EPOOL_POLLER_MIN_AGE_SECONDS: '0',
      },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await gitlab?.close();
  });

  /** Finalizes (or lets the poller see the job end) and waits until the run has ended. */
  async function untilEnded(r: TestRunner, name: string, state: string): Promise<void> {
    await waitFor(`${name} to reach ${state}`, async () => {
      const s = await as(r).status(name);
      return s.body?.state === state;
    });
    await runEnded(c, r.id); // the terminal transition (and its observation) has returned
  }

  it('a finalized bare-metal checkpoint: each step timed where it ran, time to clean, seconds paused, GitLab calls by status', async () => {
    const r = R.finalized;
    const before = await worker();
    const name = (await as(r).create(r.id, '3001')).body.name as string;
    const finalizedAt = Date.now();
    expect((await as(r).finalize(name, 'failure')).status).toBe(202);
    await untilEnded(r, name, 'reset');
    const elapsed = (Date.now() - finalizedAt) / 1000;
    const after = await worker();
    const grew = (metric: string, labels: Record<string, string>) =>
      sumOf(after, metric, labels) - sumOf(before, metric, labels);

    for (const step of ['pause_check', 'pause', 'reset_cmd', 'readiness', 'unpause'])
      expect([step, grew(STEP, { backend: 'bare_metal', step, result: 'ok' })]).toEqual([step, 1]);
    // Seconds, not milliseconds: each step took less than the whole run.
    const readiness = { backend: 'bare_metal', step: 'readiness', result: 'ok' };
    const readinessSeconds = grew('e2epool_step_duration_seconds_sum', readiness);
    expect(readinessSeconds).toBeGreaterThan(0);
    expect(readinessSeconds).toBeLessThan(elapsed);

    expect(grew(`${CLEAN}_count`, { backend: 'bare_metal', path: 'finalize' })).toBe(1);
    const clean = grew(`${CLEAN}_sum`, { backend: 'bare_metal', path: 'finalize' });
    expect(clean).toBeGreaterThan(0);
    expect(clean).toBeLessThan(elapsed + 1);

    // Paused from the pause to the unpause: within the finalize-to-end window.
    const paused = sumOf(after, PAUSED, { runner_id: r.id });
    expect(paused).toBeGreaterThan(0);
    expect(paused).toBeLessThan(elapsed + 1);
    // Unpaused: no pause of it is open, so a retried unpause would add nothing.
    const [{ id }] = (await c.ds.query(`SELECT id FROM checkpoints WHERE name = $1`, [name])) as [
      { id: number },
    ];
    expect(await createStore(c.ds).pauses.openOf(id)).toBeNull();

    // The pause check, and the unpause's read-back.
    expect(grew(GITLAB, { op: 'runner_get', code: '200' })).toBe(2);
    expect(grew(GITLAB, { op: 'runner_pause', code: '200' })).toBe(1);
    expect(grew(GITLAB, { op: 'runner_unpause', code: '200' })).toBe(1);
    expect(gitlab.runner(GITLAB_RUNNER.finalized).pausedHistory).toEqual([true, false]);
    // The token is a header, never a label or a value.
    expect(after).not.toContain(gitlab.token);
  });

  it('a job whose end the GitLab poller saw: job_status calls by status, time to clean on path "poller"', async () => {
    const r = R.polled;
    const before = await worker();
    const polled = async () =>
      sumOf(await worker(), GITLAB, { op: 'job_status', code: '200' }) -
      sumOf(before, GITLAB, { op: 'job_status', code: '200' });
    gitlab.setJob(19, 3101, 'running');
    const name = (await as(r).create(r.id, '3101', { project_id: '19' })).body.name as string;
    await waitFor('a poll to be counted', async () => (await polled()) > 0);
    gitlab.setJob(19, 3101, 'failed');
    await untilEnded(r, name, 'reset');
    const after = await worker();
    const labels = { backend: 'bare_metal', path: 'poller' };
    expect(sumOf(after, `${CLEAN}_count`, labels) - sumOf(before, `${CLEAN}_count`, labels)).toBe(
      1,
    );
    // Every poll the stand-in answered is counted once (no other job is polled here).
    const polls = gitlab.calls.filter((x) => x.path === '/api/v4/projects/19/jobs/3101').length;
    expect(await polled()).toBe(polls);
    expect(sumOf(after, PAUSED, { runner_id: r.id })).toBeGreaterThan(0);
  });

  it('a GitLab 401 shows as code="401" (and the failed pause check as an error attempt)', async () => {
    const r = R.refused;
    const gitlabRunner = GITLAB_RUNNER.refused;
    const before = await worker();
    // Once: the pause check is retried, gets 200, and the reset goes on paused.
    gitlab.failNext(
      { method: 'GET', pathIncludes: `/runners/${gitlabRunner}` },
      { kind: 'http', status: 401, body: { message: '401 Unauthorized' } },
      1,
    );
    const name = (await as(r).create(r.id, '3201')).body.name as string;
    expect((await as(r).finalize(name, 'failure')).status).toBe(202);
    await untilEnded(r, name, 'reset');
    const after = await worker();
    const grew = (metric: string, labels: Record<string, string>) =>
      sumOf(after, metric, labels) - sumOf(before, metric, labels);
    expect(grew(GITLAB, { op: 'runner_get', code: '401' })).toBe(1);
    // The retried pause check, and the unpause's read-back.
    expect(grew(GITLAB, { op: 'runner_get', code: '200' })).toBe(2);
    expect(grew(STEP, { step: 'pause_check', result: 'error' })).toBe(1);
    expect(grew(STEP, { step: 'pause_check', result: 'ok' })).toBe(1);
    expect(gitlab.runner(gitlabRunner).pausedHistory).toEqual([true, false]);
  });

  it('the API counts the agent sessions it holds: 0, 1 while an agent is connected, 0 after', async () => {
    const r = R.session;
    const sessions = async () => sumOf(await api(), 'e2epool_agent_sessions');
    expect(await sessions()).toBe(0);
    const agent = await connectRawAgent(c.api.url, { runnerId: r.id, token: r.token });
    try {
      await waitFor('the session to count', async () => (await sessions()) === 1);
    } finally {
      agent.close();
    }
    await agent.closed;
    await waitFor('the session to be gone', async () => (await sessions()) === 0);
  });

  it('the API and the worker name their build: e2epool_build_info{version,commit} 1', async () => {
    const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
      version: string;
    };
    for (const [service, text] of [
      ['e2epool-api', await api()],
      ['e2epool-worker', await worker()],
    ] as const) {
      expect(parseSamples(text).filter((s) => s.name === 'e2epool_build_info')).toEqual([
        {
          name: 'e2epool_build_info',
          // Unbuilt under ts-jest: the commit is "unknown".
          labels: { service, version, commit: expect.stringMatching(/^([0-9a-f]{40}|unknown)$/) },
          value: 1,
        },
      ]);
    }
  });

  it('e2epool_runner_paused_for_seconds: how long e2epool has kept each runner paused, 0 once the pause is kept for a quarantine', async () => {
    const r = R.stuck;
    const store = createStore(c.ds);
    const id = await insertCheckpoint(c.ds, r.id, 'reset', new Date());
    const pausedFor = async () =>
      parseSamples(await api()).find(
        (s) => s.name === 'e2epool_runner_paused_for_seconds' && s.labels.runner_id === r.id,
      )?.value;
    expect(await pausedFor()).toBe(0);
    await store.pauses.opened({
      checkpointId: id,
      runnerId: r.id,
      target: { kind: 'gitlab', gitlabRunnerId: 7001 },
      state: 'paused',
      at: new Date(Date.now() - 3600_000),
    });
    // The API serves one collection for E2EPOOL_METRICS_CACHE_SECONDS: wait for a fresh one.
    const age = await waitFor('the open pause to show', async () => {
      const v = await pausedFor();
      return v !== undefined && v > 0 ? v : null;
    });
    expect(age).toBeGreaterThanOrEqual(3600);
    expect(age).toBeLessThan(3600 + 120);
    await store.pauses.closed(id, 'kept_for_quarantine');
    await waitFor(
      'a pause kept for a quarantine to count 0',
      async () => (await pausedFor()) === 0,
    );
    await store.pauses.closed(id, 'unpaused');
  });

  it('the alert rules (ops/prometheus/alerts.yml) use only metrics the API or the worker expose', async () => {
    const doc = parseYaml(readFileSync(ALERTS, 'utf8')) as {
      groups: Array<{ name: string; rules: Array<{ alert: string; expr: string }> }>;
    };
    const rules = doc.groups.flatMap((g) => g.rules);
    const exposed = new Set([...exposedNames(await api()), ...exposedNames(await worker())]);
    for (const rule of rules) {
      const used = metricNames(String(rule.expr));
      expect([rule.alert, used.length > 0]).toEqual([rule.alert, true]);
      expect([rule.alert, used.filter((m) => !exposed.has(m))]).toEqual([rule.alert, []]);
    }
    // What the operators asked to be alerted on, each by the metric that says it.
    const alertOn = (metric: string) =>
      rules.filter((rule) => metricNames(String(rule.expr)).includes(metric)).map((x) => x.alert);
    for (const metric of [
      'e2epool_runner_paused_for_seconds',
      'e2epool_checkpoints_needs_attention_oldest_seconds',
      'e2epool_runners_quarantined',
      'e2epool_runners_unreachable',
      'e2epool_reconcile_findings_total',
      'e2epool_gitlab_requests_total',
    ])
      expect([metric, alertOn(metric).length]).toEqual([metric, 1]);
    expect(rules.find((x) => x.expr.includes('e2epool_gitlab_requests_total'))!.expr).toContain(
      'code="429"',
    );
  });

  itWithPromtool('promtool accepts the alert rules', () => {
    const r = spawnSync('promtool', ['check', 'rules', ALERTS], { encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toContain('SUCCESS: 7 rules found');
    expect(r.status).toBe(0);
  });

  itWithPromtool(
    'each alert fires on the series that mean trouble, and only then (promtool test rules)',
    () => {
      const r = spawnSync(
        'promtool',
        ['test', 'rules', join(REPO, 'test', 'ops', 'alerts.promtool.yml')],
        {
          encoding: 'utf8',
        },
      );
      expect(`${r.stdout}${r.stderr}`).toContain('SUCCESS');
      expect(r.status).toBe(0);
    },
  );

  it('the Grafana dashboard uses only metrics the API or the worker expose', async () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
    const exposed = new Set([...exposedNames(await api()), ...exposedNames(await worker())]);
    const used = new Set(expressions(dashboard).flatMap(metricNames));
    expect(used.size).toBeGreaterThan(5);
    expect([...used].filter((m) => !exposed.has(m))).toEqual([]);
    // Every metric issue 9 asked for is on it.
    for (const m of [
      'e2epool_checkpoints_active',
      'e2epool_checkpoints_needs_attention_oldest_seconds',
      'e2epool_runners_unreachable',
      'e2epool_reconcile_findings_total',
      'e2epool_time_to_clean_seconds_bucket',
      'e2epool_step_duration_seconds_bucket',
      'e2epool_gitlab_requests_total',
      'e2epool_github_requests_total',
      'e2epool_runner_paused_seconds_total',
      'e2epool_agent_sessions',
    ])
      expect([m, used.has(m)]).toEqual([m, true]);
    // A plain dashboard: its Prometheus is chosen with the datasource variable.
    expect(dashboard.templating.list).toContainEqual(
      expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }),
    );
    for (const p of dashboard.panels.filter((p) => p.type !== 'row'))
      expect([p.title, p.datasource]).toEqual([
        p.title,
        { type: 'prometheus', uid: '${datasource}' },
      ]);
  });
});

interface Panel {
  type: string;
  title: string;
  datasource?: unknown;
  targets?: Array<{ expr?: string }>;
  panels?: Panel[];
}
interface Dashboard {
  panels: Panel[];
  templating: { list: Array<Record<string, unknown>> };
}

function expressions(d: Dashboard): string[] {
  const all = (ps: Panel[]): Panel[] => ps.flatMap((p) => [p, ...all(p.panels ?? [])]);
  return all(d.panels).flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? ''));
}

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
]);

/** The metric names a PromQL expression reads: identifiers that are not functions, keywords or labels. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // label values
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // range selectors ($__rate_interval)
    .replace(/\b(?:by|without|on|ignoring)\s*\([^)]*\)/g, ''); // grouping labels
  return [...bare.matchAll(/\b[a-zA-Z_:][\w:]*\b(?!\s*\()/g)]
    .map((m) => m[0])
    .filter((w) => !PROMQL_WORDS.has(w) && !/^\d/.test(w));
}
