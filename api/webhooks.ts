import { createHmac, createHash, timingSafeEqual } from 'node:crypto';
import express, { Router, type Request } from 'express';
import type { FinalizeStatus } from '../common/states';
import type { InventoryStore, RunnerConfig } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import type { CheckpointStore } from '../store/checkpoints';
import type { CheckpointService } from './checkpoint-service';
import { HttpError } from './errors';

/** GitLab `build_status` → how the job ended (SPEC §7); others: still running. */
const GITLAB_STATUS: Record<string, FinalizeStatus> = {
  success: 'success',
  failed: 'failure',
  canceled: 'canceled',
  skipped: 'canceled',
};

/** GitHub `workflow_job.conclusion` → how the job ended (SPEC §9); others are ignored. */
const GITHUB_CONCLUSION: Record<string, FinalizeStatus> = {
  success: 'success',
  failure: 'failure',
  timed_out: 'failure',
  cancelled: 'canceled',
};

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

/**
 * GitLab job events and GitHub `workflow_job` events finalize the matching
 * active checkpoint with source `webhook` (SPEC §9). Secrets are required.
 * The answer (200) does not wait for the finalize, which runs on: GitLab
 * disables hooks that are slow or answer errors, and the checkpoint's own
 * workflow makes duplicates and late deliveries no-ops.
 */
export function webhookRouter(d: {
  settings: Settings;
  records: CheckpointStore;
  checkpoints: CheckpointService;
  inventory: InventoryStore;
  log: Logger;
}): Router {
  const router = Router();
  // The raw body: GitHub signs the bytes as sent, not a re-serialization.
  const raw = express.raw({ type: () => true, limit: '5mb' });

  /**
   * The checkpoint's runner when it is one of `ci`'s runners (ci_adapter,
   * gitlab by default). Job ids are numbered per CI system: the same number
   * from the other one is another job, and must never reset this runner. A
   * deactivated runner still counts (its checkpoint is still reset); one
   * that left the inventory is nobody's.
   */
  function ciRunner(runnerId: string, ci: 'gitlab' | 'github'): RunnerConfig | undefined {
    const runner = d.inventory.inventory.forReset(runnerId);
    return runner?.ci_adapter === ci ? runner : undefined;
  }

  /** Finalizes the job's active checkpoints (on runners `accept` allows), without waiting. */
  async function finalizeJob(
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

  router.post('/webhooks/gitlab', raw, async (req, res) => {
    const secret = d.settings.gitlabWebhookSecret;
    if (!secret) throw new HttpError(503, 'GitLab webhook not configured');
    if (!sameSecret(req.get('x-gitlab-token') ?? '', secret))
      throw new HttpError(403, 'Invalid webhook token');
    const body = payloadOf(req, Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0));
    const status = GITLAB_STATUS[String(body.build_status)];
    const buildId = body.build_id;
    if (
      body.object_kind === 'build' &&
      status &&
      (typeof buildId === 'number' || typeof buildId === 'string')
    ) {
      const glRunner = (body.runner as { id?: unknown } | null | undefined)?.id;
      await finalizeJob(String(buildId), status, (runnerId) => {
        const runner = ciRunner(runnerId, 'gitlab');
        if (!runner) return false;
        const configured = runner.gitlab_runner_id;
        // Both known and different: another runner ran this job id (another GitLab?).
        return !(typeof glRunner === 'number' && configured != null && configured !== glRunner);
      });
    }
    res.status(200).json(OK);
  });

  router.post('/webhooks/github', raw, async (req, res) => {
    const secret = d.settings.githubWebhookSecret;
    if (!secret) throw new HttpError(503, 'GitHub webhook not configured');
    const bytes = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const expected = `sha256=${createHmac('sha256', secret).update(bytes).digest('hex')}`;
    if (!sameSecret(req.get('x-hub-signature-256') ?? '', expected))
      throw new HttpError(403, 'Invalid webhook signature');
    const body = payloadOf(req, bytes);
    const job = body.workflow_job as
      { id?: unknown; conclusion?: unknown; runner_id?: unknown } | undefined;
    const status = GITHUB_CONCLUSION[String(job?.conclusion)];
    if (
      req.get('x-github-event') === 'workflow_job' &&
      body.action === 'completed' &&
      status &&
      typeof job?.id === 'number'
    ) {
      const ghRunner = job.runner_id;
      await finalizeJob(String(job.id), status, (runnerId) => {
        const runner = ciRunner(runnerId, 'github');
        if (!runner) return false;
        const configured = runner.github_runner_id;
        // Both known and different: another runner ran this job id.
        return !(typeof ghRunner === 'number' && configured != null && configured !== ghRunner);
      });
    }
    res.status(200).json(OK);
  });

  return router;
}
