import { createHash, timingSafeEqual } from 'node:crypto';
import { Router } from 'express';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { registerBuildInfoMetric } from '../common/build-info-metric';
import { ACTIVE_STATES } from '../common/states';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { AgentSessionStore } from '../store/agent-sessions';
import type { CheckpointStore } from '../store/checkpoints';
import type { OperationLogStore } from '../store/operation-log';
import type { RunnerPauseStore } from '../store/runner-pauses';
import { bearerToken } from './auth';
import { HttpError } from './errors';

export interface MetricsDeps {
  records: CheckpointStore;
  sessions: AgentSessionStore;
  operations: OperationLogStore;
  pauses: RunnerPauseStore;
  inventory: InventoryStore;
  /** An agent silent this long is unreachable (E2EPOOL_WS_HEARTBEAT_TIMEOUT). */
  agentStaleAfterSeconds: number;
  /** How many agent WebSocket sessions this instance holds (its hub's). */
  agentSessions: () => number;
  /** The reconciler findings are re-read at most this often (they are a count over operation_logs). */
  findingsMaxAgeMs: number;
  log: Logger;
}

/**
 * A per-app registry (not the global one, so several apps can share a process
 * in tests) with the process metrics, the checkpoint gauges and the agent
 * gauges, read from Postgres at scrape time, and this instance's agent
 * sessions. What the worker measures is served by the worker itself.
 */
export function createMetricsRegistry(d: MetricsDeps): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service: 'e2epool-api' });
  collectDefaultMetrics({ register: registry });
  registerBuildInfoMetric(registry);
  registerCheckpointGauges(registry, d);
  registerAgentGauges(registry, d);
  registerPauseGauge(registry, d);
  registerReconcileGauge(registry, d);
  return registry;
}

function registerCheckpointGauges(registry: Registry, d: MetricsDeps): void {
  const { records, log } = d;
  new Gauge({
    name: 'e2epool_checkpoints_active',
    help: 'Active checkpoints by state; needs_attention ones wait for an operator (retry or release signal).',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const s of ACTIVE_STATES) this.set({ state: s }, 0);
      try {
        const counts = await records.countActiveByState();
        for (const s of ACTIVE_STATES) this.set({ state: s }, counts[s]);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'metrics: cannot read checkpoint counts');
      }
    },
  });

  new Gauge({
    name: 'e2epool_checkpoints_needs_attention_oldest_seconds',
    help: 'Age of the oldest checkpoint waiting for an operator (0 when none): alert on this.',
    registers: [registry],
    async collect() {
      try {
        this.set(await records.oldestNeedsAttentionSeconds());
      } catch {
        /* reported by the gauge above */
      }
    },
  });
}

function registerAgentGauges(registry: Registry, d: MetricsDeps): void {
  const { log } = d;
  /** The inventory's runners and how their agents are, from agent_sessions. */
  const readAgents = async () => {
    const runners = d.inventory.inventory.runners.map((r) => r.runner_id);
    return { runners, liveness: await d.sessions.livenessOf(runners, d.agentStaleAfterSeconds) };
  };

  new Gauge({
    name: 'e2epool_runner_agent_connected',
    help: 'Per inventory runner: 1 when its agent was heard from (pong or frame) within E2EPOOL_WS_HEARTBEAT_TIMEOUT, else 0.',
    labelNames: ['runner_id'],
    registers: [registry],
    async collect() {
      this.reset();
      try {
        const { runners, liveness } = await readAgents();
        for (const r of runners) this.set({ runner_id: r }, liveness.get(r) === 'live' ? 1 : 0);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'metrics: cannot read agent sessions');
      }
    },
  });

  new Gauge({
    name: 'e2epool_runners_unreachable',
    help: 'Inventory runners whose agent session went silent for longer than E2EPOOL_WS_HEARTBEAT_TIMEOUT (readiness: "agent unreachable").',
    registers: [registry],
    async collect() {
      try {
        const { liveness } = await readAgents();
        this.set([...liveness.values()].filter((l) => l === 'unreachable').length);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'metrics: cannot count unreachable agents');
      }
    },
  });
  new Gauge({
    name: 'e2epool_runners_shared_credential',
    help: 'Active runners without an agent token: their agent opens /ws/agent with the REST token their CI jobs hold, so a job can stand in for the agent. Give each an agent_token (0 is the goal).',
    registers: [registry],
    collect() {
      this.set(d.inventory.inventory.sharedCredentialRunners().length);
    },
  });

  new Gauge({
    name: 'e2epool_runners_quarantined',
    help: 'Active runners quarantined (a failed reset verification, a failure streak, or an operator): they take no checkpoint and stay paused until unquarantined.',
    registers: [registry],
    collect() {
      this.set(d.inventory.inventory.quarantinedCount);
    },
  });

  new Gauge({
    name: 'e2epool_agent_sessions',
    help: 'Agent WebSocket sessions held by this API instance (sum over instances: connected agents).',
    registers: [registry],
    collect() {
      this.set(d.agentSessions());
    },
  });
}

