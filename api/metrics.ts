import { Router } from 'express';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { ACTIVE_STATES } from '../common/states';
import type { Logger } from '../config/logger';
import type { CheckpointStore } from '../store/checkpoints';

/**
 * A per-app registry (not the global one, so several apps can share a process
 * in tests) with the process metrics and the checkpoint gauges, read from
 * Postgres at scrape time.
 */
export function createMetricsRegistry(records: CheckpointStore, log: Logger): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service: 'e2epool-api' });
  collectDefaultMetrics({ register: registry });

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
  return registry;
}

/** `GET /metrics` in the Prometheus text format. */
export function metricsRouter(registry: Registry): Router {
  const router = Router();
  router.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', registry.contentType);
    res.send(await registry.metrics());
  });
  return router;
}
