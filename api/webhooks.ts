import { createHmac, createHash, timingSafeEqual } from 'node:crypto';
import express, { Router, type Request, type RequestHandler } from 'express';
import type { FinalizeStatus } from '../common/states';
import type { InventoryStore } from '../config/inventory';
import type { RunnerConfig } from '../config/runner-schema';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import type { CheckpointStore } from '../store/checkpoints';
import type { CheckpointService } from '../service/checkpoint-service';
import { HttpError } from './errors';
import { storable } from './input-guard';

/** GitLab `build_status` → how the job ended (see docs/protocol.md#webhooks); others: still running. */
const GITLAB_STATUS: ReadonlyMap<unknown, FinalizeStatus> = new Map([
  ['success', 'success'],
  ['failed', 'failure'],
  ['canceled', 'canceled'],
  ['skipped', 'canceled'],
]);

/** GitHub `workflow_job.conclusion` → how the job ended (see docs/protocol.md#webhooks); others are ignored. */
const GITHUB_CONCLUSION: ReadonlyMap<unknown, FinalizeStatus> = new Map([
  ['success', 'success'],
  ['failure', 'failure'],
  ['timed_out', 'failure'],
  ['cancelled', 'canceled'],
]);

/** The largest webhook body read; GitLab's and GitHub's job events are a few KB. */
export const WEBHOOK_MAX_BYTES = 1024 * 1024;

/** Equal strings, compared in constant time (of their digests, so lengths leak nothing). */
function sameSecret(a: string, b: string): boolean {
  const d = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(d(a), d(b));
}

/** The JSON a webhook carries: the body, or GitHub's form-encoded `payload=` field. */
function payloadOf(req: Request, raw: Buffer): Record<string, unknown> {
  let text = raw.toString('utf8');
  if ((req.get('content-type') ?? '').startsWith('application/x-www-form-urlencoded'))
    text = new URLSearchParams(text).get('payload') ?? '';
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'Invalid JSON');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new HttpError(400, 'Invalid JSON');
  return body as Record<string, unknown>;
}

const OK = { ok: true };

interface WebhookDeps {
  settings: Settings;
  records: CheckpointStore;
  checkpoints: CheckpointService;
  inventory: InventoryStore;
  log: Logger;
}

/** Refuses a compressed body before a byte of it is read. */
const identityOnly: RequestHandler = (req, _res, next) => {
  const encoding = (req.get('content-encoding') ?? 'identity').trim().toLowerCase();
  if (encoding !== 'identity' && encoding !== '') {
    next(new HttpError(415, 'Content-Encoding is not supported: send the body uncompressed'));
    return;
  }
  next();
};

/**
 * The GitLab token is checked from the headers alone, before the body is
 * read: whoever lacks it cannot make the controller read up to the size
 * limit on every request.
 */
const gitlabToken =
  (settings: Settings): RequestHandler =>
  (req, _res, next) => {
    const secret = settings.gitlabWebhookSecret;
    if (!secret) next(new HttpError(503, 'GitLab webhook not configured'));
    else if (!sameSecret(req.get('x-gitlab-token') ?? '', secret))
      next(new HttpError(403, 'Invalid webhook token'));
    else next();
  };

/** GitHub signs the body, so it must be read; without a secret there is nothing to check it with. */
const githubConfigured =
  (settings: Settings): RequestHandler =>
  (_req, _res, next) => {
    next(
      settings.githubWebhookSecret
        ? undefined
        : new HttpError(503, 'GitHub webhook not configured'),
    );
  };

/**
 * The checkpoint's runner when it is one of `ci`'s runners (ci_adapter,
 * gitlab by default). Job ids are numbered per CI system: the same number
 * from the other one is another job, and must never reset this runner. A
 * deactivated runner still counts (its checkpoint is still reset); one
 * that left the inventory is nobody's.
 */
function ciRunner(
  inventory: InventoryStore,
  runnerId: string,
  ci: 'gitlab' | 'github',
): RunnerConfig | undefined {
  const runner = inventory.inventory.forReset(runnerId);
  return runner?.ci_adapter === ci ? runner : undefined;
}

