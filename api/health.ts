import type { Connection } from '@temporalio/client';
import { Router } from 'express';
import { buildInfo } from '../common/build-info';
import type { Logger } from '../config/logger';
import type { DatabaseProbe } from '../store/probe';

const CHECK_TIMEOUT_MS = 3000;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export interface HealthDeps {
  database: DatabaseProbe;
  temporal: Connection;
  log: Logger;
}

/**
 * `GET /healthz`: Postgres and Temporal answer → 200; otherwise 503 with a
 * short detail naming what is down (the cause goes to the log, not the caller).
 * Both carry this build's `version` and `commit`.
 */
export function healthRouter(d: HealthDeps): Router {
  const router = Router();
  router.get('/healthz', async (_req, res) => {
    const checks: Array<[string, () => Promise<unknown>]> = [
      ['database unavailable', () => d.database.ping()],
      [
        'temporal unavailable',
        () =>
          d.temporal.withDeadline(Date.now() + CHECK_TIMEOUT_MS, () =>
            d.temporal.workflowService.getSystemInfo({}),
          ),
      ],
    ];
    const results = await Promise.allSettled(
      checks.map(([, fn]) => withTimeout(fn(), CHECK_TIMEOUT_MS)),
    );
    const problems: string[] = [];
    results.forEach((r, i) => {
      if (r.status === 'rejected') {
        problems.push(checks[i]![0]);
        d.log.warn(
          { check: checks[i]![0], err: String((r.reason as Error)?.message ?? r.reason) },
          'health check failed',
        );
      }
    });
    // Which build answers: lets a rollout be checked from the probe alone.
    const { version, commit } = buildInfo();
    if (problems.length === 0)
      res.status(200).json({ status: 'ok', detail: null, version, commit });
    else
      res.status(503).json({ status: 'unhealthy', detail: problems.join('; '), version, commit });
  });
  return router;
}
