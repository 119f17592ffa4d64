/**
 * Baseline refresh and fleet rollout (docs/operators.md, "Baseline refresh";
 * docs/protocol.md#baseline-refresh): admin routes that validate, check the
 * registry and start the durable workflow; the workflow does the rest.
 */
import { randomBytes } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { Router } from 'express';
import { z } from 'zod';
import {
  BASELINE_REFRESH_WORKFLOW,
  BASELINE_ROLLOUT_WORKFLOW,
  baselineSnapshotName,
  baselineWorkflowId,
  DEFAULT_BASELINE_KEEP,
  rolloutWorkflowId,
  type BaselineRefreshInput,
  type BaselineRolloutInput,
} from '../common/baseline';
import { SA_BACKEND, SA_RUNNER_ID } from '../common/search-attributes';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import type { Settings } from '../config/settings';
import type { Store } from '../store';
import { adminAuth, type AdminToken } from './auth';
import { HttpError } from './errors';
import { storable, storableParam } from './input-guard';

/** The longest update_cmd accepted (it travels to the guest as one argv element). */
export const MAX_UPDATE_CMD = 16384;

const updateCmd = z
  .string({ error: 'update_cmd: expected a string' })
  .min(1, 'update_cmd: must not be empty')
  .max(MAX_UPDATE_CMD, `update_cmd: at most ${MAX_UPDATE_CMD} characters`)
  .refine(storable, 'update_cmd: holds a NUL character or an unpaired surrogate');
const keep = z
  .number({ error: 'keep: expected an integer of at least 1' })
  .int('keep: expected an integer of at least 1')
  .min(1, 'keep: expected an integer of at least 1')
  .max(100, 'keep: at most 100');
const runnerId = z.string({ error: 'expected a runner id' }).min(1).max(200).refine(storable);

/** `POST /api/runners/{id}/baseline`'s body. */
export const refreshBody = z
  .object({ update_cmd: updateCmd.optional(), keep: keep.default(DEFAULT_BASELINE_KEEP) })
  .strict();

/** `POST /api/baseline-rollouts`' body. */
export const rolloutBody = z
  .object({
    runners: z.union([z.literal('all'), z.array(runnerId).min(1).max(10000)], {
      error: 'runners: expected a non-empty list of runner ids or "all"',
    }),
    max_unavailable: z
      .number({ error: 'max_unavailable: expected an integer of at least 1' })
      .int('max_unavailable: expected an integer of at least 1')
      .min(1, 'max_unavailable: expected an integer of at least 1')
      .default(1),
    canary: runnerId.optional(),
    update_cmd: updateCmd.optional(),
    keep: keep.default(DEFAULT_BASELINE_KEEP),
  })
  .strict();

/** The body as `schema` reads it, or 422 naming the first problem. */
function parsed<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new HttpError(422, 'Request body must be a JSON object');
  const p = schema.safeParse(body);
  if (p.success) return p.data;
  const issue = p.error.issues[0]!;
  if (issue.code === 'unrecognized_keys')
    throw new HttpError(422, `Unknown fields: ${issue.keys.sort().join(', ')}`);
  const where = issue.path.join('.');
  throw new HttpError(
    422,
    issue.message.includes(':') || !where ? issue.message : `${where}: ${issue.message}`,
  );
}

export interface BaselineDeps {
  store: Store;
  inventory: InventoryStore;
  temporal: Client;
  settings: Settings;
  log: Logger;
}

/**
 * A runner a refresh may run on: an active Proxmox runner of the inventory
 * file or the registry (read now, not from the inventory's copy); else 404
 * or 409. The refresh drains a file runner in runner_state.
 */
async function refreshable(d: BaselineDeps, id: string): Promise<void> {
  const fileRunner = d.inventory.inventory.fileRunners.find((r) => r.runner_id === id);
  const backend = fileRunner
    ? fileRunner.backend
    : await d.store.runners.get(id).then((r) => (r?.isActive ? r.fields.backend : null));
  if (!backend) throw new HttpError(404, `Runner '${id}' not found`);
  if (backend !== 'proxmox')
    throw new HttpError(409, `Runner '${id}' is not a Proxmox runner: it has no baseline`);
}