/** Finalizes the job's active checkpoints (on runners `accept` allows), without waiting. */
async function finalizeJob(
  d: WebhookDeps,
  jobId: string,
  status: FinalizeStatus,
  accept: (runnerId: string) => boolean,
): Promise<void> {
  for (const c of await d.records.activeByJob(jobId)) {
    if (!accept(c.runnerId)) continue;
    void d.checkpoints
      .finalize(c.runnerId, { checkpoint_name: c.name, status, source: 'webhook' })
      .then(
        (r) => d.log.info({ checkpoint: c.name, jobId, detail: r.detail }, 'webhook finalize'),
        (err: unknown) =>
          d.log.warn(
            { checkpoint: c.name, jobId, err: (err as Error).message },
            'webhook finalize failed; the poller or the TTL still ends the job',
          ),
      );
  }
}

/**
 * GitLab job events and GitHub `workflow_job` events finalize the matching
 * active checkpoint with source `webhook` (see docs/protocol.md#webhooks). Secrets are required.
 * The answer (200) does not wait for the finalize, which runs on: GitLab
 * disables hooks that are slow or answer errors, and the checkpoint's own
 * workflow makes duplicates and late deliveries no-ops.
 */
export function webhookRouter(d: WebhookDeps): Router {
  const router = Router();
  // The raw body: GitHub signs the bytes as sent, not a re-serialization.
  // Never inflated: a few KB of gzip would otherwise become gigabytes in memory.
  const raw = express.raw({ type: () => true, limit: WEBHOOK_MAX_BYTES, inflate: false });

  router.post('/webhooks/gitlab', gitlabToken(d.settings), identityOnly, raw, async (req, res) => {
    const body = payloadOf(req, Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0));
    const status = GITLAB_STATUS.get(body.build_status);
    const buildId = body.build_id;
    if (
      body.object_kind === 'build' &&
      status &&
      // A job id Postgres cannot store (a NUL) matches no job: ignored, not a database error.
      (typeof buildId === 'number' || (typeof buildId === 'string' && storable(buildId)))
    ) {
      const glRunner = (body.runner as { id?: unknown } | null | undefined)?.id;
      await finalizeJob(d, String(buildId), status, (runnerId) => {
        const runner = ciRunner(d.inventory, runnerId, 'gitlab');
        if (!runner) return false;
        const configured = runner.gitlab_runner_id;
        // Both known and different: another runner ran this job id (another GitLab?).
        return !(typeof glRunner === 'number' && configured != null && configured !== glRunner);
      });
    }
    res.status(200).json(OK);
  });

  router.post(
    '/webhooks/github',
    githubConfigured(d.settings),
    identityOnly,
    raw,
    async (req, res) => {
      const secret = d.settings.githubWebhookSecret!;
      const bytes = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const expected = `sha256=${createHmac('sha256', secret).update(bytes).digest('hex')}`;
      if (!sameSecret(req.get('x-hub-signature-256') ?? '', expected))
        throw new HttpError(403, 'Invalid webhook signature');
      const body = payloadOf(req, bytes);
      const job = body.workflow_job as
        { id?: unknown; conclusion?: unknown; runner_id?: unknown } | undefined;
      const status = GITHUB_CONCLUSION.get(job?.conclusion);
      if (
        req.get('x-github-event') === 'workflow_job' &&
        body.action === 'completed' &&
        status &&
        typeof job?.id === 'number'
      ) {
        const ghRunner = job.runner_id;
        await finalizeJob(d, String(job.id), status, (runnerId) => {
          const runner = ciRunner(d.inventory, runnerId, 'github');
          if (!runner) return false;
          const configured = runner.github_runner_id;
          // Both known and different: another runner ran this job id.
          return !(typeof ghRunner === 'number' && configured != null && configured !== ghRunner);
        });
      }
      res.status(200).json(OK);
    },
  );

  return router;
}
