/**
 * An operator's routes beside the runner registry (docs/operators.md, "Operator
 * commands"): the checkpoint listing, and `retry` / `release` of a runner's
 * checkpoint waiting in needs_attention. They read Postgres and signal the
 * checkpoint's workflow; the workflow does the rest.
 */
import { ServiceError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { Router } from 'express';
import { z } from 'zod';
import {
  checkpointDto,
  releaseSignal,
  retrySignal,
  type CheckpointDto,
} from '../common/checkpoint';
import { CHECKPOINT_STATES, isActiveState, type CheckpointState } from '../common/states';
import type { Logger } from '../config/logger';
import type { Store } from '../store';
import type { CheckpointFacts } from '../store/checkpoints';
import { adminAuth, type AdminToken } from './auth';
import { HttpError } from './errors';
import { storable, storableParam } from './input-guard';
import type { RunnerRegistry } from './runner-registry';

/** The most checkpoints one listing returns. */
export const MAX_CHECKPOINT_LIST = 1000;
/** What a listing returns without `limit`. */
export const DEFAULT_CHECKPOINT_LIST = 100;

/** `GET /api/checkpoints`' query. */
export const listCheckpointsQuery = z
  .object({
    state: z
      .string()
      .optional()
      .describe(
        `States separated by commas (${CHECKPOINT_STATES.join(', ')}); default: every state`,
      ),
    runner: z.string().optional().describe('Only this runner’s checkpoints'),
    limit: z
      .string()
      .optional()
      .describe(
        `At most this many, newest first: 1 to ${MAX_CHECKPOINT_LIST} (default ${DEFAULT_CHECKPOINT_LIST})`,
      ),
  })
  .strict();

/** A checkpoint as an operator sees it: the API's object plus what explains where it stands. */
export interface CheckpointFactsView extends CheckpointDto {
  backend: string;
  active: boolean;
  ended_at: string | null;
  reset_attempts: number;
  error_detail: string | null;
}

/** A stored checkpoint as `GET /api/checkpoints` and the fleet page show it. */
export function checkpointFactsView(c: CheckpointFacts): CheckpointFactsView {
  return {
    ...checkpointDto(c),
    backend: c.backend,
    active: isActiveState(c.state),
    ended_at: c.endedAt ? c.endedAt.toISOString() : null,
    reset_attempts: c.resetAttempts,
    error_detail: c.errorDetail,
  };
}

/** What an operator may decide for a checkpoint in needs_attention (the workflow's signals). */
export type OperatorDecision = 'retry' | 'release';

export interface DecisionReply {
  runner_id: string;
  checkpoint_name: string;
  decision: OperatorDecision;
  detail: string;
}

const SENT: Record<OperatorDecision, string> = {
  retry: 'Retry sent: the checkpoint is reset again',
  release: 'Release sent: the runner is unpaused and the checkpoint ends reset_failed',
};

export interface OperatorDeps {
  store: Store;
  registry: RunnerRegistry;
  temporal: Client;
  log: Logger;
}

/**
 * `retry` or `release` for the runner's checkpoint in needs_attention
 * (workflows/checkpoint/messages.ts): 404 for an unknown runner, 409 when
 * none waits. The workflow ignores the signal outside needs_attention, so a
 * checkpoint that left it between the read and the signal makes it a no-op.
 * Audited after the signal is accepted (`via`: the API or the fleet page).
 */
export async function decide(
  d: OperatorDeps,
  runnerId: string,
  decision: OperatorDecision,
  via: 'api' | 'ui',
): Promise<DecisionReply> {
  await d.registry.get(runnerId);
  const [c] = await d.store.checkpoints.list({
    states: ['needs_attention'],
    runnerId,
    limit: 1,
  });
  if (!c) throw new HttpError(409, `Runner '${runnerId}' has no checkpoint in needs_attention`);
  try {
    await d.temporal.workflow
      .getHandle(c.workflowId)
      .signal(decision === 'retry' ? retrySignal : releaseSignal);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError)
      throw new HttpError(409, `The workflow of checkpoint '${c.name}' is not running`);
    if (err instanceof ServiceError || (err as { code?: number }).code === 14) {
      d.log.warn({ runnerId, err: (err as Error).message }, `${decision}: Temporal unavailable`);
      throw new HttpError(503, 'Temporal unavailable, try again later');
    }
    throw err;
  }
  await d.store.audit.record({
    action: decision,
    runnerId,
    detail: { checkpoint: c.name, workflow_id: c.workflowId, via },
  });
  d.log.info({ runnerId, checkpoint: c.name, decision, via }, 'operator decision sent');
  return { runner_id: runnerId, checkpoint_name: c.name, decision, detail: SENT[decision] };
}

/** The listing's filter from its query; 422 naming the first problem. */
function listFilter(query: unknown): {
  states?: CheckpointState[];
  runnerId?: string;
  limit: number;
} {
  const q = listCheckpointsQuery.safeParse(query);
  if (!q.success) {
    const issue = q.error.issues[0]!;
    throw new HttpError(
      422,
      issue.code === 'unrecognized_keys'
        ? `Unknown query parameters: ${issue.keys.sort().join(', ')}`
        : `${issue.path.join('.')}: expected one value`,
    );
  }
  const { state, runner, limit } = q.data;
  let states: CheckpointState[] | undefined;
  if (state !== undefined) {
    const names = state.split(',').map((s) => s.trim());
    const bad = names.filter((s) => !(CHECKPOINT_STATES as readonly string[]).includes(s));
    if (bad.length)
      throw new HttpError(
        422,
        `state: unknown state '${bad[0]}' (one of ${CHECKPOINT_STATES.join(', ')})`,
      );
    states = names as CheckpointState[];
  }
  if (runner !== undefined && (runner === '' || runner.length > 255 || !storable(runner)))
    throw new HttpError(422, 'runner: expected a runner id');
  const n = limit === undefined ? DEFAULT_CHECKPOINT_LIST : Number(limit);
  if ((limit !== undefined && !/^[1-9]\d{0,6}$/.test(limit)) || n > MAX_CHECKPOINT_LIST)
    throw new HttpError(422, `limit: expected an integer from 1 to ${MAX_CHECKPOINT_LIST}`);
  return { states, runnerId: runner, limit: n };
}

/** A decision's body: nothing, or an empty JSON object. */
function noFields(body: unknown): void {
  if (body === undefined) return;
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new HttpError(422, 'Request body must be a JSON object');
  const keys = Object.keys(body);
  if (keys.length) throw new HttpError(422, `Unknown fields: ${keys.sort().join(', ')}`);
}

/** `GET /api/checkpoints`, `POST /api/runners/{id}/retry|release` (admin bearer). */
export function operatorRouter(d: OperatorDeps, admin: AdminToken): Router {
  const router = Router();
  const auth = adminAuth(admin);
  router.param('id', storableParam('runner id'));

  router.get('/api/checkpoints', auth, async (req, res) => {
    const rows = await d.store.checkpoints.list(listFilter(req.query));
    res.json(rows.map(checkpointFactsView));
  });

  for (const decision of ['retry', 'release'] as const) {
    router.post(`/api/runners/:id/${decision}`, auth, async (req, res) => {
      noFields(req.body);
      res.status(202).json(await decide(d, req.params.id as string, decision, 'api'));
    });
  }
  return router;
}
