/* eslint-disable max-lines -- a declarative table: one row of docs/reference.md per setting */
/**
 * What each setting means: the text of docs/reference.md's settings table,
 * which `npm run docs:reference` (dev/docs-reference.ts) writes from this
 * table and the code's defaults (the controller's schema, config/settings.ts;
 * the agent's fields, agent/config.ts). A controller setting without a row
 * here fails the typecheck; any other variable the code reads without one
 * fails test/unit/docs-reference.test.ts.
 */
import type { ControllerSettingName } from './settings';

/** One setting's row. */
export interface SettingDoc {
  /** Which processes act on it: api, worker, both (api and worker), all, agent, CLI, dev, test. */
  readBy: string;
  /** What it does (markdown, one line). */
  meaning: string;
  /** Shown after "unset: " when it has no default, e.g. `open`. */
  unsetMeans?: string;
}

/** A setting whose default no schema here states: shown as written. */
export interface OtherSettingDoc extends SettingDoc {
  shownDefault: string;
  /** The table it is in: the agent's and CLI's, or development and tests. */
  group: 'agent' | 'dev';
}

/** The controller's settings (`api`, `worker` and the one-shot commands), in the table's order. */
export const CONTROLLER_SETTING_DOCS: Record<ControllerSettingName, SettingDoc> = {
  E2EPOOL_DATABASE_URL: {
    readBy: 'both, dev',
    meaning: 'Postgres. `npm run dev` starts an embedded one when unset',
  },
  E2EPOOL_INVENTORY_PATH: {
    readBy: 'both, dev',
    meaning:
      'the runners (see [Inventory](#inventory)). `npm run dev`, when unset: `./inventory.yml` if there is one, else a generated demo inventory',
  },
  E2EPOOL_CHECKPOINT_TTL_SECONDS: {
    readBy: 'api',
    meaning: 'a checkpoint not finalized by then is reset (`gc_reset`)',
  },
  E2EPOOL_POLLER_INTERVAL_SECONDS: {
    readBy: 'api',
    meaning:
      "how often a GitLab or GitHub job's status is polled, at most; a GitLab runner's interval is stretched to fit the fleet's polls into their share of the budget (see [GitLab rate budget](operators.md#gitlab-rate-budget): ~290 s for 1,000 runners at the defaults)",
  },
  E2EPOOL_POLLER_MIN_AGE_SECONDS: {
    readBy: 'api',
    meaning:
      'polling starts once the checkpoint is this old: its first poll comes at a random moment within one poll interval after it, so checkpoints created together do not poll together',
  },
  E2EPOOL_POLLER_ENABLED: {
    readBy: 'worker',
    meaning:
      "poll GitLab or GitHub for the job's status. A job is polled only when the worker has the runner's CI client, this is on, and the checkpoint has a `project_id`",
  },
  E2EPOOL_FINALIZE_COOLDOWN_SECONDS: {
    readBy: 'api',
    meaning:
      'the least time between the end of a reset or cleanup and the next create; runs before the unpause (creates inside it get 429 with `Retry-After`)',
  },
  E2EPOOL_FINALIZE_ACK_SECONDS: {
    readBy: 'api',
    meaning:
      'a finalize answers 202 once the runner is paused, or after this long while the pause goes on',
  },
  E2EPOOL_CREATE_TIMEOUT_SECONDS: {
    readBy: 'api',
    meaning:
      "a create not done by then answers 504 and is compensated (snapshot removed, `create_failed`); keep it under the agent CLI's 30 s",
  },
  E2EPOOL_UNPAUSE_RETRY_SECONDS: {
    readBy: 'api',
    meaning:
      "any refused unpause (GitLab 401/403/404; GitHub: the labels' restore) waits in `needs_attention`, tried again this often (at once on `retry`; `release` gives up)",
  },
  E2EPOOL_RECONCILE_INTERVAL_SECONDS: {
    readBy: 'worker',
    meaning:
      'how often the reconciler (Temporal schedule `e2epool-reconcile`, set up by every worker at start) compares Postgres with Temporal, GitLab, GitHub and Proxmox',
  },
  E2EPOOL_RECONCILE_REPAIR: {
    readBy: 'worker',
    meaning:
      '`false`: the reconciler reports what it finds (log, operation log, metric) without repairing it',
  },
  E2EPOOL_RECONCILE_MIN_AGE_SECONDS: {
    readBy: 'worker',
    meaning:
      'the reconciler leaves checkpoints, pauses and snapshots younger than this alone (they may be mid-step)',
  },
  E2EPOOL_QUARANTINE_AFTER: {
    readBy: 'worker',
    meaning:
      'a runner whose last this many checkpoints (1–1000) ended `reset_failed` is quarantined (see [Quarantine](operators.md#quarantine))',
  },
  E2EPOOL_QUARANTINE_MAX_PERCENT: {
    readBy: 'worker',
    meaning:
      'at most this share (0–100) of the active runners, and at least one runner, is quarantined for failure streaks; past it a streak is only reported',
  },
  E2EPOOL_RETENTION_DAYS: {
    readBy: 'worker',
    meaning:
      'each reconciler pass deletes finished agent commands (with their output) and the operation logs of ended checkpoints older than this, 1000 rows per statement',
  },
  E2EPOOL_RESET_MAX_ATTEMPTS: {
    readBy: 'api',
    meaning:
      'attempts (1–100) of each reset step before the checkpoint needs an operator (`needs_attention`)',
  },
  E2EPOOL_READINESS_TIMEOUT_SECONDS: {
    readBy: 'worker',
    meaning:
      'how long a reset waits for the runner to be ready, and an agent command for its agent to connect',
  },
  E2EPOOL_READINESS_POLL_INTERVAL_SECONDS: {
    readBy: 'worker',
    meaning: 'how often readiness is checked',
  },
  E2EPOOL_COMMAND_TIMEOUT_SECONDS: {
    readBy: 'worker',
    meaning: 'timeout of `reset_cmd` and `cleanup_cmd` on the agent',
  },
  E2EPOOL_PROXMOX_TASK_POLL_SECONDS: {
    readBy: 'worker',
    meaning: "how often a Proxmox task's status is checked",
  },
  E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS: {
    readBy: 'worker',
    meaning: 'how long a Proxmox task (snapshot, stop, rollback, start) may run',
  },
  E2EPOOL_HTTP_TIMEOUT: {
    readBy: 'worker',
    meaning:
      'HTTP timeout (seconds) for GitLab, GitHub and Proxmox calls; `E2EPOOL_HTTPX_TIMEOUT`, its older name, is still read (`E2EPOOL_HTTP_TIMEOUT` wins if both are set)',
  },
  E2EPOOL_GITLAB_URL: {
    readBy: 'worker',
    meaning:
      'e.g. `https://gitlab.example.com`; without it (or the token) GitLab runners are not paused and jobs are not polled',
  },
  E2EPOOL_GITLAB_TOKEN: {
    readBy: 'worker',
    meaning: 'token with `api` (or `read_api` + `manage_runner`) scope; needs `E2EPOOL_GITLAB_URL`',
  },
  E2EPOOL_TEMPORAL_UI_URL: {
    readBy: 'api',
    meaning:
      "the Temporal Web UI, e.g. `http://127.0.0.1:8233`: the fleet page links each runner's baseline refresh workflow to it",
  },
  E2EPOOL_GITLAB_MAX_RPS: {
    readBy: 'both',
    meaning:
      'GitLab requests per second of the whole fleet, all workers together (a positive number); see [GitLab rate budget](operators.md#gitlab-rate-budget). Give every worker and API the same value (the API fits the poll interval to it)',
  },
  E2EPOOL_GITLAB_POLL_SHARE: {
    readBy: 'both',
    meaning:
      'the share of `E2EPOOL_GITLAB_MAX_RPS` the job-status polls are sized for (between 0 and 1): the API stretches the poll interval to fit it; pauses and unpauses go first',
  },
  E2EPOOL_GITHUB_URL: {
    readBy: 'worker',
    meaning: "GitHub's REST API; GitHub Enterprise Server: `https://<host>/api/v3`",
  },
  E2EPOOL_GITHUB_TOKEN: {
    readBy: 'worker',
    meaning:
      'token for `ci_adapter: github` runners: reads jobs, changes labels (admin rights, see [GitHub Actions](ci.md#github-actions)); unset: not polled nor "paused"',
  },
  E2EPOOL_GITLAB_WEBHOOK_SECRET: {
    readBy: 'api',
    meaning:
      "the secret token of GitLab's job-events webhook (`POST /webhooks/gitlab`); unset: the webhook answers 503",
  },
  E2EPOOL_GITHUB_WEBHOOK_SECRET: {
    readBy: 'api',
    meaning:
      "the secret of GitHub's `workflow_job` webhook (`POST /webhooks/github`, HMAC-SHA256 of the raw body); unset: 503",
  },
  E2EPOOL_ADMIN_TOKEN: {
    readBy: 'api',
    meaning:
      "admin bearer token: the runner registry (`/api/runners`), any checkpoint's log, the fleet page (`/ui`). Unset: 503 `Admin API not configured`. Use `openssl rand -hex 32`",
  },
  E2EPOOL_AUTH_FAILURE_BURST: {
    readBy: 'api',
    meaning:
      'wrong admin tokens a client may send at once before it gets 429 (see [Limits](#limits))',
  },
  E2EPOOL_AUTH_FAILURE_PER_MINUTE: {
    readBy: 'api',
    meaning: 'wrong admin tokens a client may send per minute once its burst is spent',
  },
  E2EPOOL_READINESS_BURST: {
    readBy: 'api',
    meaning: '`GET /runner/readiness` calls a runner may make at once before it gets 429',
  },
  E2EPOOL_READINESS_PER_SECOND: {
    readBy: 'api',
    meaning: '`GET /runner/readiness` calls per second per runner, sustained',
  },
  E2EPOOL_METRICS_TOKEN: {
    readBy: 'api',
    meaning:
      "bearer token the API's `GET /metrics` requires (at least 16 characters); Prometheus sends it as its scrape `authorization`",
    unsetMeans: 'open',
  },
  E2EPOOL_METRICS_CACHE_SECONDS: {
    readBy: 'api',
    meaning: "one collection of the API's `/metrics` serves every scrape for this long",
  },
  E2EPOOL_METRICS_FINDINGS_SECONDS: {
    readBy: 'api',
    meaning: '`e2epool_reconcile_findings_total` is re-counted at most this often',
  },
  E2EPOOL_LOG_MAX_LINES: {
    readBy: 'api',
    meaning: "output lines kept in one checkpoint's log; the cut is marked",
  },
  E2EPOOL_LOG_STREAMS_PER_RUNNER: {
    readBy: 'api',
    meaning:
      "live log streams (SSE) open at once for one runner's checkpoints, per API instance; more get 429",
  },
  E2EPOOL_LOG_STREAMS_MAX: {
    readBy: 'api',
    meaning: 'live log streams open at once in all, per API instance; more get 429',
  },
  E2EPOOL_LOG_STREAM_STALL_SECONDS: {
    readBy: 'api',
    meaning:
      'a log stream whose client reads nothing this long is dropped (it resumes with `Last-Event-ID`)',
  },
  E2EPOOL_SECRET_KEY: {
    readBy: 'both',
    meaning:
      "encrypts registry runners' `proxmox_token_value` at rest (AES-256-GCM, key derived with HKDF-SHA256); at least 16 characters, e.g. `openssl rand -hex 32`. The API and the worker need the same value. Unset: the admin API refuses to store a Proxmox token (422)",
  },
  E2EPOOL_REGISTRY_RELOAD_SECONDS: {
    readBy: 'both',
    meaning:
      'the runner registry is re-read this often besides on its NOTIFY (the fallback when a notice is missed)',
  },
  E2EPOOL_DB_POOL_SIZE: {
    readBy: 'both',
    meaning: 'Postgres connections per process (1–1000)',
  },
  E2EPOOL_WS_HEARTBEAT_INTERVAL: {
    readBy: 'api',
    meaning: 'agent WebSocket ping interval (seconds)',
  },
  E2EPOOL_WS_HEARTBEAT_TIMEOUT: {
    readBy: 'both',
    meaning:
      'an agent silent this long (no pong, no frame) is unreachable: the API disconnects it, readiness says `agent unreachable`, the worker counts it as disconnected',
  },
  E2EPOOL_HOST: {
    readBy: 'both',
    meaning: "bind address of the API and of the worker's metrics endpoint",
  },
  E2EPOOL_PORT: {
    readBy: 'api, dev',
    meaning: 'API port (`npm run dev` gives it to the API it starts)',
  },
  E2EPOOL_WORKER_METRICS_PORT: {
    readBy: 'worker',
    meaning:
      "the worker's `GET /metrics` port; `0`: a free one, shown in the `worker running` log line. In use: the worker stops at start",
  },
  E2EPOOL_WORKER_MAX_CACHED_WORKFLOWS: {
    readBy: 'worker',
    meaning:
      "checkpoint runs a worker keeps in memory between their steps (Temporal's sticky cache, 2 or more); an evicted run is replayed from its history at its next step. Bounds the worker's memory: see [Production](operators.md#sizing-and-upgrades) sizing",
  },
  E2EPOOL_TASK_QUEUE: {
    readBy: 'both',
    meaning:
      'Temporal task queue: the worker polls it, the API (and `selftest`) start workflows on it',
  },
  E2EPOOL_LOG_LEVEL: {
    readBy: 'all',
    meaning: '`fatal` … `trace`, or `silent`; with `debug` a startup error also prints its stack',
  },
};

