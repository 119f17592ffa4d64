/**
 * Starts Temporal Server in production mode (temporal-server 1.29.2, all four
 * services in one process) on Postgres, with the frontend behind mutual TLS and
 * a namespace of its own that carries e2epool's search attributes. Used by
 * `npm run test:cluster` (test/cluster-global-setup.ts) and the scale bench.
 *
 * What it does, in order: databases with unique names on the given Postgres
 * and their schemas (temporal-sql-tool), a CA and server/client certificates in
 * a directory of their own (openssl), the server with ops/temporal/cluster.yaml,
 * then the namespace and search attributes through the `temporal` CLI over
 * mTLS, as an operator would. Resolves once the namespace answers.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { Connection, type ConnectionOptions } from '@temporalio/client';
import { Client as PgClient } from 'pg';
import { searchAttributeFlags } from '../common/search-attributes';
import { freePort, isPortInUse } from '../dev/ports';
import { ensureBinary, ensureTemporalServer } from './binary';

const run = promisify(execFile);

export interface ClusterOptions {
  /** A Postgres URL whose user may CREATE DATABASE (the server's databases go there). */
  adminDatabaseUrl: string;
  /** Certificates, the server log and its working files go here. */
  workDir: string;
  /** Default `e2epool-ci`: deliberately not `default`, so nothing passes by assuming it. */
  namespace?: string;
  /** Path of the `temporal` CLI; ensure-temporal.sh provides it when omitted. */
  temporalBin?: string;
  /** Own process group, so a terminal Ctrl-C reaches only the parent. */
  detached?: boolean;
  /** How long to wait for the server to answer (default 180 s: slow on 2 busy cores). */
  startTimeoutMs?: number;
}

/** File paths a client of the cluster needs for mutual TLS. */
export interface ClusterTls {
  caPath: string;
  clientCertPath: string;
  clientKeyPath: string;
  /** The name in the server certificate (its SAN also holds 127.0.0.1). */
  serverName: string;
}

export interface TemporalCluster {
  /** Frontend gRPC address, host:port. */
  address: string;
  namespace: string;
  tls: ClusterTls;
  databases: { default: string; visibility: string };
  logFile: string;
  pid: number | undefined;
  process: ChildProcess;
  /** Connection options for the SDK (TLS with the client certificate). */
  connectionOptions(): ConnectionOptions;
  /**
   * The variables a client reads through Temporal's environment conventions
   * (envconfig: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_*).
   */
  clientEnv(): Record<string, string>;
  /** Stops the server, then drops its databases. */
  stop(): Promise<void>;
}

const IP = '127.0.0.1';
const SERVER_NAME = 'localhost';

/** ops/temporal beside the sources, or two levels up from dist/temporal-dev. */
function repoRoot(): string {
  const root = [join(__dirname, '..'), join(__dirname, '..', '..')].find((p) =>
    existsSync(join(p, 'ops', 'temporal', 'cluster.yaml')),
  );
  if (!root) throw new Error(`ops/temporal/cluster.yaml not found above ${__dirname}`);
  return root;
}

/**
 * A CA, the frontend's certificate (localhost, 127.0.0.1) and two client
 * certificates (e2epool's and the server's own system worker's), by openssl.
 * EC P-256 keys in PKCS#8: what Go, OpenSSL (grpc-js) and rustls (the worker's
 * core) all read. Valid two days: a test run never needs more.
 */
