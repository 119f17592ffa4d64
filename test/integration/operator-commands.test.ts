import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeAgents } from '../helpers/fake-agents';
import {
  restClient,
  runEnded,
  startTestController,
  type TestController,
  needsAttentionCheckpoint,
} from '../helpers/controller';
import { bareMetalRunnerYaml, testRunners, uniqueId } from '../helpers/env';
import { waitFor } from '../helpers/wait';

/**
 * The operator commands (docs/operators.md, "Operator commands") against a real
 * controller, Temporal and Postgres, run as the real `e2epool` CLI:
 * `runners list|show|drain|undrain|quarantine|unquarantine`, `checkpoints
 * list`, `retry` and `release` driving a checkpoint out of needs_attention;
 * text and --json; exit codes 0/1/2/75/78; the admin routes they use, their
 * 4xx answers and audit rows, and their place in the OpenAPI document.
 */
const ADMIN = 'admin-token-operator-commands-0123456789abcdef';
const R = testRunners(['ops', 'retry', 'release', 'file']);
const CLI = join(__dirname, '..', '..', 'bin', 'e2epool.js');

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

describe('operator commands', () => {
  const agents = new FakeAgents();
  const failing = new Set<string>();
  let c: TestController;
  let tmp: string;
  const admin = () => restClient(() => c.api.url, ADMIN).call;
  const tokens = new Map<string, string>();
  const api = (id: string) => restClient(() => c.api.url, tokens.get(id) ?? R.file.token);

  /** The CLI, as an operator runs it: E2EPOOL_URL and E2EPOOL_ADMIN_TOKEN set unless `env` says otherwise. */
  const cli = (args: string[], env: Record<string, string> = {}) =>
    new Promise<Ran>((resolve) => {
      execFile(
        process.execPath,
        [CLI, ...args],
        { env: { ...process.env, E2EPOOL_URL: c.api.url, E2EPOOL_ADMIN_TOKEN: ADMIN, ...env } },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
      );
    });

  const audit = async (runnerId: string) =>
    (await c.ds.query(`SELECT action, detail FROM admin_audit WHERE runner_id = $1 ORDER BY id`, [
      runnerId,
    ])) as Array<{ action: string; detail: Record<string, unknown> }>;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'e2epool-ops-'));
    for (const r of Object.values(R)) agents.connect(r.id, new Date(0));
    agents.onExec = (runnerId) =>
      failing.has(runnerId)
        ? { exitCode: 7, stdout: '', stderr: 'disk on fire' }
        : { exitCode: 0, stdout: 'ok', stderr: '' };
    c = await startTestController({
      inventory: `runners:\n${bareMetalRunnerYaml(R.file, { reset_cmd: '/opt/reset.sh' })}`,
      agents,
      env: { E2EPOOL_ADMIN_TOKEN: ADMIN, E2EPOOL_RESET_MAX_ATTEMPTS: '1' },
    });
    for (const r of [R.ops, R.retry, R.release]) {
      const res = await admin()('POST', '/api/runners', {
        runner_id: r.id,
        backend: 'bare_metal',
        reset_cmd: '/opt/reset.sh',
      });
      expect(res.status).toBe(201);
      tokens.set(r.id, res.body.token);
    }
  });
  afterAll(async () => {
    await c?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A checkpoint of `id` whose reset fails: it waits in needs_attention. */
  async function stuck(id: string): Promise<string> {
    failing.add(id);
    const name = await needsAttentionCheckpoint(api(id), id);
    return name;
  }

  it('exit codes: no admin token 78, usage 2, unknown runner 1 with the message, unreachable 75, refused token 78', async () => {
    const noToken = await cli(['runners', 'list'], { E2EPOOL_ADMIN_TOKEN: '' });
    expect(noToken).toMatchObject({ code: 78, stdout: '' });
    expect(noToken.stderr).toContain('no admin token: set E2EPOOL_ADMIN_TOKEN');
    expect(
      await cli(['retry', R.retry.id, '--admin-token-file', join(tmp, 'missing')], {
        E2EPOOL_ADMIN_TOKEN: '',
      }),
    ).toMatchObject({ code: 78, stderr: expect.stringContaining('cannot read') });
    expect(await cli(['runners', 'show', R.ops.id], { E2EPOOL_URL: 'ftp://x' })).toMatchObject({
      code: 78,
      stderr: expect.stringContaining('E2EPOOL_URL: expected an http(s) URL'),
    });
    for (const args of [
      ['retry'],
      ['release', R.retry.id, 'extra'],
      ['runners', 'quarantine', R.ops.id],
      ['runners', 'quarantine', R.ops.id, '--reason', '   '],
      ['runners', 'quarantine', R.ops.id, '--reason', 'x'.repeat(501)],
      ['checkpoints', 'list', '--state', 'bogus'],
      ['checkpoints', 'list', '--limit', '0'],
      ['runners', 'list', '--url', 'not a url'],
      ['runners', 'frobnicate'],
    ]) {
      const r = await cli(args);
      expect([args, r.code]).toEqual([args, 2]);
      expect(r.stdout).toBe('');
    }
    for (const args of [
      ['retry', 'nobody'],
      ['release', 'nobody'],
      ['runners', 'show', 'nobody'],
      ['runners', 'drain', 'nobody'],
    ]) {
      const r = await cli(args);
      expect([args, r.code, r.stderr]).toEqual([
        args,
        1,
        expect.stringContaining('refused (HTTP 404): Runner not found'),
      ]);
    }
    expect(await cli(['runners', 'list', '--url', 'http://127.0.0.1:1'])).toMatchObject({
      code: 75,
      stderr: expect.stringContaining('cannot reach the controller at http://127.0.0.1:1'),
    });
    const wrong = await cli(['runners', 'list'], { E2EPOOL_ADMIN_TOKEN: 'wrong-token-0123456789' });
    expect(wrong).toMatchObject({ code: 78, stderr: expect.stringContaining('HTTP 403') });
    expect(wrong.stderr).not.toContain(ADMIN);
  });

  it('runners list|show|drain|undrain|quarantine|unquarantine: text, --json, audited', async () => {
    const id = R.ops.id;
    const list = await cli(['runners', 'list']);
    expect(list.code).toBe(0);
    const lines = list.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^RUNNER\s+BACKEND\s+SOURCE\s+ACTIVE\s+DRAINING\s+QUARANTINE$/);
    expect(lines.find((l) => l.startsWith(`${id} `))).toMatch(/bare_metal\s+api\s+yes\s+no\s+no$/);
    expect(lines.find((l) => l.startsWith(`${R.file.id} `))).toMatch(/\s+inventory\s+/);
    const json = await cli(['runners', 'list', '--json']);
    expect(JSON.parse(json.stdout)).toEqual(
      expect.arrayContaining([expect.objectContaining({ runner_id: id, draining: false })]),
    );
    const show = await cli(['runners', 'show', id]);
    expect(show.stdout).toMatch(new RegExp(`^runner_id\\s+${id}$`, 'm'));
    expect(show.stdout).toMatch(/^reset_cmd\s+\/opt\/reset\.sh$/m);
    expect(show.stdout).toMatch(/^quarantine_reason\s+-$/m);
    expect(JSON.parse((await cli(['runners', 'show', id, '--json'])).stdout)).toMatchObject({
      runner_id: id,
      reset_cmd: '/opt/reset.sh',
    });

    expect(await cli(['runners', 'drain', id])).toEqual({
      code: 0,
      stdout: `runner ${id}: draining, quarantine: no\n`,
      stderr: '',
    });
    expect((await api(id).create(id, uniqueId('job'))).status).toBe(423);
    expect(JSON.parse((await cli(['runners', 'undrain', id, '--json'])).stdout)).toMatchObject({
      runner_id: id,
      draining: false,
    });
    // A reason that would steer a terminal is shown escaped.
    const q = await cli(['runners', 'quarantine', id, '--reason', 'bad \u001b[31mdisk']);
    expect(q).toEqual({
      code: 0,
      stdout: `runner ${id}: not draining, quarantine: quarantined (operator): bad \\x1b[31mdisk\n`,
      stderr: '',
    });
    expect((await cli(['runners', 'list'])).stdout).toContain(
      'quarantined (operator): bad \\x1b[31mdisk',
    );
    const tokenFile = join(tmp, 'admin-token');
    writeFileSync(tokenFile, `${ADMIN}\n`, { mode: 0o600 });
    const unq = await cli(
      ['runners', 'unquarantine', id, '--json', '--admin-token-file', tokenFile],
      {
        E2EPOOL_ADMIN_TOKEN: '',
      },
    );
    expect(JSON.parse(unq.stdout)).toMatchObject({ runner_id: id, quarantined: false });
    expect(await audit(id)).toEqual([
      { action: 'create', detail: expect.any(Object) },
      { action: 'drain', detail: {} },
      { action: 'undrain', detail: {} },
      { action: 'quarantine', detail: { reason: 'bad \u001b[31mdisk', changed: true } },
      { action: 'unquarantine', detail: { changed: true } },
    ]);
    // An inventory.yml runner drains too (its state is kept in runner_state), audited.
    expect(await cli(['runners', 'drain', R.file.id])).toEqual({
      code: 0,
      stdout: `runner ${R.file.id}: draining, quarantine: no\n`,
      stderr: '',
    });
    expect((await api(R.file.id).create(R.file.id, uniqueId('job'))).status).toBe(423);
    expect(
      JSON.parse((await cli(['runners', 'undrain', R.file.id, '--json'])).stdout),
    ).toMatchObject({ runner_id: R.file.id, source: 'inventory', draining: false });
    expect((await audit(R.file.id)).map((a) => a.action)).toEqual(['drain', 'undrain']);
  });

  it('retry: 409 while nothing waits; checkpoints list finds the one in needs_attention; retry resets it', async () => {
    const id = R.retry.id;
    expect(await cli(['retry', id])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining(
        `retry refused (HTTP 409): Runner '${id}' has no checkpoint in needs_attention`,
      ),
    });
    const name = await stuck(id);
    const listed = await cli(['checkpoints', 'list', '--state', 'needs_attention', '--runner', id]);
    expect(listed.code).toBe(0);
    const [header, row, ...more] = listed.stdout.trim().split('\n');
    expect(header).toMatch(/^NAME\s+RUNNER\s+JOB\s+STATE\s+FINALIZE\s+CREATED\s+ENDED\s+ERROR$/);
    expect(more).toEqual([]);
    expect(row).toMatch(new RegExp(`^${name}\\s+${id}\\s+\\S+\\s+needs_attention\\s+failure\\s`));
    expect(row).toContain('disk on fire');
    const json = JSON.parse(
      (await cli(['checkpoints', 'list', '--runner', id, '--limit', '5', '--json'])).stdout,
    );
    expect(json).toEqual([
      expect.objectContaining({ name, state: 'needs_attention', active: true, reset_attempts: 1 }),
    ]);

    failing.delete(id);
    const sent = await cli(['retry', id]);
    expect(sent).toEqual({
      code: 0,
      stdout: `Retry sent: the checkpoint is reset again (checkpoint ${name} of runner ${id})\n`,
      stderr: '',
    });
    await waitFor(
      'reset after retry',
      async () => (await api(id).status(name)).body.state === 'reset',
    );
    await runEnded(c, id);
    expect((await audit(id)).filter((a) => a.action === 'retry')).toEqual([
      {
        action: 'retry',
        detail: { checkpoint: name, workflow_id: expect.any(String), via: 'api' },
      },
    ]);
    expect(await cli(['retry', id])).toMatchObject({ code: 1 });
  });

  it('release: the needs_attention checkpoint ends reset_failed; --json prints the API answer', async () => {
    const id = R.release.id;
    const name = await stuck(id);
    const sent = await cli(['release', id, '--json']);
    expect(sent.code).toBe(0);
    expect(JSON.parse(sent.stdout)).toEqual({
      runner_id: id,
      checkpoint_name: name,
      decision: 'release',
      detail: 'Release sent: the runner is unpaused and the checkpoint ends reset_failed',
    });
    await runEnded(c, id);
    expect((await api(id).status(name)).body.state).toBe('reset_failed');
    const ended = JSON.parse(
      (await cli(['checkpoints', 'list', '--runner', id, '--state', 'reset_failed', '--json']))
        .stdout,
    );
    expect(ended.map((x: { name: string }) => x.name)).toEqual([name]);
    expect((await audit(id)).map((a) => a.action)).toEqual(['create', 'release']);
  });

  it('the admin routes: 4xx JSON detail on bad input, 401/403 without the admin token, in the OpenAPI document', async () => {
    for (const [path, detail] of [
      ['/api/checkpoints?state=bogus', expect.stringContaining("state: unknown state 'bogus'")],
      ['/api/checkpoints?limit=0', 'limit: expected an integer from 1 to 1000'],
      ['/api/checkpoints?limit=1001', 'limit: expected an integer from 1 to 1000'],
      ['/api/checkpoints?state=reset&state=deleted', 'state: expected one value'],
      ['/api/checkpoints?runner=', 'runner: expected a runner id'],
      ['/api/checkpoints?color=red', 'Unknown query parameters: color'],
    ] as const) {
      expect([path, await admin()('GET', path)]).toEqual([path, { status: 422, body: { detail } }]);
    }
    const retry = `/api/runners/${R.retry.id}/retry`;
    expect(await admin()('POST', retry, { force: true })).toEqual({
      status: 422,
      body: { detail: 'Unknown fields: force' },
    });
    expect(await admin()('POST', retry, [1])).toEqual({
      status: 422,
      body: { detail: 'Request body must be a JSON object' },
    });
    expect(await admin()('POST', '/api/runners/nobody/release', {})).toEqual({
      status: 404,
      body: { detail: 'Runner not found' },
    });
    expect((await fetch(`${c.api.url}${retry}`, { method: 'POST' })).status).toBe(401);
    const other = restClient(() => c.api.url, 'not-the-admin-token-0123456789').call;
    expect((await other('GET', '/api/checkpoints')).status).toBe(403);

    const doc = (await (await fetch(`${c.api.url}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    expect(Object.keys(doc.paths['/api/checkpoints']!)).toEqual(['get']);
    for (const a of ['retry', 'release'])
      expect(Object.keys(doc.paths[`/api/runners/{id}/${a}`]!.post!.responses)).toEqual(
        expect.arrayContaining(['202', '404', '409', '422', '401', '403', '503']),
      );
    for (const a of ['drain', 'undrain', 'quarantine', 'unquarantine', 'retry', 'release'])
      expect(doc.paths[`/ui/runners/{id}/${a}`]?.post).toBeDefined();
  });
});
