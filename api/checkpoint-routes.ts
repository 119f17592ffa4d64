import { Router } from 'express';
import type { InventoryStore } from '../config/inventory';
import { runnerAuth } from './auth';
import type { CheckpointService } from '../service/checkpoint-service';
import { tooMany, type TokenBuckets } from './rate-limit';
import { createBody, finalizeBody, parseInput, statusParams } from '../service/schemas';

/** The runners' checkpoint routes (bearer token auth): validate, delegate, answer. */
export function checkpointRouter(
  service: CheckpointService,
  inventory: InventoryStore,
  /** Readiness calls per runner: each starts a workflow, so a token holder's loop must not. */
  readinessCalls: TokenBuckets,
): Router {
  const router = Router();
  const auth = runnerAuth(inventory);

  router.post('/checkpoint/create', auth, async (req, res) => {
    const body = parseInput(createBody, req.body);
    res.status(201).json(await service.create(res.locals.runnerId as string, body));
  });

  router.post('/checkpoint/finalize', auth, async (req, res) => {
    const body = parseInput(finalizeBody, req.body);
    res.status(202).json(await service.finalize(res.locals.runnerId as string, body));
  });

  router.get('/checkpoint/status/:name', auth, async (req, res) => {
    const { name } = parseInput(statusParams, req.params, 'path');
    res.status(200).json(await service.status(res.locals.runnerId as string, name));
  });

  router.get('/runner/readiness', auth, async (_req, res) => {
    const wait = readinessCalls.take(res.locals.runnerId as string);
    if (wait > 0) throw tooMany('Too many readiness checks for this runner', wait);
    const r = await service.readiness(res.locals.runnerId as string);
    res.status(r.ready ? 200 : 503).json(r);
  });

  return router;
}
