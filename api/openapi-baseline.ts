/**
 * OpenAPI of the baseline refresh and rollout routes (api/baseline-routes.ts;
 * docs/protocol.md#baseline-refresh), registered by api/openapi.ts.
 */
import type { OpenAPIRegistry } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { refreshBody, rolloutBody } from './baseline-routes';

type Response = { description: string; content?: Record<string, { schema: z.ZodType }> };

export function registerBaselinePaths(
  r: OpenAPIRegistry,
  o: {
    security: Array<Record<string, string[]>>;
    adminErrors: Record<string, Response>;
    detailError: (description: string) => Response;
  },
): void {
  const started = z
    .object({
      workflow_id: z.string().openapi({
        description: 'The Temporal workflow that does it (follow it in the Web UI)',
      }),
    })
    .openapi('BaselineWorkflow');
  const json = (description: string) => ({
    description,
    content: { 'application/json': { schema: started } },
  });
  r.registerPath({
    method: 'post',
    path: '/api/runners/{id}/baseline',
    summary:
      "Refresh a Proxmox runner's golden baseline: drain, wait for its checkpoint, run update_cmd in the guest on the current baseline, snapshot e2epool-baseline-<UTC yyyymmddhhmmss>, verify a canary round trip, make it the baseline, prune beyond keep, undrain; on failure restore the previous baseline and undrain",
    security: o.security,
    request: {
      params: z.object({ id: z.string() }),
      body: { content: { 'application/json': { schema: refreshBody } } },
    },
    responses: {
      '202': json('Started: workflow e2epool-baseline-<runner_id>'),
      '404': o.detailError("Runner '<id>' not found"),
      '409': o.detailError('A refresh of the runner runs already, or it is not a Proxmox runner'),
      '422': o.detailError(
        'keep not an integer ≥ 1, update_cmd empty or not a string, or an unknown field',
      ),
      ...o.adminErrors,
    },
  });
  r.registerPath({
    method: 'post',
    path: '/api/baseline-rollouts',
    summary:
      'Refresh the baselines of several Proxmox runners: the canary first, alone; then the rest, at most max_unavailable at once; no refresh starts after the first failure',
    security: o.security,
    request: { body: { content: { 'application/json': { schema: rolloutBody } } } },
    responses: {
      '202': json('Started: workflow e2epool-baseline-rollout-<UTC yyyymmddhhmmss>-<random>'),
      '404': o.detailError("Runner '<id>' not found"),
      '409': o.detailError('A runner is not a Proxmox runner'),
      '422': o.detailError(
        'runners not a non-empty list or "all", a runner listed twice, max_unavailable or keep not an integer ≥ 1, canary not one of runners, or an unknown field',
      ),
      ...o.adminErrors,
    },
  });
}
