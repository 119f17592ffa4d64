/**
 * `e2epool doctor`: checks, in order, that this controller is wired up right
 * and prints one line per check. It writes nothing: no database writes (not
 * even the migrations table TypeORM would create), no GitLab, GitHub or
 * Proxmox mutation, no workflow start. Every check has a deadline, so a hung
 * dependency is a failing line, not a hang. Secrets are never printed.
 */
import { gitlabPollTaskQueue, gitlabTaskQueue } from '../common/gitlab-budget';
import { Connection } from '@temporalio/client';
import type { DataSource } from 'typeorm';
import { GitHubClient } from '../activities/github/client';
import { GitLabClient } from '../activities/gitlab/client';
import { proxmoxClientFactory } from '../activities/proxmox/steps';
import {
  InventoryError,
  loadInventoryFile,
  proxmoxBaseUrl,
  type Inventory,
  type ProxmoxRunner,
  type RunnerConfig,
} from '../config/inventory';
import { createLogger } from '../config/logger';
import { SecretBox } from '../config/secret-box';
import { ConfigError, loadSettings, type Settings } from '../config/settings';
import { loadTemporalSettings, type TemporalConnectSettings } from '../config/temporal';
import { createDataSource, MIGRATIONS_TABLE } from '../store/data-source';
import { AgentSessionStore } from '../store/agent-sessions';
import { MIGRATIONS } from '../store/migrations';
import { registrySource } from '../store/registry-feed';
import {
  checkSearchAttributes,
  createCommand,
  describeReport,
  withTimeout,
} from '../worker/search-attributes';

/** One line of the report. */
export interface DoctorCheck {
  /** e.g. `temporal`, `proxmox-privileges`. */
  name: string;
  /** The runner it is about; null for the controller's own checks. */
  runner: string | null;
  ok: boolean;
  /** What was found. */
  detail: string;
  /**
   * What to do about a failure, or about a warning (an ok check with a fix:
   * it works, but is weaker than it should be); null when ok.
   */
  fix: string | null;
}

export interface DoctorOptions {
  json?: boolean;
  /** Deadline of each check, in seconds. */
  timeout: number;
}

/** Exit codes: 0 every check ok, 1 one failed (2, a usage error, is commander's, see main.ts). */
export const DOCTOR_EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** Privileges e2epool's Proxmox calls need on /vms/{vmid} (reference §1.5, §1.12). */
const PROXMOX_PRIVILEGES: Array<{ any: string[]; for: string }> = [
  { any: ['VM.Audit'], for: 'VM status and snapshot list' },
  { any: ['VM.Snapshot'], for: 'snapshot create/delete' },
  { any: ['VM.Snapshot.Rollback', 'VM.Snapshot'], for: 'rollback' },
  { any: ['VM.PowerMgmt'], for: 'start/stop' },
];

/** Pollers seen this recently are live workers (long polls last about a minute; the server remembers pollers for 5). */
const POLLER_LIVE_MS = 2 * 60_000;

/** gRPC NOT_FOUND. */
const GRPC_NOT_FOUND = 5;

function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

const ok = (name: string, runner: string | null, detail: string): DoctorCheck => ({
  name,
  runner,
  ok: true,
  detail,
  fix: null,
});
const bad = (name: string, runner: string | null, detail: string, fix: string): DoctorCheck => ({
  name,
  runner,
  ok: false,
  detail,
  fix,
});

/** Runs `fn` with a deadline; a throw or a timeout becomes a failing check. */
async function guarded(
  name: string,
  runner: string | null,
  ms: number,
  fix: string,
  fn: () => Promise<DoctorCheck>,
): Promise<DoctorCheck> {
  try {
    return await withTimeout(`${name} check`, ms, fn());
  } catch (err) {
    return bad(name, runner, message(err), fix);
  }
}

/** Runs `fn` over `items`, at most `limit` at once, keeping their order. */
async function mapLimited<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  });
  await Promise.all(lanes);
  return out;
}

interface Context {
  settings: Settings;
  temporal: TemporalConnectSettings;
  ms: number;
}

