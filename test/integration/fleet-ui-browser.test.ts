import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { AgentBus } from '../../activities/agent-bus';
import {
  startAgentController,
  restClient,
  runEnded,
  type AgentController,
} from '../helpers/controller';
import { spawnAgent } from '../helpers/agent-process';
import { bareMetalRunnerYaml, proxmoxRunnerBody, testRunners } from '../helpers/env';
import { describeNeeding } from '../helpers/required';
import { waitFor } from '../helpers/wait';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * The fleet page in a real headless Chromium (Debian's, driven by
 * playwright-core): log in, see the runner's row, follow it to its
 * checkpoint's page and watch the reset's output arrive line by line from a
 * real agent process while the command still runs, with a line of markup
 * shown as text; `end` completes the log and the page's facts follow.
 *
 * The browser is E2EPOOL_CHROMIUM, else /usr/bin/chromium (`apt-get install
 * chromium`; CI installs it). Without either the test fails under CI=true
 * and is skipped elsewhere, its title saying why.
 */
const CHROMIUM = process.env.E2EPOOL_CHROMIUM || '/usr/bin/chromium';
const HAVE_BROWSER = Boolean(process.env.E2EPOOL_CHROMIUM) || existsSync(CHROMIUM);

const ADMIN = 'browser-test-admin-token-0123456789abcdef';
const TEMPORAL_UI = 'http://temporal-ui.example:8233';
const R = testRunners(['browser']);
const MARKUP = '<script>window.pwned=1</script>';
// Markup first, then one line a second: the page must show lines while the command runs.
const RESET_CMD = `sh -c 'echo \\"${MARKUP}\\"; for i in 1 2 3 4 5 6; do echo line-$i; sleep 1; done'`;

const describeWithBrowser = describeNeeding(
  HAVE_BROWSER,
  'Chromium',
  'set E2EPOOL_CHROMIUM or apt-get install chromium',
);

