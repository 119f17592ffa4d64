import { Router } from 'express';
import { z } from 'zod';
import { adminAuth, type AdminToken } from './auth';
import { HttpError } from './errors';
import { storable, storableParam } from './input-guard';
import type { RunnerRegistry } from './runner-registry';

/** `?include_inactive=true` (also 1/yes, as FastAPI's bool query accepted). */
export const listRunnersQuery = z.object({
  include_inactive: z.enum(['true', 'false', '1', '0', 'yes', 'no']).optional(),
});

function objectBody(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(422, 'Request body must be a JSON object');
  }
  return body as Record<string, unknown>;
}

/** The longest quarantine reason accepted: a sentence or two for the fleet page, not a log. */
export const MAX_QUARANTINE_REASON = 500;

/** `POST /api/runners/{id}/quarantine`'s body. */
export const quarantineBody = z
  .object({
    reason: z
      .string({ error: 'reason: expected a string' })
      .trim()
      .min(1, 'reason: must not be empty')
      .max(MAX_QUARANTINE_REASON, `reason: at most ${MAX_QUARANTINE_REASON} characters`)
      .refine(storable, 'reason: holds a NUL character or an unpaired surrogate'),
  })
  .strict();

function quarantineReason(body: unknown): string {
  const parsed = quarantineBody.safeParse(objectBody(body));
  if (parsed.success) return parsed.data.reason;
  const issue = parsed.error.issues[0]!;
  const detail =
    issue.code === 'unrecognized_keys'
      ? `Unknown fields: ${issue.keys.sort().join(', ')}`
      : issue.path[0] === 'reason' && issue.code === 'invalid_type'
        ? 'reason: expected a string'
        : issue.message;
  throw new HttpError(422, detail);
}

/** The runner registry's admin routes (see docs/protocol.md#runner-registry): admin bearer auth, validate, delegate. */
export function runnerRouter(registry: RunnerRegistry, admin: AdminToken): Router {
  const router = Router();
  router.use('/api/runners', adminAuth(admin));
  router.param('id', storableParam('runner id'));

  router.post('/api/runners', async (req, res) => {
    res.status(201).json(await registry.create(objectBody(req.body)));
  });

  router.get('/api/runners', async (req, res) => {
    const q = listRunnersQuery.safeParse(req.query);
    if (!q.success) throw new HttpError(422, 'include_inactive: expected true or false');
    const v = q.data.include_inactive;
    res.json(await registry.list(v === 'true' || v === '1' || v === 'yes'));
  });

  router.get('/api/runners/:id', async (req, res) => {
    res.json(await registry.get(req.params.id));
  });

  router.patch('/api/runners/:id', async (req, res) => {
    res.json(await registry.patch(req.params.id, objectBody(req.body)));
  });

  router.delete('/api/runners/:id', async (req, res) => {
    res.json(await registry.deactivate(req.params.id));
  });

  router.post('/api/runners/:id/rotate-token', async (req, res) => {
    res.json(await registry.rotateToken(req.params.id));
  });

  router.post('/api/runners/:id/rotate-agent-token', async (req, res) => {
    res.json(await registry.rotateAgentToken(req.params.id));
  });

  router.post('/api/runners/:id/drain', async (req, res) => {
    res.json(await registry.drain(req.params.id, true));
  });

  router.post('/api/runners/:id/undrain', async (req, res) => {
    res.json(await registry.drain(req.params.id, false));
  });

  router.post('/api/runners/:id/quarantine', async (req, res) => {
    res.json(await registry.quarantine(req.params.id, quarantineReason(req.body)));
  });

  router.post('/api/runners/:id/unquarantine', async (req, res) => {
    res.json(await registry.unquarantine(req.params.id));
  });

  return router;
}