// ---- Temporal --------------------------------------------------------------------------------

async function temporalChecks(c: Context): Promise<DoctorCheck[]> {
  const { address, namespace } = c.temporal;
  const notChecked = (why: string) => [
    bad('search-attributes', null, `not checked: ${why}`, 'fix the temporal check first'),
    bad('worker', null, `not checked: ${why}`, 'fix the temporal check first'),
  ];
  let connection: Connection;
  try {
    connection = await withTimeout(
      `Temporal at ${address}`,
      c.ms,
      Connection.connect({
        ...(c.temporal.connectionOptions as Parameters<typeof Connection.connect>[0]),
        connectTimeout: c.ms,
      }),
    );
  } catch (err) {
    return [
      bad(
        'temporal',
        null,
        `cannot reach Temporal at ${address}: ${message(err)}`,
        'start Temporal, or set TEMPORAL_ADDRESS (and TEMPORAL_TLS_* / TEMPORAL_API_KEY) to reach it',
      ),
      ...notChecked('Temporal is unreachable'),
    ];
  }
  try {
    const deadline = () => Date.now() + c.ms;
    const first = await guarded(
      'temporal',
      null,
      c.ms,
      'check TEMPORAL_NAMESPACE and that this client may read it',
      async () => {
        try {
          await connection.withDeadline(deadline(), () =>
            connection.workflowService.describeNamespace({ namespace }),
          );
        } catch (err) {
          if ((err as { code?: number }).code === GRPC_NOT_FOUND) {
            return bad(
              'temporal',
              null,
              `reachable at ${address}, but namespace ${namespace} does not exist`,
              `create it (temporal operator namespace create --namespace ${namespace}) or set TEMPORAL_NAMESPACE`,
            );
          }
          throw err;
        }
        return ok('temporal', null, `reachable at ${address}, namespace ${namespace} present`);
      },
    );
    if (!first.ok) return [first, ...notChecked(`namespace ${namespace} is not usable`)];
    const sa = guarded('search-attributes', null, c.ms, 'run `e2epool setup`', async () => {
      const report = await checkSearchAttributes(connection, namespace, c.ms);
      if (!report.missing.length && !report.wrongType.length)
        return ok('search-attributes', null, `namespace ${namespace} has all five, as Keyword`);
      const what = [
        ...report.missing.map((n) => `${n} missing`),
        ...report.wrongType.map((w) => `${w.name} is ${w.has}, not Keyword`),
      ].join('; ');
      const fix = report.wrongType.length
        ? describeReport(namespace, report).join('; ')
        : `run \`e2epool setup\` (or \`e2epool worker\`, which registers them at start), or: ${report.missing
            .map((n) => createCommand(namespace, n, 'KEYWORD'))
            .join('; ')}`;
      return bad('search-attributes', null, `namespace ${namespace}: ${what}`, fix);
    });
    const worker = guarded('worker', null, c.ms, 'start `e2epool worker`', async () => {
      /** Identities of the workers that polled `name` within POLLER_LIVE_MS. */
      const pollers = async (name: string, taskQueueType: number) => {
        const res = await connection.withDeadline(deadline(), () =>
          connection.workflowService.describeTaskQueue({
            namespace,
            taskQueue: { name, kind: 1 }, // TASK_QUEUE_KIND_NORMAL
            taskQueueType,
          }),
        );
        const now = Date.now();
        return (res.pollers ?? [])
          .filter((p) => {
            const s = p.lastAccessTime?.seconds;
            const at = s === undefined || s === null ? 0 : Number(s) * 1000;
            return now - at < POLLER_LIVE_MS;
          })
          .map((p) => p.identity ?? '?');
      };
      const queue = c.settings.taskQueue;
      // TASK_QUEUE_TYPE_WORKFLOW
      const live = await pollers(queue, 1);
      if (!live.length) {
        return bad(
          'worker',
          null,
          `no worker polls task queue ${queue} in namespace ${namespace}`,
          `start \`e2epool worker\` with E2EPOOL_TASK_QUEUE=${queue} and the same Temporal settings`,
        );
      }
      // GitLab activities run on queues of their own (the rate budget); a worker
      // from before that change polls only the main queue, and resets would wait.
      if (c.settings.gitlabUrl) {
        for (const q of [gitlabTaskQueue(queue), gitlabPollTaskQueue(queue)]) {
          // TASK_QUEUE_TYPE_ACTIVITY
          if ((await pollers(q, 2)).length === 0) {
            return bad(
              'worker',
              null,
              `no worker polls the GitLab task queue ${q} (workers: ${live.join(', ')})`,
              'upgrade every `e2epool worker` to this version: older workers do not run GitLab calls on the rate-limited queues',
            );
          }
        }
      }
      return ok(
        'worker',
        null,
        `${live.length} worker${live.length === 1 ? '' : 's'} polling task queue ${queue} (${live.join(', ')})`,
      );
    });
    return [first, ...(await Promise.all([sa, worker]))];
  } finally {
    await connection.close().catch(() => undefined);
  }
}