/** Starts a runner's refresh; 409 when one runs already. */
async function startRefresh(
  d: BaselineDeps,
  id: string,
  body: z.output<typeof refreshBody>,
): Promise<string> {
  await refreshable(d, id);
  const workflowId = baselineWorkflowId(id);
  const input: BaselineRefreshInput = {
    runnerId: id,
    keep: body.keep,
    pollSeconds: d.settings.pollerIntervalSeconds,
    ...(body.update_cmd !== undefined ? { updateCmd: body.update_cmd } : {}),
  };
  try {
    await d.temporal.workflow.start(BASELINE_REFRESH_WORKFLOW, {
      workflowId,
      taskQueue: d.settings.taskQueue,
      args: [input],
      workflowIdConflictPolicy: 'FAIL',
      typedSearchAttributes: [
        { key: SA_RUNNER_ID, value: id },
        { key: SA_BACKEND, value: 'proxmox' },
      ],
    });
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError)
      throw new HttpError(409, `A baseline refresh of runner '${id}' runs already (${workflowId})`);
    throw err;
  }
  // update_cmd is not audited: it may hold a credential; only whether there was one.
  await d.store.audit.record({
    action: 'baseline-refresh',
    runnerId: id,
    detail: { workflow_id: workflowId, keep: body.keep, update_cmd: body.update_cmd !== undefined },
  });
  d.log.info({ runnerId: id, workflowId }, 'baseline refresh started');
  return workflowId;
}

/** The rollout's runner ids: `"all"` is every active Proxmox runner, inventory file and registry. */
async function rolloutRunners(d: BaselineDeps, body: z.output<typeof rolloutBody>) {
  let ids: string[];
  if (body.runners === 'all') {
    const registry = (await d.store.runners.list(false))
      .filter((r) => r.fields.backend === 'proxmox')
      .map((r) => r.runnerId);
    const file = d.inventory.inventory.fileRunners
      .filter((r) => r.backend === 'proxmox')
      .map((r) => r.runner_id);
    ids = [...file, ...registry].sort();
    if (!ids.length) throw new HttpError(422, 'runners: there is no active Proxmox runner');
  } else {
    ids = [...new Set(body.runners)];
    if (ids.length !== body.runners.length)
      throw new HttpError(422, 'runners: a runner is listed twice');
  }
  if (body.canary !== undefined && !ids.includes(body.canary))
    throw new HttpError(422, `canary: '${body.canary}' is not one of the rollout's runners`);
  for (const id of ids) await refreshable(d, id);
  return ids;
}

async function startRollout(d: BaselineDeps, body: z.output<typeof rolloutBody>): Promise<string> {
  const runners = await rolloutRunners(d, body);
  const stamp = `${baselineSnapshotName(new Date()).slice(-14)}-${randomBytes(4).toString('hex')}`;
  const workflowId = rolloutWorkflowId(stamp);
  const input: BaselineRolloutInput = {
    runners,
    maxUnavailable: body.max_unavailable,
    keep: body.keep,
    pollSeconds: d.settings.pollerIntervalSeconds,
    ...(body.canary !== undefined ? { canary: body.canary } : {}),
    ...(body.update_cmd !== undefined ? { updateCmd: body.update_cmd } : {}),
  };
  await d.temporal.workflow.start(BASELINE_ROLLOUT_WORKFLOW, {
    workflowId,
    taskQueue: d.settings.taskQueue,
    args: [input],
    workflowIdConflictPolicy: 'FAIL',
  });
  await d.store.transaction(async (tx) => {
    for (const id of runners)
      await tx.audit.record({
        action: 'baseline-rollout',
        runnerId: id,
        detail: { workflow_id: workflowId, canary: body.canary === id },
      });
  });
  d.log.info({ workflowId, runners: runners.length }, 'baseline rollout started');
  return workflowId;
}

/** `POST /api/runners/{id}/baseline` and `POST /api/baseline-rollouts` (admin). */
export function baselineRouter(d: BaselineDeps, admin: AdminToken): Router {
  const router = Router();
  router.param('id', storableParam('runner id'));
  router.post('/api/runners/:id/baseline', adminAuth(admin), async (req, res) => {
    const body = parsed(refreshBody, req.body);
    res.status(202).json({ workflow_id: await startRefresh(d, req.params.id as string, body) });
  });
  router.post('/api/baseline-rollouts', adminAuth(admin), async (req, res) => {
    const body = parsed(rolloutBody, req.body);
    res.status(202).json({ workflow_id: await startRollout(d, body) });
  });
  return router;
}