/**
 * How long each inventory runner has been paused by e2epool: its newest pause
 * is open and not kept on purpose (a drain or a quarantine, which have their
 * own signals). A pause normally lasts from finalize to unpause (minutes); one
 * that lasts much longer means the reset or the unpause is stuck.
 */
function registerPauseGauge(registry: Registry, d: MetricsDeps): void {
  new Gauge({
    name: 'e2epool_runner_paused_for_seconds',
    help: 'Per inventory runner: seconds since e2epool paused it, while that pause is open (sent or paused; not kept for a drain or quarantine), else 0: alert on a long one.',
    labelNames: ['runner_id'],
    registers: [registry],
    async collect() {
      this.reset();
      try {
        const runners = d.inventory.inventory.runners.map((r) => r.runner_id);
        const open = new Map(
          (await d.pauses.latestByRunner(runners))
            .filter((p) => p.state === 'sent' || p.state === 'paused')
            .map((p) => [p.runnerId, p.pausedAt.getTime()]),
        );
        const now = Date.now();
        for (const r of runners) {
          const since = open.get(r);
          this.set({ runner_id: r }, since === undefined ? 0 : Math.max(0, (now - since) / 1000));
        }
      } catch (err) {
        d.log.warn({ err: (err as Error).message }, 'metrics: cannot read runner pauses');
      }
    },
  });
}

function registerReconcileGauge(registry: Registry, d: MetricsDeps): void {
  const { log } = d;
  // Counting them reads every reconcile row of operation_logs (no index has them): not on every scrape.
  let findings: { at: number; rows: Array<{ kind: string; action: string; n: number }> } | null =
    null;
  new Gauge({
    name: 'e2epool_reconcile_findings_total',
    help: 'What the reconciler found (kind) and did about it (action: repaired, reported, failed), from the operation log.',
    labelNames: ['kind', 'action'],
    registers: [registry],
    async collect() {
      this.reset();
      try {
        if (!findings || Date.now() - findings.at >= d.findingsMaxAgeMs)
          findings = { at: Date.now(), rows: await d.operations.reconcileFindings() };
        for (const f of findings.rows) this.set({ kind: f.kind, action: f.action }, f.n);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'metrics: cannot read reconciler findings');
      }
    },
  });
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * `GET /metrics` in the Prometheus text format. With `token` (E2EPOOL_METRICS_TOKEN)
 * it wants `Authorization: Bearer <token>` (401 without, 403 wrong). One
 * collection (several queries) serves every scrape for `cacheMs`, and scrapes
 * that arrive while one runs wait for it: scraping in a loop costs the
 * database no more than one scrape per `cacheMs`.
 */
export function metricsRouter(
  registry: Registry,
  o: { token: string | undefined; cacheMs: number },
): Router {
  const router = Router();
  const expected = o.token === undefined ? null : digest(o.token);
  let last: { at: number; pending: boolean; text: Promise<string> } | null = null;
  const collect = (): Promise<string> => {
    const now = Date.now();
    if (last && (now - last.at < o.cacheMs || last.pending)) return last.text;
    const entry = { at: now, pending: true, text: registry.metrics() };
    last = entry;
    entry.text.then(
      () => {
        entry.pending = false;
        entry.at = Date.now();
      },
      () => {
        if (last === entry) last = null;
      },
    );
    return entry.text;
  };
  router.get('/metrics', async (req, res) => {
    if (expected) {
      const token = bearerToken(req);
      if (token === null) throw new HttpError(401, 'Invalid authorization header');
      if (!timingSafeEqual(expected, digest(token)))
        throw new HttpError(403, 'Invalid metrics token');
    }
    const text = await collect();
    res.setHeader('Content-Type', registry.contentType);
    res.send(text);
  });
  return router;
}