// ---- Postgres and the inventory --------------------------------------------------------------

interface Database {
  check: DoctorCheck;
  ds: DataSource | null;
  /** Whether the tables are all there (the registry and sessions can be read). */
  current: boolean;
}

async function databaseCheck(c: Context): Promise<Database> {
  const ds = createDataSource({
    url: c.settings.databaseUrl,
    poolSize: 2,
    applicationName: 'e2epool-doctor',
  });
  const fixReach = 'start Postgres, or set E2EPOOL_DATABASE_URL to reach it';
  try {
    // Never `runMigrations` nor TypeORM's pending-migration helpers: both create the migrations table.
    await withTimeout('connecting to Postgres', c.ms, ds.initialize());
  } catch (err) {
    if (ds.isInitialized) await ds.destroy().catch(() => undefined);
    return {
      check: bad('postgres', null, `cannot reach Postgres: ${message(err)}`, fixReach),
      ds: null,
      current: false,
    };
  }
  const check = await guarded('postgres', null, c.ms, fixReach, async () => {
    const [t] = (await ds.query('SELECT to_regclass($1) IS NOT NULL AS present', [
      MIGRATIONS_TABLE,
    ])) as Array<{ present: boolean }>;
    const applied = t?.present
      ? ((await ds.query(`SELECT name FROM ${MIGRATIONS_TABLE}`)) as Array<{ name: string }>).map(
          (r) => r.name,
        )
      : [];
    const known = MIGRATIONS.map((M) => new M().name!);
    const pending = known.filter((n) => !applied.includes(n));
    const unknown = applied.filter((n) => !known.includes(n));
    if (pending.length) {
      return bad(
        'postgres',
        null,
        `reachable, ${pending.length} migration${pending.length === 1 ? '' : 's'} pending: ${pending.join(', ')}`,
        'run `e2epool migrate` (the API and the worker also apply them at start)',
      );
    }
    if (unknown.length) {
      return bad(
        'postgres',
        null,
        `reachable, but it has migrations this e2epool does not know (${unknown.join(', ')}): a newer version migrated it`,
        'run the same e2epool version everywhere',
      );
    }
    return ok('postgres', null, `reachable, migrations current (${known.length} applied)`);
  });
  return { check, ds, current: check.ok };
}

async function inventoryCheck(
  c: Context,
  db: Database,
): Promise<{ check: DoctorCheck; inventory: Inventory | null }> {
  const path = c.settings.inventoryPath;
  try {
    const { inventory: file } = loadInventoryFile(path);
    if (!db.ds || !db.current) {
      return {
        check: ok(
          'inventory',
          null,
          `${file.size} runner${file.size === 1 ? '' : 's'} in ${path} (the registry was not read: see the postgres check)`,
        ),
        inventory: file,
      };
    }
    // A registry row that cannot be used is left out (the API and the worker log it).
    const log = createLogger('silent');
    const source = registrySource(
      db.ds,
      c.settings.secretKey ? new SecretBox(c.settings.secretKey) : null,
      log,
    );
    const entries = await withTimeout('reading the runner registry', c.ms, source.load());
    const inventory = file.withRegistry(entries);
    const fromRegistry = inventory.size - file.size;
    return {
      check: ok(
        'inventory',
        null,
        `${inventory.size} runner${inventory.size === 1 ? '' : 's'}: ${file.size} in ${path}, ${fromRegistry} from the registry`,
      ),
      inventory,
    };
  } catch (err) {
    const fix =
      err instanceof InventoryError
        ? 'fix the inventory (the API and the worker refuse it too)'
        : 'check E2EPOOL_INVENTORY_PATH and the runner registry';
    return { check: bad('inventory', null, message(err), fix), inventory: null };
  }
}