/** The agent's settings: each a key of agent.yml, or its variable (E2EPOOL_<KEY>), which wins. */
export const AGENT_SETTING_DOCS: Record<string, SettingDoc> = {
  E2EPOOL_CONTROLLER_URL: {
    readBy: 'agent',
    meaning: "`controller_url`: the controller's agent WebSocket",
  },
  E2EPOOL_RUNNER_ID: {
    readBy: 'agent',
    meaning: "`runner_id`: this runner's id in the inventory",
    unsetMeans: 'required',
  },
  E2EPOOL_TOKEN: {
    readBy: 'agent',
    meaning: "`token`: this runner's token",
    unsetMeans: 'required',
  },
  E2EPOOL_AGENT_TOKEN: {
    readBy: 'agent',
    meaning:
      "`agent_token`: this runner's agent credential, used for the WebSocket instead of `token` (see [Threat model](operators.md#threat-model))",
    unsetMeans: '`token`',
  },
  E2EPOOL_ALLOW_INSECURE_WS: {
    readBy: 'agent',
    meaning:
      '`allow_insecure_ws`: allow a `ws://` `controller_url` to another host (tokens in clear text); `ws://` to loopback is always allowed',
  },
  E2EPOOL_SOCKET_PATH: {
    readBy: 'agent, CLI',
    meaning: "`socket_path`: the Unix socket the CLI talks to (the CLI's `--socket` wins)",
  },
  E2EPOOL_SOCKET_GROUP: {
    readBy: 'agent',
    meaning: '`socket_group`: group (name or gid) that owns the socket',
    unsetMeans: "the agent's own group",
  },
  E2EPOOL_ALLOWED_COMMANDS: {
    readBy: 'agent',
    meaning:
      '`allowed_commands`: the commands the controller may run; a JSON array, or one command per line',
    unsetMeans: 'any command',
  },
  E2EPOOL_RECONNECT_MAX_DELAY: {
    readBy: 'agent',
    meaning: '`reconnect_max_delay`: upper bound of the reconnect backoff (seconds)',
  },
  E2EPOOL_HEARTBEAT_INTERVAL: {
    readBy: 'agent',
    meaning:
      '`heartbeat_interval`: seconds between pings; three silent intervals end the connection',
  },
  E2EPOOL_REQUEST_TIMEOUT: {
    readBy: 'agent, CLI',
    meaning:
      '`request_timeout`: how long a CLI request forwarded to the controller waits for its reply',
  },
};

