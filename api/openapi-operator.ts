/**
 * OpenAPI of an operator's routes (api/operator-routes.ts) and the fleet
 * page's runner buttons (api/ui/actions.ts), registered by api/openapi.ts.
 */
import type { OpenAPIRegistry } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { listCheckpointsQuery } from './operator-routes';
import { RUNNER_ACTIONS } from './ui/actions';

type Response = { description: string; content?: Record<string, { schema: z.ZodType }> };

/** The form every fleet-page POST carries (api/ui/session.ts, the session's form token). */
export const uiForm = (extra: Record<string, z.ZodType> = {}) => ({
  body: {
    content: {
      'application/x-www-form-urlencoded': {
        schema: z.object({
          csrf: z.string().openapi({ description: 'The form token the page was served with' }),
          ...extra,
        }),
      },
    },
  },
});

/** A checkpoint as an operator lists it (api/operator-routes.ts checkpointFactsView): the API's Checkpoint and more. */
const checkpointFacts = (checkpoint: z.ZodObject) =>
  checkpoint
    .extend({
      backend: z.enum(['proxmox', 'bare_metal']),
      active: z.boolean(),
      ended_at: z.string().openapi({ format: 'date-time' }).nullable(),
      reset_attempts: z.number().int(),
      error_detail: z.string().nullable().openapi({
        description:
          'Why it is where it is (e.g. the reset command’s failure of a needs_attention checkpoint)',
      }),
    })
    .openapi('CheckpointFacts');

/** Registers the operator routes; `checkpoint`: the API's Checkpoint schema (api/openapi.ts). */
export function registerOperatorPaths(
  r: OpenAPIRegistry,
  o: {
    security: Array<Record<string, string[]>>;
    ui: Array<Record<string, string[]>>;
    adminErrors: Record<string, Response>;
    detailError: (description: string) => Response;
    checkpoint: z.ZodObject;
  },
): void {
  r.registerPath({
    method: 'get',
    path: '/api/checkpoints',
    summary: 'Checkpoints, newest first, filtered by state and runner',
    security: o.security,
    request: { query: listCheckpointsQuery },
    responses: {
      '200': {
        description: 'The checkpoints',
        content: { 'application/json': { schema: z.array(checkpointFacts(o.checkpoint)) } },
      },
      '422': o.detailError('An unknown state, a bad runner id or limit, an unknown parameter'),
      ...o.adminErrors,
    },
  });
  const decision = z
    .object({
      runner_id: z.string(),
      checkpoint_name: z.string(),
      decision: z.enum(['retry', 'release']),
      detail: z.string(),
    })
    .openapi('OperatorDecision');
  for (const [action, summary] of [
    [
      'retry',
      "Reset the runner's checkpoint waiting in needs_attention again (the workflow's retry signal)",
    ],
    [
      'release',
      "Give up on the runner's checkpoint in needs_attention: it is unpaused and the checkpoint ends reset_failed (the workflow's release signal)",
    ],
  ] as const) {
    r.registerPath({
      method: 'post',
      path: `/api/runners/{id}/${action}`,
      summary,
      security: o.security,
      request: {
        params: z.object({ id: z.string() }),
        body: {
          required: false,
          content: { 'application/json': { schema: z.object({}).strict() } },
        },
      },
      responses: {
        '202': {
          description: 'Sent to the checkpoint’s workflow (audited)',
          content: { 'application/json': { schema: decision } },
        },
        '404': o.detailError('Runner not found'),
        '409': o.detailError(
          "Runner '<id>' has no checkpoint in needs_attention, or its workflow is not running",
        ),
        '422': o.detailError('A body that is not an empty JSON object'),
        ...o.adminErrors,
      },
    });
  }
  registerButtonPaths(r, o);
}

/** The fleet page's runner buttons. */
function registerButtonPaths(
  r: OpenAPIRegistry,
  o: { ui: Array<Record<string, string[]>>; detailError: (description: string) => Response },
): void {
  for (const action of RUNNER_ACTIONS) {
    r.registerPath({
      method: 'post',
      path: `/ui/runners/{id}/${action}`,
      summary: `The fleet page's ${action} button (as POST /api/runners/{id}/${action})`,
      security: o.ui,
      request: {
        params: z.object({ id: z.string() }),
        ...uiForm(action === 'quarantine' ? { reason: z.string() } : {}),
      },
      responses: {
        '303': { description: 'Back to the fleet page, which says what was done' },
        '403': o.detailError('Cross-site, or without the page’s form token'),
        '404': o.detailError('Runner not found'),
        // Drain and quarantine take every runner (an inventory-file one's state is in runner_state).
        ...(action === 'retry' || action === 'release'
          ? { '409': o.detailError('No checkpoint of the runner in needs_attention') }
          : {}),
        ...(action === 'quarantine' ? { '422': o.detailError('Invalid reason') } : {}),
      },
    });
  }
}