describeWithBrowser('fleet page in a real browser', () => {
  let dir: string;
  let c: AgentController;
  let pve: ProxmoxStandIn;
  let bus: AgentBus;
  let agent: ChildProcess;
  let opsAgent: ChildProcess | undefined;
  let browser: Browser;
  let page: Page;
  /** What the page's scripts threw or the browser refused (a CSP violation shows here). */
  const pageErrors: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-ui-'));
    chmodSync(dir, 0o755);
    pve = await startProxmoxStandIn({ taskDurationMs: 20 });
    c = await startAgentController({
      inventory: `runners:\n${bareMetalRunnerYaml(R.browser, { reset_cmd: `"${RESET_CMD}"` })}`,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_WS_HEARTBEAT_INTERVAL: '1',
        E2EPOOL_SECRET_KEY: 'browser-test-secret-key-0123456789abcdef',
        E2EPOOL_TEMPORAL_UI_URL: TEMPORAL_UI,
        E2EPOOL_POLLER_INTERVAL_SECONDS: '0.2',
        E2EPOOL_RESET_MAX_ATTEMPTS: '1',
      },
      bus: { staleAfterSeconds: 90, connectWaitSeconds: 20 },
    });
    bus = c.bus;
    agent = spawnAgent(dir, c.api.url, R.browser).child;
    await waitFor('the agent session', () => bus.isConnected(R.browser.id), {
      timeoutMs: 20_000,
    });
    // As root (CI), Chromium runs only without its sandbox.
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
    });
    page = await browser.newPage();
    page.on('pageerror', (err) => pageErrors.push(`pageerror: ${err.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`);
    });
  }, 60_000);
  /** Opens the fleet page, logging in first when the session is gone. */
  const openFleet = async () => {
    await page.goto(`${c.api.url}/ui`);
    if (new URL(page.url()).pathname === '/ui/login') {
      await page.fill('#token', ADMIN);
      await page.click('button[type=submit]');
      await page.waitForURL(`${c.api.url}/ui`);
    }
  };

  afterAll(async () => {
    await browser?.close();
    if (agent && agent.exitCode === null) agent.kill('SIGKILL');
    if (opsAgent && opsAgent.exitCode === null) opsAgent.kill('SIGKILL');
    await c?.stop();
    await pve?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('log in, see the runner, open its checkpoint and watch the reset output arrive live', async () => {
    const api = restClient(() => c.api.url, R.browser.token);
    await page.goto(`${c.api.url}/ui`);
    expect(new URL(page.url()).pathname).toBe('/ui/login');
    await page.fill('#token', 'not-the-token');
    await page.click('button[type=submit]');
    expect(await page.textContent('.error')).toBe('Invalid admin token');
    // The browser logs the 403 itself; what counts are errors from here on.
    pageErrors.length = 0;
    await page.fill('#token', ADMIN);
    await page.click('button[type=submit]');
    await page.waitForURL(`${c.api.url}/ui`);
    const row = page.locator(`tr[data-runner="${R.browser.id}"]`);
    // The runner has no agent_token: the page says its agent shares the jobs' credential.
    expect(await row.locator('.c-agent').textContent()).toBe('connected shared credential');
    expect(await row.locator('.c-checkpoint').textContent()).toBe('none yet');
    const cookies = await page.context().cookies();
    expect(cookies).toEqual([
      expect.objectContaining({ path: '/ui', httpOnly: true, sameSite: 'Strict' }),
    ]);

    // The page refreshes itself: the new checkpoint shows up without a reload.
    const name = (await api.create(R.browser.id, '9990')).body.name as string;
    const link = row.locator(`.c-checkpoint a`);
    await link.waitFor({ timeout: 20_000 });
    expect(await link.textContent()).toBe(name);
    expect(await row.locator('.c-checkpoint .state').textContent()).toBe('created');
    await link.click();
    await page.waitForURL(`${c.api.url}/ui/checkpoints/${name}`);
    await page.waitForSelector('#log .log-step');
    expect(await page.textContent('#log-status')).toBe('following live');

    // The job fails: reset_cmd prints a line a second, and each one appears as it comes.
    expect((await api.finalize(name, 'failure')).status).toBe(202);
    const line = (t: string) => page.locator('#log .log-stdout', { hasText: t });
    await line('line-1').waitFor({ timeout: 30_000 });
    const steps = (await c.ds.query(
      `SELECT o.result FROM operation_logs o JOIN checkpoints k ON k.id = o.checkpoint_id
          WHERE k.name = $1 AND o.operation = 'reset_cmd'`,
      [name],
    )) as Array<{ result: string }>;
    expect(steps).toEqual([{ result: 'running' }]);
    expect(await line('line-6').count()).toBe(0);

    await page.locator('#log .log-end').waitFor({ timeout: 30_000 });
    const stdout = await page
      .locator('#log .log-stdout')
      .evaluateAll((els) => els.map((e) => e.lastChild?.textContent));
    expect(stdout).toEqual([MARKUP, 'line-1', 'line-2', 'line-3', 'line-4', 'line-5', 'line-6']);
    // The markup line is text, not a script that ran.
    // (evaluated in the page, where `globalThis` is its window)
    expect(
      await page.evaluate(() => (globalThis as unknown as { pwned?: number }).pwned),
    ).toBeUndefined();
    expect(await page.locator('#log script').count()).toBe(0);
    // Steps are styled by result; the facts follow the log to the end.
    expect(
      await page.locator('#log .log-step.log-result-ok', { hasText: 'reset_cmd ok' }).count(),
    ).toBe(1);
    await page.locator('[data-fact="state"] .state-reset').waitFor({ timeout: 10_000 });
    expect(await page.textContent('#log-status')).toBe('complete');
    expect(await page.isHidden('#release-hold')).toBe(true);

    // Log out: the fleet asks for the login again.
    await page.click('form.logout button');
    await page.waitForURL(`${c.api.url}/ui/login`);
    await page.goto(`${c.api.url}/ui`);
    expect(new URL(page.url()).pathname).toBe('/ui/login');
    expect(pageErrors).toEqual([]);
  }, 120_000);

  it("shows a quarantined runner's reason, and its Unquarantine button ends the quarantine", async () => {
    const admin = restClient(() => c.api.url, ADMIN).call;
    const id = `${R.browser.id}-q`;
    const REASON = '<b>disk</b> errors';
    expect(
      (
        await admin('POST', '/api/runners', {
          runner_id: id,
          backend: 'bare_metal',
          reset_cmd: 'true',
        })
      ).status,
    ).toBe(201);
    expect((await admin('POST', `/api/runners/${id}/quarantine`, { reason: REASON })).status).toBe(
      200,
    );
    await page.goto(`${c.api.url}/ui`);
    await page.fill('#token', ADMIN);
    await page.click('button[type=submit]');
    await page.waitForURL(`${c.api.url}/ui`);
    pageErrors.length = 0;
    const cell = page.locator(`tr[data-runner="${id}"] .c-quarantine`);
    // The snapshot of a moment ago may not have the runner yet: the page refreshes itself.
    await cell.locator('.quarantined').waitFor({ timeout: 20_000 });
    // The reason, markup included, is text.
    expect(await cell.locator('.quarantine-reason').textContent()).toBe(REASON);
    expect(await cell.textContent()).toContain('(operator)');
    await cell.locator('form.unquarantine button').click();
    // It asks first.
    expect(await page.textContent('#confirm-text')).toBe(
      `Unquarantine runner '${id}'? It takes checkpoints again and is unpaused.`,
    );
    await page.click('#confirm-ok');
    await page.waitForURL(`${c.api.url}/ui?unquarantined=${id}`);
    expect(await page.textContent('.notice')).toContain(`Runner '${id}' unquarantined`);
    expect(await cell.textContent()).toBe('no');
    expect((await admin('GET', `/api/runners/${id}`)).body.quarantined).toBe(false);
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it("shows a Proxmox runner's running baseline refresh: its workflow (linked to the Web UI), status and step", async () => {
    const admin = restClient(() => c.api.url, ADMIN).call;
    const id = `${R.browser.id}-pve`;
    pve.addVm('pve1', 951, {
      status: 'running',
      snapshots: [{ name: 'golden-base', description: 'baseline' }],
      agent: '1',
    });
    const created = await admin(
      'POST',
      '/api/runners',
      proxmoxRunnerBody(pve, id, 951, { baseline_snapshot: 'golden-base' }),
    );
    expect(created.status).toBe(201);
    // Its checkpoint runs: the refresh waits for it to end.
    const cp = await restClient(() => c.api.url, created.body.token as string).create(id, '9995');
    expect(cp.status).toBe(201);
    const started = await admin('POST', `/api/runners/${id}/baseline`, {});
    expect(started.status).toBe(202);
    const workflowId = started.body.workflow_id as string;
    const run = await c.client.workflow.getHandle(workflowId).describe();
    try {
      await openFleet();
      pageErrors.length = 0;
      const cell = page.locator(`tr[data-runner="${id}"] .c-refresh`);
      // The page refreshes itself until the refresh says the step it stays at
      // (a load of a moment ago may show an earlier one, e.g. `reading the registry`).
      await cell.locator('.refresh-step').waitFor({ timeout: 20_000 });
      await waitFor(
        'the refresh step: waiting for its active checkpoint to end',
        async () =>
          (await cell.locator('.refresh-step').textContent()) ===
          'waiting for its active checkpoint to end',
        { timeoutMs: 20_000 },
      );
      expect(await cell.locator('.refresh-status').textContent()).toBe('running');
      const link = cell.locator('a.refresh-id');
      expect(await link.textContent()).toBe(workflowId);
      expect(await link.getAttribute('href')).toBe(
        `${TEMPORAL_UI}/namespaces/${encodeURIComponent(c.client.options.namespace)}/workflows/${encodeURIComponent(workflowId)}/${run.runId}`,
      );
      // A bare-metal runner has no refresh column entry.
      expect(await page.locator(`tr[data-runner="${R.browser.id}"] .c-refresh`).textContent()).toBe(
        '',
      );
      expect(pageErrors).toEqual([]);
    } finally {
      await c.client.workflow.getHandle(workflowId).terminate('test over');
    }
  }, 60_000);

  it('the runner buttons ask in a dialog first, then drain, undrain, quarantine (with a reason), retry and release', async () => {
    const admin = restClient(() => c.api.url, ADMIN).call;
    const id = `${R.browser.id}-ops`;
    const clean = join(dir, 'clean');
    const created = await admin('POST', '/api/runners', {
      runner_id: id,
      backend: 'bare_metal',
      // Fails until the test says the runner is clean: its checkpoints wait in needs_attention.
      reset_cmd: `test -e ${clean}`,
    });
    expect(created.status).toBe(201);
    opsAgent = spawnAgent(
      dir,
      c.api.url,
      { id, token: created.body.token },
      {
        agentToken: created.body.agent_token,
      },
    ).child;
    await waitFor('the second agent', () => bus.isConnected(id), { timeoutMs: 20_000 });
    const runner = async () => (await admin('GET', `/api/runners/${id}`)).body;
    const row = page.locator(`tr[data-runner="${id}"]`);
    await openFleet();
    pageErrors.length = 0;
    /** Clicks a row's button, checks the dialog's question, confirms (after `fill`). */
    const act = async (action: string, question: string, fill?: () => Promise<void>) => {
      await row.locator(`form.${action} button`).click();
      expect(await page.isVisible('#confirm-action')).toBe(true);
      expect(await page.textContent('#confirm-text')).toBe(question);
      await fill?.();
      await page.click('#confirm-ok');
      await page.waitForURL(new RegExp(`/ui\\?\\w+=${id}$`));
    };

    // Cancel sends nothing.
    await row.locator('form.drain button').click();
    await page.click('#confirm-cancel');
    expect(await page.isVisible('#confirm-action')).toBe(false);
    expect((await runner()).draining).toBe(false);
    await act(
      'drain',
      `Drain runner '${id}'? It takes no new checkpoint until it is undrained; its current one finishes.`,
    );
    expect(await page.textContent('.notice')).toContain(`Runner '${id}' drains`);
    expect((await runner()).draining).toBe(true);
    expect(await row.locator('.c-backend .draining').count()).toBe(1);
    await act('undrain', `Undrain runner '${id}'? It takes checkpoints again and is unpaused.`);
    expect((await runner()).draining).toBe(false);

    // A quarantine needs its reason: the dialog does not send without one.
    await row.locator('form.quarantine button').click();
    await page.click('#confirm-ok');
    expect(await page.isVisible('#confirm-action')).toBe(true);
    await page.click('#confirm-cancel');
    await act(
      'quarantine',
      `Quarantine runner '${id}'? Creates get 423 and it stays paused after its current checkpoint until it is unquarantined.`,
      () => page.fill('#confirm-reason', 'flaky <b>NIC</b>'),
    );
    expect(await runner()).toMatchObject({
      quarantined: true,
      quarantine_reason: 'flaky <b>NIC</b>',
    });
    expect(await row.locator('.quarantine-reason').textContent()).toBe('flaky <b>NIC</b>');
    await act(
      'unquarantine',
      `Unquarantine runner '${id}'? It takes checkpoints again and is unpaused.`,
    );
    expect((await runner()).quarantined).toBe(false);

    // A checkpoint in needs_attention gets Retry and Release.
    const api = restClient(() => c.api.url, created.body.token);
    const stuck = async (job: string) => {
      const name = (await api.create(id, job)).body.name as string;
      expect((await api.finalize(name, 'failure')).status).toBe(202);
      await waitFor(
        'needs_attention',
        async () => (await api.status(name)).body.state === 'needs_attention',
        { timeoutMs: 30_000 },
      );
      await page.goto(`${c.api.url}/ui`);
      // The page's snapshot may be a moment old: it refreshes itself.
      await row.locator(`form.retry[data-checkpoint="${name}"]`).waitFor({ timeout: 20_000 });
      return name;
    };
    const first = await stuck('9991');
    writeFileSync(clean, '');
    await act('retry', `Retry the reset of checkpoint '${first}' of runner '${id}'?`);
    expect(await page.textContent('.notice')).toContain('Retry sent');
    await waitFor('reset', async () => (await api.status(first)).body.state === 'reset', {
      timeoutMs: 30_000,
    });
    await runEnded(c, id);
    rmSync(clean);
    const second = await stuck('9992');
    await act(
      'release',
      `Release checkpoint '${second}' of runner '${id}'? The runner is unpaused without a clean reset and the checkpoint ends reset_failed.`,
    );
    await runEnded(c, id);
    expect((await api.status(second)).body.state).toBe('reset_failed');
    const audit = (await c.ds.query(
      `SELECT action, detail->>'via' AS via FROM admin_audit WHERE runner_id = $1 ORDER BY id`,
      [id],
    )) as Array<{ action: string; via: string | null }>;
    expect(audit.map((a) => `${a.action}${a.via ? `:${a.via}` : ''}`)).toEqual([
      'create',
      'drain',
      'undrain',
      'quarantine',
      'unquarantine',
      'retry:ui',
      'release:ui',
    ]);
    expect(pageErrors).toEqual([]);
  }, 120_000);
});