/**
 * Runners whose agent opens /ws/agent with the REST token: their CI jobs hold
 * that token too and could stand in for the agent. A warning, not a failure:
 * it is how the Python agent's configs work.
 */
function agentCredentialCheck(inventory: Inventory): DoctorCheck {
  const shared = inventory.sharedCredentialRunners();
  if (shared.length === 0)
    return ok('agent-credential', null, "every runner's agent has an agent token of its own");
  const shown = shared.slice(0, 10);
  const more = shared.length > shown.length ? ` and ${shared.length - shown.length} more` : '';
  return {
    name: 'agent-credential',
    runner: null,
    ok: true,
    detail: `${shared.length} of ${inventory.size} runners share one credential between agent and CI jobs (no agent token): ${shown.join(', ')}${more}`,
    fix: "give each an agent_token (inventory.yml, or POST /api/runners/{id}/rotate-agent-token) and put it in the agent's config",
  };
}

// ---- GitLab and GitHub -----------------------------------------------------------------------

const GITLAB_PAUSE_SCOPES = ['api', 'manage_runner'];
const GITLAB_READ_SCOPES = ['api', 'read_api'];

async function gitlabTokenCheck(c: Context, gitlab: GitLabClient): Promise<DoctorCheck> {
  const fix =
    'create a token with the api scope (or manage_runner, plus read_api for the job poller) and set E2EPOOL_GITLAB_TOKEN';
  return guarded('gitlab-token', null, c.ms, fix, async () => {
    const scopes = await gitlab.tokenScopes();
    if (scopes === null) {
      return bad(
        'gitlab-token',
        null,
        'GitLab did not describe the token (404 on /personal_access_tokens/self: GitLab before 15.5, or not an access token)',
        'make sure the token has the api scope (or manage_runner and read_api); the runner checks below still tell whether it reads runners',
      );
    }
    const canPause = scopes.some((s) => GITLAB_PAUSE_SCOPES.includes(s));
    const canRead = scopes.some((s) => GITLAB_READ_SCOPES.includes(s));
    const list = scopes.length ? scopes.join(', ') : 'none';
    if (!canPause)
      return bad(
        'gitlab-token',
        null,
        `token scopes ${list}: cannot pause or unpause runners (needs api or manage_runner)`,
        fix,
      );
    if (c.settings.pollerEnabled && !canRead)
      return bad(
        'gitlab-token',
        null,
        `token scopes ${list}: cannot read job status for the job poller (needs api or read_api)`,
        fix,
      );
    return ok('gitlab-token', null, `token valid, scopes ${list}`);
  });
}

