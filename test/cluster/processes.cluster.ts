import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { connect as connectTls } from 'node:tls';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { checkpointWorkflowId } from '../../common/checkpoint';
import { generateCertificates } from '../../temporal-dev/cluster';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { restClient } from '../helpers/controller';
import {
  bareMetalRunnerYaml,
  controllerEnv,
  sharedTemporal,
  testRunners,
  uniqueId,
  writeInventory,
  type TestRunner,
} from '../helpers/env';
import { startCli, type RunningProcess } from '../helpers/processes';
import { shared } from '../helpers/shared';
import { waitFor } from '../helpers/wait';

const R = testRunners(['viaFirst', 'viaSecond', 'killed']);

/**
 * The production topology on the production-mode cluster (npm run
 * test:cluster): two `e2epool api` and two `e2epool worker` processes on one
 * database and task queue, real `e2epool agent` processes, all reaching
 * Temporal through TEMPORAL_* (namespace e2epool-ci, client certificate).
 */
describe('two API and two worker processes on the mTLS cluster', () => {
  const t = shared();
  let db: TestDatabase;
  let env: Record<string, string>;
  let client: Client;
  let connection: Connection;
  const workers: RunningProcess[] = [];
  const apis: Array<{ p: RunningProcess; url: string }> = [];
  const agents: RunningProcess[] = [];
  const dir = join(t.workDir, uniqueId('two-of-each'));
  const file = (r: TestRunner, what: string) => `${dir}-${r.id}-${what}`;
  /** Each run appends to `starts`; it finishes (appending to `resets`) once `release` exists. */
  const resetCmd = (r: TestRunner) =>
    `"sh -c 'echo start >> ${file(r, 'starts')}; while [ ! -f ${file(r, 'release')} ]; do sleep 0.2; done; echo reset >> ${file(r, 'resets')}'"`;
  const lines = (path: string) =>
    existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean) : [];
  const identity = (p: RunningProcess) => `${p.child.pid}@${hostname()}`;

  async function startApi(): Promise<{ p: RunningProcess; url: string }> {
    const p = startCli(['api'], env);
    await p.waitForOutput(/"api listening"/, 60_000);
    const line = p
      .stdout()
      .split('\n')
      .find((l) => l.includes('"api listening"'))!;
    const parsed = JSON.parse(line) as { url: string; namespace: string };
    expect(parsed.namespace).toBe(t.temporalNamespace);
    return { p, url: parsed.url };
  }

  function startAgent(r: TestRunner, apiUrl: string): RunningProcess {
    const config = `${dir}-${r.id}-agent.yml`;
    writeFileSync(
      config,
      `controller_url: ${apiUrl.replace('http', 'ws')}/ws/agent\nrunner_id: ${r.id}\ntoken: ${r.token}\nsocket_path: ${dir}-${r.id}.sock\nheartbeat_interval: 1\nreconnect_max_delay: 2\n`,
      { mode: 0o600 },
    );
    const p = startCli(['agent', '--config', config], {});
    agents.push(p);
    return p;
  }

  beforeAll(async () => {
    db = await createTestDatabase('cluster');
    env = controllerEnv({
      E2EPOOL_DATABASE_URL: db.url,
      E2EPOOL_INVENTORY_PATH: writeInventory(
        `runners:\n${Object.values(R)
          .map((r) => bareMetalRunnerYaml(r, { reset_cmd: resetCmd(r) }))
          .join('')}`,
      ),
      E2EPOOL_TASK_QUEUE: uniqueId('tq-cluster'),
      E2EPOOL_HOST: '127.0.0.1',
      E2EPOOL_PORT: '0',
      E2EPOOL_WORKER_METRICS_PORT: '0',
      E2EPOOL_FINALIZE_COOLDOWN_SECONDS: '0',
      E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: '0.2',
      E2EPOOL_WS_HEARTBEAT_INTERVAL: '1',
      E2EPOOL_WS_HEARTBEAT_TIMEOUT: '5',
    });
    // The first worker migrates the empty database; the rest start on it.
    workers.push(startCli(['worker'], env));
    await workers[0]!.waitForOutput(/"worker running"/, 60_000);
    workers.push(startCli(['worker'], env));
    const [, first, second] = await Promise.all([
      workers[1]!.waitForOutput(/"worker running"/, 60_000),
      startApi(),
      startApi(),
    ]);
    apis.push(first, second);
    // Agents on either gateway: the workers reach them through Postgres whichever API holds them.
    const on = { viaFirst: first.url, viaSecond: second.url, killed: first.url };
    await Promise.all(
      Object.entries(on).map(([k, url]) =>
        startAgent(R[k as keyof typeof R], url).waitForOutput(/connected to controller/, 30_000),
      ),
    );
    const s = sharedTemporal();
    connection = await Connection.connect(s.connectionOptions);
    client = new Client({ connection, namespace: s.namespace });
  }, 120_000);

  afterAll(async () => {
    for (const r of Object.values(R)) writeFileSync(file(r, 'release'), '');
    await Promise.all([...agents, ...apis.map((a) => a.p), ...workers].map((p) => p.stop()));
    await connection?.close();
    await db?.drop();
  });

  /** Identities of the workers that started this runner's activities since `since` (ms). */
  async function activityWorkers(r: TestRunner, since = 0): Promise<string[]> {
    const history = await client.workflow.getHandle(checkpointWorkflowId(r.id)).fetchHistory();
    return history
      .events!.filter(
        (e) =>
          e.activityTaskStartedEventAttributes &&
          Number(e.eventTime!.seconds) * 1000 + Math.floor((e.eventTime!.nanos ?? 0) / 1e6) >=
            since,
      )
      .map((e) => e.activityTaskStartedEventAttributes!.identity!);
  }

  it('a checkpoint created through either API is finalized through the other and reset by a worker', async () => {
    const [first, second] = apis as [(typeof apis)[0], (typeof apis)[0]];
    const pairs: Array<[TestRunner, string, string]> = [
      [R.viaFirst, first.url, second.url],
      [R.viaSecond, second.url, first.url],
    ];
    for (const [r] of pairs) writeFileSync(file(r, 'release'), '');
    const names = await Promise.all(
      pairs.map(async ([r, createOn, finalizeOn], i) => {
        const created = await restClient(() => createOn, r.token).create(r.id, `90${i}`);
        expect(created.status).toBe(201);
        const name = created.body.name as string;
        const other = restClient(() => finalizeOn, r.token);
        expect((await other.status(name)).body).toMatchObject({ state: 'created' });
        expect((await other.finalize(name, 'failure')).status).toBe(202);
        return name;
      }),
    );
    for (const [i, [r, createOn]] of pairs.entries()) {
      const rest = restClient(() => createOn, r.token);
      await waitFor(
        `${names[i]} reset`,
        async () => (await rest.status(names[i]!)).body?.state === 'reset',
        { timeoutMs: 60_000, intervalMs: 250 },
      );
      expect(lines(file(r, 'resets'))).toEqual(['reset']);
      const by = await activityWorkers(r);
      expect(by.length).toBeGreaterThan(0);
      for (const id of by) expect(workers.map(identity)).toContain(id);
    }
    // The workflows live in the cluster's namespace, which e2epool took from TEMPORAL_NAMESPACE.
    expect(t.temporalNamespace).not.toBe('default');
    const desc = await client.workflow.getHandle(checkpointWorkflowId(R.viaFirst.id)).describe();
    expect(desc.raw.executionConfig?.taskQueue?.name).toBe(env.E2EPOOL_TASK_QUEUE);
  }, 120_000);

  it('a worker killed mid-reset: the other worker retries the reset and the runner comes back', async () => {
    const r = R.killed;
    const rest = restClient(() => apis[1]!.url, r.token);
    const created = await rest.create(r.id, '999');
    expect(created.status).toBe(201);
    const name = created.body.name as string;
    expect((await rest.finalize(name, 'failure')).status).toBe(202);
    await waitFor('reset_cmd running on the agent', () => lines(file(r, 'starts')).length === 1, {
      timeoutMs: 60_000,
    });
    const handle = client.workflow.getHandle(checkpointWorkflowId(r.id));
    const holder = await waitFor('the worker holding the reset', async () => {
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      const id = pending.find((a) => a.lastWorkerIdentity)?.lastWorkerIdentity;
      return workers.find((w) => identity(w) === id);
    });
    const survivor = workers.find((w) => w !== holder)!;
    const killedAt = Date.now();
    await holder.stop('SIGKILL');

    // The reset's heartbeat times out (15 s); the survivor takes the step over.
    await waitFor(
      'the survivor running the reset step',
      async () =>
        ((await handle.describe()).raw.pendingActivities ?? []).some(
          (a) => a.lastWorkerIdentity === identity(survivor) && (a.attempt ?? 0) >= 2,
        ),
      { timeoutMs: 90_000, intervalMs: 500 },
    );
    writeFileSync(file(r, 'release'), '');
    await waitFor('reset', async () => (await rest.status(name)).body?.state === 'reset', {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    // The retry reused the command still running on the agent (same command id): it ran once.
    expect([lines(file(r, 'starts')), lines(file(r, 'resets'))]).toEqual([['start'], ['reset']]);
    const after = await activityWorkers(r, killedAt);
    expect(after.length).toBeGreaterThan(0);
    expect(new Set(after)).toEqual(new Set([identity(survivor)]));
  }, 180_000);

  it('mTLS is on: a client without a certificate, or with one of another CA, is refused', async () => {
    const tls = t.temporalTls!;
    const cli = (extra: string[]) =>
      promisify(execFile)(t.temporalBin, [
        'operator', 'namespace', 'describe', '--namespace', t.temporalNamespace,
        '--address', t.temporalAddress, '--tls-ca-path', tls.caPath,
        '--tls-server-name', tls.serverName, ...extra,
      ], { env: { PATH: process.env.PATH, HOME: process.env.HOME, TEMPORAL_CONFIG_FILE: '/dev/null' } }); // prettier-ignore
    // The same command with the client certificate answers: the refusals below are about the certificate.
    const ok = await cli([
      '--tls-cert-path',
      tls.clientCertPath,
      '--tls-key-path',
      tls.clientKeyPath,
    ]);
    expect(ok.stdout).toContain(t.temporalNamespace);
    const other = await generateCertificates(join(t.workDir, uniqueId('other-ca')));
    for (const extra of [
      [],
      ['--tls-cert-path', other.clientCert, '--tls-key-path', other.clientKey],
    ])
      await expect(cli(extra)).rejects.toMatchObject({
        stderr: expect.stringContaining('failed reaching server'),
      });

    // Why, as the TLS handshake tells it (the CLI's message depends on timing).
    const [host, port] = t.temporalAddress.split(':') as [string, string];
    const handshake = (o: { cert?: string; key?: string }) =>
      new Promise<string>((resolve) => {
        const s = connectTls({
          host,
          port: Number(port),
          servername: tls.serverName,
          ca: readFileSync(tls.caPath),
          ALPNProtocols: ['h2'],
          ...(o.cert ? { cert: readFileSync(o.cert), key: readFileSync(o.key!) } : {}),
        });
        // In TLS 1.3 the server judges the client's certificate after the client
        // thinks the handshake is done: its verdict arrives as an alert.
        s.on('secureConnect', () => s.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
        s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        s.on('close', () => resolve('closed without an alert'));
        s.setTimeout(10_000, () => s.destroy(new Error('no verdict in 10 s')));
      });
    expect(await handshake({})).toBe('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
    expect(await handshake({ cert: other.clientCert, key: other.clientKey })).toMatch(
      /ALERT_(UNKNOWN_CA|BAD_CERTIFICATE)/,
    );
  });
});