/** Settings of the agent CLI, `npm run dev` and the tests, with their defaults as shown. */
export const OTHER_SETTING_DOCS: Record<string, OtherSettingDoc> = {
  E2EPOOL_AGENT_CONFIG: {
    group: 'agent',
    readBy: 'agent, CLI',
    meaning:
      "the agent's YAML config (`--config` wins). Each key below is set there or by its variable, which wins ([`agent.example.yml`](../agent/packaging/agent.example.yml))",
    shownDefault: '`/etc/e2epool/agent.yml`',
  },
  E2EPOOL_URL: {
    group: 'agent',
    readBy: 'CLI',
    meaning:
      "the controller's REST API for `e2epool runners` and `e2epool baseline` (`--url` wins); they take the admin token from `E2EPOOL_ADMIN_TOKEN` or `--admin-token-file`",
    shownDefault: '`http://127.0.0.1:8080`',
  },
  E2EPOOL_CLI_TIMEOUT: {
    group: 'agent',
    readBy: 'CLI',
    meaning: 'how long `e2epool create/finalize/status` wait for the agent in all',
    shownDefault: '`request_timeout` + 15',
  },
  E2EPOOL_DATA_DIR: {
    group: 'dev',
    readBy: 'dev',
    meaning: 'state of `npm run dev` and `npm run temporal:start`',
    shownDefault: '`.data/` in the clone',
  },
  E2EPOOL_DEV_PG_PORT: {
    group: 'dev',
    readBy: 'dev',
    meaning: 'port of the embedded Postgres',
    shownDefault: '`54329` (a free port if taken)',
  },
  TEMPORAL_DEV_PORT: {
    group: 'dev',
    readBy: 'dev',
    meaning: 'port of the Temporal dev server',
    shownDefault: '`7233`',
  },
  TEMPORAL_DEV_UI_PORT: {
    group: 'dev',
    readBy: 'dev',
    meaning: 'port of its Web UI',
    shownDefault: '`8233`',
  },
  TEMPORAL_BIN: {
    group: 'dev',
    readBy: 'dev, test',
    meaning:
      'the `temporal` binary to use (see [the Temporal CLI](contributing.md#the-temporal-cli))',
    shownDefault: 'unset',
  },
  TEMPORAL_SERVER_DIR: {
    group: 'dev',
    readBy: 'test',
    meaning:
      'a directory with `temporal-server`, `temporal-sql-tool` and `schema/postgresql/v12` to use instead of building them (`npm run test:cluster`)',
    shownDefault: 'unset',
  },
  E2EPOOL_CACHE_DIR: {
    group: 'dev',
    readBy: 'dev, test',
    meaning: 'where the Temporal CLI and Server are built',
    shownDefault: '`~/.cache/e2epool` (`$XDG_CACHE_HOME/e2epool` if set)',
  },
  E2EPOOL_TEST_DATABASE_URL: {
    group: 'dev',
    readBy: 'test',
    meaning: 'the Postgres `npm test` uses; its user must be allowed to `CREATE DATABASE`',
    shownDefault: 'unset: an embedded Postgres',
  },
  E2EPOOL_TEST_LOG_LEVEL: {
    group: 'dev',
    readBy: 'test',
    meaning: 'log level of the API and worker the tests run in-process',
    shownDefault: '`silent`',
  },
  E2EPOOL_TEST_SDK_LOG_LEVEL: {
    group: 'dev',
    readBy: 'test',
    meaning: 'log level of the Temporal SDK in tests',
    shownDefault: '`WARN`',
  },
  E2EPOOL_CHROMIUM: {
    group: 'dev',
    readBy: 'test',
    meaning:
      "the Chromium the fleet page's browser test drives (`apt-get install chromium`; `.ci/run` installs it); with none, that test is skipped",
    shownDefault: '`/usr/bin/chromium`',
  },
  E2EPOOL_TEST_SHARED: {
    group: 'dev',
    readBy: 'test',
    meaning:
      'how the test setup hands its Temporal (address, namespace, TLS) and Postgres to the test files; not for you to set',
    shownDefault: 'set by `npm test`, `npm run test:cluster`',
  },
};