async function gitlabRunnerCheck(
  c: Context,
  gitlab: GitLabClient | null,
  r: RunnerConfig,
): Promise<DoctorCheck> {
  const id = r.gitlab_runner_id!;
  if (!gitlab)
    return bad(
      'gitlab-runner',
      r.runner_id,
      `gitlab_runner_id ${id} is set, but E2EPOOL_GITLAB_URL and E2EPOOL_GITLAB_TOKEN are not: the runner is never paused`,
      'set E2EPOOL_GITLAB_URL and E2EPOOL_GITLAB_TOKEN',
    );
  return guarded(
    'gitlab-runner',
    r.runner_id,
    c.ms,
    'check E2EPOOL_GITLAB_URL and that GitLab is reachable',
    async () => {
      try {
        const paused = await gitlab.runnerPaused(id);
        return ok(
          'gitlab-runner',
          r.runner_id,
          `GitLab runner ${id} exists (${paused ? 'paused' : 'not paused'})`,
        );
      } catch (err) {
        const m = message(err);
        if (/: 404 /.test(m))
          return bad(
            'gitlab-runner',
            r.runner_id,
            `GitLab has no runner ${id}`,
            "set gitlab_runner_id to the runner's id (GitLab: Settings → CI/CD → Runners, or GET /runners)",
          );
        if (/: 403 /.test(m))
          return bad(
            'gitlab-runner',
            r.runner_id,
            `the token may not read GitLab runner ${id}: ${m}`,
            "the token's user needs Maintainer on the runner's project (Owner of its group; admin for an instance runner)",
          );
        throw err;
      }
    },
  );
}

async function githubRunnerCheck(
  c: Context,
  github: GitHubClient | null,
  r: RunnerConfig,
): Promise<DoctorCheck> {
  const id = r.github_runner_id!;
  if (!github)
    return bad(
      'github-runner',
      r.runner_id,
      `github_runner_id ${id} is set, but E2EPOOL_GITHUB_TOKEN is not: its labels are never taken off`,
      'set E2EPOOL_GITHUB_TOKEN',
    );
  const scope = r.github_repo ? { repo: r.github_repo } : { org: r.github_org! };
  const where = 'repo' in scope ? `repository ${scope.repo}` : `organization ${scope.org}`;
  return guarded(
    'github-runner',
    r.runner_id,
    c.ms,
    `the token needs admin rights on the ${where} (fine-grained: Administration, or the organization's Self-hosted runners permission)`,
    async () => {
      let labels;
      try {
        labels = await github.runnerLabels(scope, id);
      } catch (err) {
        // GitHub answers 404 both for a runner that does not exist and for one the token may not see.
        if (!/: 404 /.test(message(err))) throw err;
        return bad(
          'github-runner',
          r.runner_id,
          `GitHub has no runner ${id} in ${where}, or the token may not see it`,
          `check github_runner_id (GET ${'repo' in scope ? `/repos/${scope.repo}` : `/orgs/${scope.org}`}/actions/runners lists them) and that the token has admin rights on the ${where}`,
        );
      }
      return ok(
        'github-runner',
        r.runner_id,
        `GitHub runner ${id} in ${where} readable (labels: ${labels.map((l) => l.name).join(', ') || 'none'})`,
      );
    },
  );
}

// ---- Proxmox ---------------------------------------------------------------------------------

function tlsMode(r: ProxmoxRunner): string {
  if (proxmoxBaseUrl(r).startsWith('http:')) return 'plain HTTP, no TLS';
  if (r.proxmox_fingerprint) return 'TLS, pinned fingerprint matched';
  if (!r.proxmox_verify_tls) return 'TLS NOT verified (proxmox_verify_tls: false)';
  if (r.proxmox_ca_file) return `TLS verified with ${r.proxmox_ca_file}`;
  return 'TLS verified with the system CAs';
}