export async function generateCertificates(dir: string): Promise<{
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  internalCert: string;
  internalKey: string;
}> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const p = (n: string) => join(dir, n);
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req', '-x509', ...key, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2',
    '-subj', '/CN=e2epool test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]); // prettier-ignore
  const leaf = async (name: string, cn: string, ext: string) => {
    writeFileSync(p(`${name}.ext`), ext);
    await run('openssl', [
      'req', ...key, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`,
    ]); // prettier-ignore
    await run('openssl', [
      'x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.pem'), '-CAkey', p('ca.key'),
      '-CAcreateserial', '-days', '2', '-out', p(`${name}.pem`), '-extfile', p(`${name}.ext`),
    ]); // prettier-ignore
  };
  const common = 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n';
  await leaf(
    'server',
    SERVER_NAME,
    `${common}extendedKeyUsage=serverAuth\nsubjectAltName=DNS:${SERVER_NAME},IP:${IP}\n`,
  );
  await leaf('client', 'e2epool', `${common}extendedKeyUsage=clientAuth\n`);
  await leaf('internal', 'temporal-system-worker', `${common}extendedKeyUsage=clientAuth\n`);
  return {
    ca: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
    internalCert: p('internal.pem'),
    internalKey: p('internal.key'),
  };
}

interface PgTarget {
  host: string;
  port: string;
  user: string;
  password: string;
}

function pgTarget(url: string): PgTarget {
  const u = new URL(url);
  return {
    host: u.hostname || IP,
    port: u.port || '5432',
    user: decodeURIComponent(u.username) || 'postgres',
    password: decodeURIComponent(u.password),
  };
}

/**
 * A free port below 32768: the server records each member's membership port
 * in a Postgres `smallint` column (cluster_membership), so one from Linux's
 * ephemeral range (32768+) stops it at start ("out of range for type smallint").
 */
async function freeSmallintPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (!(await isPortInUse(port))) return port;
  }
  throw new Error('no free port between 20000 and 32000 on 127.0.0.1');
}

/** create-database, setup-schema 0.0, update-schema to the newest versioned dir. */
async function setupSchema(
  sqlTool: string,
  pg: PgTarget,
  db: string,
  versionedDir: string,
): Promise<void> {
  const base = ['--plugin', 'postgres12', '--ep', pg.host, '--port', pg.port, '--user', pg.user];
  // The password goes through the environment (SQL_PASSWORD), not the command line.
  const env = { ...process.env, SQL_PASSWORD: pg.password, SQL_DATABASE: db };
  const step = async (args: string[]) => {
    try {
      await run(sqlTool, [...base, ...args], { env });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`temporal-sql-tool ${args[0]} (${db}) failed: ${e.stderr || e.message}`);
    }
  };
  await step(['create-database']);
  await step(['setup-schema', '-v', '0.0']);
  await step(['update-schema', '-d', versionedDir]);
}

async function dropDatabases(adminUrl: string, names: string[]): Promise<void> {
  const c = new PgClient({ connectionString: adminUrl });
  await c.connect();
  try {
    for (const n of names) await c.query(`DROP DATABASE IF EXISTS "${n}" WITH (FORCE)`);
  } finally {
    await c.end();
  }
}

/** Runs the `temporal` CLI against the cluster over mTLS; rejects with its output. */
async function temporalCli(bin: string, tlsArgs: string[], args: string[]): Promise<string> {
  try {
    const { stdout } = await run(bin, [...args, ...tlsArgs], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, TEMPORAL_CONFIG_FILE: '/dev/null' },
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`temporal ${args.slice(0, 3).join(' ')}: ${e.stderr || e.stdout || e.message}`);
  }
}

/** Starts a production-mode Temporal Server; see the file comment. */
export async function startTemporalCluster(o: ClusterOptions): Promise<TemporalCluster> {
  const namespace = o.namespace ?? 'e2epool-ci';
  const server = ensureTemporalServer();
  const temporalBin = o.temporalBin ?? ensureBinary('temporal');
  const timeoutMs = o.startTimeoutMs ?? 180_000;
  const started = Date.now(); // after the binaries: a first build is timed by its script
  const pg = pgTarget(o.adminDatabaseUrl);
  const suffix = randomBytes(4).toString('hex');
  const databases = { default: `temporal_${suffix}`, visibility: `temporal_vis_${suffix}` };

  const [certs] = await Promise.all([
    generateCertificates(join(o.workDir, `tls-${suffix}`)),
    setupSchema(
      server.sqlTool,
      pg,
      databases.default,
      join(server.schemaDir, 'temporal', 'versioned'),
    ),
    setupSchema(
      server.sqlTool,
      pg,
      databases.visibility,
      join(server.schemaDir, 'visibility', 'versioned'),
    ),
  ]).catch(async (err: unknown) => {
    await dropDatabases(o.adminDatabaseUrl, Object.values(databases)).catch(() => undefined);
    throw err;
  });

  const ports: Record<string, number> = {};
  for (const name of ['FRONTEND', 'FRONTEND_HTTP', 'HISTORY', 'MATCHING', 'WORKER'])
    ports[name] = await freePort();
  for (const name of ['FRONTEND', 'HISTORY', 'MATCHING', 'WORKER'])
    ports[`${name}_MEMBERSHIP`] = await freeSmallintPort();
  const root = repoRoot();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    E2EPOOL_TS_LOG_LEVEL: process.env.E2EPOOL_TS_LOG_LEVEL ?? 'warn',
    E2EPOOL_TS_DB: databases.default,
    E2EPOOL_TS_VISIBILITY_DB: databases.visibility,
    E2EPOOL_TS_PG_HOST: pg.host,
    E2EPOOL_TS_PG_PORT: pg.port,
    E2EPOOL_TS_PG_USER: pg.user,
    E2EPOOL_TS_PG_PASSWORD: pg.password,
    E2EPOOL_TS_TLS_CA: certs.ca,
    E2EPOOL_TS_TLS_SERVER_CERT: certs.serverCert,
    E2EPOOL_TS_TLS_SERVER_KEY: certs.serverKey,
    E2EPOOL_TS_TLS_INTERNAL_CERT: certs.internalCert,
    E2EPOOL_TS_TLS_INTERNAL_KEY: certs.internalKey,
    E2EPOOL_TS_TLS_SERVER_NAME: SERVER_NAME,
    E2EPOOL_TS_DYNAMIC_CONFIG: join(root, 'ops', 'temporal', 'dynamicconfig.yaml'),
    ...Object.fromEntries(
      Object.entries(ports).map(([k, v]) => [`E2EPOOL_TS_${k}_PORT`, String(v)]),
    ),
  };
  const logFile = join(o.workDir, `temporal-server-${suffix}.log`);
  const out = createWriteStream(logFile, { flags: 'a' });
  // --allow-no-auth: who may connect is decided by the client CA (mTLS); no
  // per-namespace authorizer is configured
  // (docs/contributing.md, "Cluster config (ops/temporal/)").
  const child = spawn(
    server.server,
    [
      '--root',
      root,
      '--config',
      join('ops', 'temporal'),
      '--env',
      'cluster',
      '--allow-no-auth',
      'start',
    ],
    { env, stdio: ['ignore', 'pipe', 'pipe'], detached: o.detached ?? false },
  );
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));

  const address = `${IP}:${ports.FRONTEND}`;
  const tls: ClusterTls = {
    caPath: certs.ca,
    clientCertPath: certs.clientCert,
    clientKeyPath: certs.clientKey,
    serverName: SERVER_NAME,
  };
  const connectionOptions = (): ConnectionOptions => ({
    address,
    tls: {
      serverNameOverride: SERVER_NAME,
      serverRootCACertificate: readFileSync(certs.ca),
      clientCertPair: { crt: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) },
    },
  });
  const stopServer = async () => {
    if (!gone) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(killer);
    }
  };
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await stopServer();
    await dropDatabases(o.adminDatabaseUrl, Object.values(databases));
  };
  const tailOfLog = () => {
    try {
      return readFileSync(logFile, 'utf8').slice(-4000);
    } catch {
      return '(no log)';
    }
  };

  const cliTls = [
    '--address', address, '--tls-cert-path', certs.clientCert, '--tls-key-path', certs.clientKey,
    '--tls-ca-path', certs.ca, '--tls-server-name', SERVER_NAME,
  ]; // prettier-ignore
  const deadline = Date.now() + timeoutMs;
  /** Retries `attempt` until it succeeds, the server exits, or the deadline passes. */
  const until = async <T>(what: string, attempt: () => Promise<T>): Promise<T> => {
    let last: unknown;
    while (!gone && Date.now() < deadline) {
      try {
        return await attempt();
      } catch (err) {
        last = err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    const why = gone
      ? `the server exited (code ${child.exitCode})`
      : `no success within ${timeoutMs / 1000}s`;
    throw new Error(
      `Temporal cluster: ${what}: ${why}; last error: ${(last as Error | undefined)?.message ?? 'none'}\n` +
        `Server log (${logFile}), last lines:\n${tailOfLog()}`,
    );
  };

  try {
    await until('cluster health', () =>
      temporalCli(temporalBin, cliTls, ['operator', 'cluster', 'health']),
    );
    await until('namespace create', async () => {
      try {
        await temporalCli(temporalBin, cliTls, [
          'operator', 'namespace', 'create', '--namespace', namespace, '--retention', '24h',
        ]); // prettier-ignore
      } catch (err) {
        // A retry after a create that timed out on our side but went through.
        if (!/already (exists|registered)/i.test((err as Error).message)) throw err;
      }
    });
    const saArgs = searchAttributeFlags().flatMap((f) => {
      const [name, type] = f.split('=');
      return ['--name', name!, '--type', type!];
    });
    // The frontend learns of a new namespace on its next registry refresh
    // (every 10 s by default): retry until it does.
    await until(
      'search attributes',
      () =>
      temporalCli(temporalBin, cliTls, [
        'operator', 'search-attribute', 'create', '--namespace', namespace, ...saArgs,
      ]), // prettier-ignore
    );
    // Ready when a client with the certificate can list workflows in the namespace.
    await until('namespace answers', async () => {
      const conn = await Connection.connect({ ...connectionOptions(), connectTimeout: 5000 });
      try {
        await conn.workflowService.listWorkflowExecutions({ namespace, pageSize: 1 });
      } finally {
        await conn.close();
      }
    });
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  process.stderr.write(
    `temporal-cluster: ${address} namespace ${namespace} ready in ${((Date.now() - started) / 1000).toFixed(1)}s (log ${logFile})\n`,
  );

  return {
    address,
    namespace,
    tls,
    databases,
    logFile,
    pid: child.pid,
    process: child,
    connectionOptions,
    clientEnv: () => ({
      TEMPORAL_ADDRESS: address,
      TEMPORAL_NAMESPACE: namespace,
      TEMPORAL_TLS_CLIENT_CERT_PATH: certs.clientCert,
      TEMPORAL_TLS_CLIENT_KEY_PATH: certs.clientKey,
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: certs.ca,
      TEMPORAL_TLS_SERVER_NAME: SERVER_NAME,
    }),
    stop,
  };
}