async function proxmoxChecks(
  c: Context,
  clientFor: ReturnType<typeof proxmoxClientFactory>,
  r: ProxmoxRunner,
): Promise<DoctorCheck[]> {
  const id = r.runner_id;
  const client = clientFor(r);
  const tokenId = `${r.proxmox_user}!${r.proxmox_token_name}`;
  let perms: Record<string, number> | undefined;
  const api = await guarded(
    'proxmox-api',
    id,
    c.ms,
    'check proxmox_host and that the worker reaches it (port 8006)',
    async () => {
      try {
        perms = await client.permissions(client.aclPath);
      } catch (err) {
        const m = message(err);
        if (/TLS verification failed/.test(m))
          return bad(
            'proxmox-api',
            id,
            m.replace(/; set proxmox_ca_file.*$/, ''),
            r.proxmox_fingerprint
              ? "proxmox_fingerprint does not match the node's certificate: set it to the SHA-256 that `pvenode cert info` shows, or use proxmox_ca_file"
              : "set proxmox_ca_file to the cluster CA (pve-root-ca.pem) or proxmox_fingerprint to the node certificate's SHA-256 (`pvenode cert info`)",
          );
        if (/rejected the API token/.test(m))
          return bad(
            'proxmox-api',
            id,
            `${m} for ${tokenId}`,
            'check proxmox_user, proxmox_token_name and proxmox_token_value (`pveum user token list <user>`)',
          );
        throw err;
      }
      return ok(
        'proxmox-api',
        id,
        `${r.proxmox_host} answered (${tlsMode(r)}), token ${tokenId} accepted`,
      );
    },
  );
  if (!api.ok || !perms) {
    const skip = (name: string) =>
      bad(
        name,
        id,
        'not checked: the Proxmox API did not answer',
        'fix the proxmox-api check first',
      );
    return [api, skip('proxmox-privileges'), skip('proxmox-vm')];
  }
  const have = perms;
  const missing = PROXMOX_PRIVILEGES.filter((p) => !p.any.some((x) => have[x] !== undefined));
  const privileges = missing.length
    ? bad(
        'proxmox-privileges',
        id,
        `token ${tokenId} lacks ${missing.map((p) => `${p.any.join(' or ')} (${p.for})`).join(', ')} on ${client.aclPath}`,
        `grant them, e.g. pveum acl modify ${client.aclPath} -token '${tokenId}' -role PVEVMAdmin (with privilege separation the token's user needs them too)`,
      )
    : ok(
        'proxmox-privileges',
        id,
        `token ${tokenId} has VM.Audit, VM.Snapshot, VM.PowerMgmt on ${client.aclPath}`,
      );
  const vm = await guarded(
    'proxmox-vm',
    id,
    c.ms,
    'check proxmox_node and proxmox_vmid',
    async () => {
      try {
        const st = await client.vmStatus();
        return ok(
          'proxmox-vm',
          id,
          `VM ${r.proxmox_vmid} on node ${r.proxmox_node} is ${st.status}`,
        );
      } catch (err) {
        if (/VM not found/.test(message(err)))
          return bad(
            'proxmox-vm',
            id,
            `no VM ${r.proxmox_vmid} on node ${r.proxmox_node}`,
            'set proxmox_node and proxmox_vmid to where the VM is (`qm list` on the node)',
          );
        throw err;
      }
    },
  );
  return [api, privileges, vm];
}

// ---- Agents ----------------------------------------------------------------------------------

async function agentChecks(
  c: Context,
  db: Database,
  runners: RunnerConfig[],
): Promise<Map<string, DoctorCheck>> {
  const out = new Map<string, DoctorCheck>();
  const fix =
    'start the agent on the runner host (systemctl start e2epool-agent) and check its controller_url and token';
  if (!db.ds || !db.current) {
    for (const r of runners)
      out.set(
        r.runner_id,
        bad(
          'agent',
          r.runner_id,
          'not checked: see the postgres check',
          'fix the postgres check first',
        ),
      );
    return out;
  }
  try {
    const sessions = new AgentSessionStore(db.ds);
    const states = await withTimeout(
      'reading agent sessions',
      c.ms,
      sessions.agentsOf(
        runners.map((r) => r.runner_id),
        c.settings.wsHeartbeatTimeoutSeconds,
      ),
    );
    for (const r of runners) {
      const s = states.get(r.runner_id);
      const seen = s ? `last heard from ${s.lastSeenAt.toISOString()}` : '';
      out.set(
        r.runner_id,
        !s
          ? bad(
              'agent',
              r.runner_id,
              'agent not connected (no session on record: it never connected, or its credentials were revoked)',
              fix,
            )
          : s.status === 'live'
            ? ok('agent', r.runner_id, `agent connected, ${seen}`)
            : s.status === 'unreachable'
              ? bad(
                  'agent',
                  r.runner_id,
                  `agent unreachable: silent longer than E2EPOOL_WS_HEARTBEAT_TIMEOUT (${c.settings.wsHeartbeatTimeoutSeconds} s), ${seen}`,
                  'check the runner host and its network to the API',
                )
              : bad('agent', r.runner_id, `agent not connected (disconnected, ${seen})`, fix),
      );
    }
  } catch (err) {
    for (const r of runners) out.set(r.runner_id, bad('agent', r.runner_id, message(err), fix));
  }
  return out;
}

// ---- The whole report ------------------------------------------------------------------------

/** Runs every check; never throws for what it checks (a bad setting is a failing `settings` line). */
export async function runChecks(
  opts: DoctorOptions,
  env: NodeJS.ProcessEnv = process.env,
): Promise<DoctorCheck[]> {
  let settings: Settings;
  let temporal: TemporalConnectSettings;
  try {
    settings = loadSettings(env);
    temporal = loadTemporalSettings(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return [bad('settings', null, err.message, 'fix the setting (see the README settings table)')];
  }
  const ms = Math.round(opts.timeout * 1000);
  const c: Context = { settings, temporal, ms };

  const [temporalResults, db] = await Promise.all([temporalChecks(c), databaseCheck(c)]);
  try {
    const checks: DoctorCheck[] = [
      temporalResults[0]!,
      temporalResults[1]!,
      db.check,
      temporalResults[2]!,
    ];
    const inv = await inventoryCheck(c, db);
    checks.push(inv.check);
    if (!inv.inventory) return checks;
    checks.push(agentCredentialCheck(inv.inventory));
    const runners = [...inv.inventory.runners];

    const httpTimeout = Math.min(settings.httpTimeoutSeconds * 1000, ms);
    const gitlab =
      settings.gitlabUrl && settings.gitlabToken
        ? new GitLabClient(settings.gitlabUrl, settings.gitlabToken, httpTimeout)
        : null;
    const github = settings.githubToken
      ? new GitHubClient(settings.githubUrl, settings.githubToken, httpTimeout)
      : null;
    const usesGitlab = runners.some((r) => r.ci_adapter === 'gitlab' && r.gitlab_runner_id);
    if (gitlab && usesGitlab) checks.push(await gitlabTokenCheck(c, gitlab));

    const clientFor = proxmoxClientFactory({
      settings: { ...settings, httpTimeoutSeconds: httpTimeout / 1000 },
    });
    const agents = await agentChecks(c, db, runners);
    const perRunner = await mapLimited(runners, 8, async (r) => {
      const out: DoctorCheck[] = [];
      if (r.ci_adapter === 'gitlab' && r.gitlab_runner_id)
        out.push(await gitlabRunnerCheck(c, gitlab, r));
      if (r.ci_adapter === 'github' && r.github_runner_id)
        out.push(await githubRunnerCheck(c, github, r));
      if (r.backend === 'proxmox') out.push(...(await proxmoxChecks(c, clientFor, r)));
      out.push(agents.get(r.runner_id)!);
      return out;
    });
    for (const list of perRunner) checks.push(...list);
    return checks;
  } finally {
    await db.ds?.destroy().catch(() => undefined);
  }
}

/** One line: `ok|warn|fail <check>: <detail>[ — <fix>]`, the runner's checks prefixed with it. */
export function formatCheck(k: DoctorCheck): string {
  const name = k.runner ? `${k.runner} ${k.name}` : k.name;
  const level = !k.ok ? 'fail' : k.fix ? 'warn' : 'ok';
  return `${level} ${name}: ${k.detail}${k.fix ? ` — ${k.fix}` : ''}`;
}

/** `e2epool doctor [--json] [--timeout s]`: prints the report, returns the exit code. */
export async function runDoctor(opts: DoctorOptions): Promise<number> {
  const checks = await runChecks(opts);
  const allOk = checks.every((k) => k.ok);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ ok: allOk, checks }, null, 2)}\n`);
  } else {
    for (const k of checks) process.stdout.write(`${formatCheck(k)}\n`);
  }
  return allOk ? DOCTOR_EXIT.ok : DOCTOR_EXIT.failed;
}
