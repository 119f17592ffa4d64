/* eslint-disable max-lines, max-lines-per-function -- a declarative table: one
   registration per path and schema, read top to bottom; splitting it would only
   scatter the API description. */
import {
  OpenAPIRegistry,
  OpenApiGeneratorV31,
  extendZodWithOpenApi,
} from '@asteasolutions/zod-to-openapi';
import { dirname, join } from 'node:path';
import { Router } from 'express';
import { z } from 'zod';
import { buildInfo } from '../common/build-info';
import { CHECKPOINT_STATES, FINALIZE_STATUSES } from '../common/states';
import { listRunnersQuery, quarantineBody } from './runner-routes';
import { registerBaselinePaths } from './openapi-baseline';
import { registerOperatorPaths, uiForm } from './openapi-operator';
import { createBody, finalizeBody, statusParams } from '../service/schemas';

extendZodWithOpenApi(z);

/** Error bodies: a text, or the validation issues of a 422 (FastAPI's shape, kept for old clients). */
const detail = z.object({ detail: z.string() }).openapi('Error');
const validationError = z
  .object({
    detail: z.array(
      z.object({
        type: z.string(),
        loc: z.array(z.union([z.string(), z.number()])),
        msg: z.string(),
      }),
    ),
  })
  .openapi('ValidationError');

const checkpoint = z
  .object({
    name: z.string(),
    runner_id: z.string(),
    job_id: z.string(),
    state: z.enum(CHECKPOINT_STATES),
    finalize_status: z.enum(FINALIZE_STATUSES).nullable(),
    finalize_source: z.string().nullable(),
    created_at: z.string().openapi({ format: 'date-time' }),
    finalized_at: z.string().openapi({ format: 'date-time' }).nullable(),
    verified: z.boolean().nullable().openapi({
      description:
        'Proof of reset: true once the reset was verified, false when the check failed (the checkpoint is then needs_attention and the runner quarantined), null while there is no answer (not reset yet, verification off, or not verifiable: verify_detail says why)',
    }),
    verify_detail: z.string().nullable(),
  })
  .openapi('Checkpoint');

const finalizeReply = z
  .union([
    z.object({ detail: z.literal('Finalize queued'), checkpoint_name: z.string() }),
    z.object({ detail: z.literal('Already finalized'), state: z.enum(CHECKPOINT_STATES) }),
  ])
  .openapi('FinalizeReply');

const logEntry = z
  .object({
    seq: z.number().int(),
    at: z.string().openapi({ format: 'date-time' }),
    kind: z.enum(['step', 'stdout', 'stderr']),
    step: z.string().optional(),
    result: z.string().optional(),
    duration_ms: z.number().int().optional(),
    text: z.string().optional(),
  })
  .openapi('LogEntry');
const logPage = z
  .object({ entries: z.array(logEntry), next: z.number().int(), done: z.boolean() })
  .openapi('LogPage');

/** The CI system of a runner (inventory.yml's fields, an extension; see docs/protocol.md#webhooks). */
const ciFields = {
  ci_adapter: z.enum(['gitlab', 'github']).optional(),
  github_repo: z.string().optional().openapi({ description: 'owner/name' }),
  github_org: z.string().optional(),
  github_runner_id: z.number().int().optional(),
  github_pause_labels: z.array(z.string()).optional(),
};

/** How a reset is proven and what a Proxmox runner is reset to (see docs/protocol.md#runner-registry). */
const verifyFields = {
  baseline_snapshot: z.string().optional().openapi({
    description:
      'Proxmox only: the snapshot every reset rolls back to (no per-job snapshot); a Proxmox snapshot name',
  }),
  verify_reset: z.enum(['canary', 'required', 'off']).optional().openapi({
    description:
      'How a reset is proven. Default: canary for Proxmox; for bare metal required with verify_cmd, else off. canary is Proxmox only',
  }),
  canary_path: z.string().optional().openapi({
    description:
      'Proxmox only: the guest file of the canary nonce (default /var/lib/e2epool/canary)',
  }),
  verify_cmd: z.string().optional().openapi({
    description: 'Bare metal only: run through the agent after reset_cmd; exit 0 proves the reset',
  }),
};

const runnerObject = z
  .object({
    runner_id: z.string(),
    backend: z.enum(['proxmox', 'bare_metal']),
    proxmox_host: z.string().nullable(),
    proxmox_user: z.string().nullable(),
    proxmox_token_name: z.string().nullable(),
    proxmox_node: z.string().nullable(),
    proxmox_vmid: z.number().int().nullable(),
    reset_cmd: z.string().nullable(),
    cleanup_cmd: z.string().nullable(),
    readiness_cmd: z.string().nullable(),
    gitlab_runner_id: z.number().int().nullable(),
    tags: z.array(z.string()),
    reset_on_success: z.boolean().optional(),
    hold_on_failure_seconds: z.number().int().optional(),
    proxmox_verify_tls: z.boolean().optional(),
    proxmox_ca_file: z.string().optional(),
    proxmox_fingerprint: z.string().optional(),
    ...ciFields,
    ...verifyFields,
    is_active: z.boolean(),
    draining: z.boolean(),
    quarantined: z.boolean().openapi({
      description:
        'Quarantined: creates get 423 and the runner stays paused in its CI system until unquarantined',
    }),
    quarantine_reason: z.string().nullable(),
    quarantine_source: z.enum(['verification', 'failure_streak', 'operator', 'refresh']).nullable(),
    quarantined_at: z.string().openapi({ format: 'date-time' }).nullable(),
    current_baseline: z.string().nullable().openapi({
      description:
        "The snapshot the runner's resets roll back to now: the last baseline refresh's, else baseline_snapshot",
    }),
    has_agent_token: z.boolean().openapi({
      description:
        'Whether the agent has a credential of its own; false: it uses the REST token, which CI jobs hold too',
    }),
    source: z.enum(['api', 'inventory']),
    created_at: z.string().openapi({ format: 'date-time' }).nullable(),
    updated_at: z.string().openapi({ format: 'date-time' }).nullable(),
  })
  .openapi('Runner');
const runnerWithToken = runnerObject
  .extend({ token: z.string().openapi({ description: 'Shown once' }) })
  .openapi('RunnerWithToken');
const agentTokenField = z.string().openapi({
  description:
    "Shown once. The agent's /ws/agent credential (agent_token in its config); the REST token is refused there",
});
const runnerWithAgentToken = runnerObject
  .extend({ agent_token: agentTokenField })
  .openapi('RunnerWithAgentToken');
const runnerWithTokens = runnerObject
  .extend({
    token: z.string().openapi({ description: 'Shown once' }),
    agent_token: agentTokenField,
  })
  .openapi('RunnerWithTokens');
/** A runner's fields as sent (the inventory's; a `token` is ignored, it is generated). */
const runnerBody = z
  .object({
    runner_id: z.string(),
    backend: z.enum(['proxmox', 'bare_metal']),
    proxmox_host: z.string().optional(),
    proxmox_user: z.string().optional(),
    proxmox_token_name: z.string().optional(),
    proxmox_token_value: z
      .string()
      .optional()
      .openapi({ description: 'Stored encrypted (needs E2EPOOL_SECRET_KEY), never returned' }),
    proxmox_node: z.string().optional(),
    proxmox_vmid: z.number().int().optional(),
    reset_cmd: z.string().optional(),
    cleanup_cmd: z.string().optional(),
    readiness_cmd: z.string().optional(),
    gitlab_runner_id: z.number().int().optional(),
    tags: z.array(z.string()).optional(),
    reset_on_success: z.boolean().optional(),
    hold_on_failure_seconds: z.number().int().optional(),
    proxmox_verify_tls: z.boolean().optional(),
    proxmox_ca_file: z.string().optional(),
    proxmox_fingerprint: z.string().optional(),
    ...ciFields,
    ...verifyFields,
  })
  .openapi('RunnerFields');
const runnerPatch = runnerBody
  .omit({ runner_id: true })
  .partial()
  .extend({ is_active: z.boolean().optional() })
  .openapi('RunnerPatch');

const json = (schema: z.ZodType, description: string) => ({
  description,
  content: { 'application/json': { schema } },
});
const errors = (...codes: number[]) =>
  Object.fromEntries(
    codes.map((c) => [
      String(c),
      c === 422 ? json(validationError, 'Invalid request') : json(detail, ERROR_TEXT[c] ?? 'Error'),
    ]),
  );
const ERROR_TEXT: Record<number, string> = {
  400: 'Malformed request',
  413: 'Body over 1 MB',
  415: 'Content-Encoding other than identity',
  401: 'Invalid authorization header / not logged in',
  403: 'Invalid token, or not this runner’s checkpoint',
  404: 'Not found',
  409: 'Conflict (an active checkpoint exists, or nothing holds it)',
  423: 'The runner is draining or quarantined',
  429: 'Cooldown period active',
  503: 'Temporal or the database unavailable / not configured',
  504: 'Not done before the create deadline',
};
const html = (description: string) => ({
  description,
  content: { 'text/html': { schema: z.string() } },
});

/**
 * Every route of the API, documented from the zod schemas that validate the
 * requests (request bodies and parameters) plus the response shapes above.
 * A test checks that every route Express serves is in here.
 */
export function openApiDocument(): ReturnType<OpenApiGeneratorV31['generateDocument']> {
  const r = new OpenAPIRegistry();
  const runnerToken = r.registerComponent('securitySchemes', 'runnerToken', {
    type: 'http',
    scheme: 'bearer',
    description: 'The runner’s token from the inventory',
  });
  const adminToken = r.registerComponent('securitySchemes', 'adminToken', {
    type: 'http',
    scheme: 'bearer',
    description: 'E2EPOOL_ADMIN_TOKEN',
  });
  const uiSession = r.registerComponent('securitySchemes', 'uiSession', {
    type: 'apiKey',
    in: 'cookie',
    name: 'e2epool_session',
    description: 'Set by POST /ui/login',
  });
  const gitlabToken = r.registerComponent('securitySchemes', 'gitlabWebhookToken', {
    type: 'apiKey',
    in: 'header',
    name: 'X-Gitlab-Token',
    description: 'E2EPOOL_GITLAB_WEBHOOK_SECRET',
  });
  const githubSignature = r.registerComponent('securitySchemes', 'githubSignature', {
    type: 'apiKey',
    in: 'header',
    name: 'X-Hub-Signature-256',
    description: 'sha256= + hex HMAC-SHA256 of the raw body with E2EPOOL_GITHUB_WEBHOOK_SECRET',
  });
  const metricsToken = r.registerComponent('securitySchemes', 'metricsToken', {
    type: 'http',
    scheme: 'bearer',
    description: 'E2EPOOL_METRICS_TOKEN (unset: /metrics is open)',
  });
  const runner = [{ [runnerToken.name]: [] }];
  const ui = [{ [uiSession.name]: [] }, { [adminToken.name]: [] }];
  const nameParam = statusParams;

  r.registerPath({
    method: 'post',
    path: '/checkpoint/create',
    summary: 'Take a checkpoint before a job',
    security: runner,
    request: { body: { content: { 'application/json': { schema: createBody } } } },
    responses: {
      '201': json(checkpoint, 'Created'),
      ...errors(401, 403, 409, 422, 423, 429, 503, 504),
      '429': {
        ...json(
          detail,
          'Cooldown period active: the runner’s last reset or cleanup ended moments ago',
        ),
        headers: {
          'Retry-After': {
            description: 'Seconds left of the cooldown, rounded up',
            schema: { type: 'integer', minimum: 1 },
          },
        },
      },
    },
  });
  r.registerPath({
    method: 'post',
    path: '/checkpoint/finalize',
    summary: 'The job ended: pause the runner and reset it',
    security: runner,
    request: { body: { content: { 'application/json': { schema: finalizeBody } } } },
    responses: { '202': json(finalizeReply, 'Queued'), ...errors(401, 403, 404, 409, 422, 503) },
  });
  r.registerPath({
    method: 'get',
    path: '/checkpoint/status/{name}',
    summary: 'A checkpoint',
    security: runner,
    request: { params: nameParam },
    responses: { '200': json(checkpoint, 'The checkpoint'), ...errors(401, 403, 404, 422, 503) },
  });
  r.registerPath({
    method: 'get',
    path: '/checkpoint/{name}/logs',
    summary: 'A checkpoint’s log: JSON pages, or Server-Sent Events with Accept: text/event-stream',
    security: [...runner, { [adminToken.name]: [] }],
    request: {
      params: nameParam,
      query: z.object({ after: z.number().int().min(0).max(2_147_483_647).optional() }),
      headers: z.object({ 'last-event-id': z.string().optional() }),
    },
    responses: {
      '200': {
        description: 'Entries after `after` (or Last-Event-ID)',
        content: {
          'application/json': { schema: logPage },
          'text/event-stream': {
            schema: z.string().openapi({
              description: 'events step|stdout|stderr (id: seq, data: a LogEntry), then end',
            }),
          },
        },
      },
      ...errors(401, 403, 404, 422),
    },
  });
  r.registerPath({
    method: 'get',
    path: '/runner/readiness',
    summary: 'Whether the runner is ready for a job',
    security: runner,
    responses: {
      '200': json(
        z.object({ runner_id: z.string(), ready: z.literal(true), detail: z.null() }),
        'Ready',
      ),
      '503': json(
        z.object({ runner_id: z.string(), ready: z.literal(false), detail: z.string() }),
        'Not ready (e.g. `agent unreachable`)',
      ),
      ...errors(401, 403),
      '429': json(detail, 'Too many readiness checks for this runner (see Retry-After)'),
    },
  });
  /** Which build answers (package version, git commit or "unknown"). */
  const buildFields = {
    version: z.string().openapi({ example: '1.0.0' }),
    commit: z.string().openapi({ example: '869638b820b28a4b7eb9c9ae48f77276f9a4effe' }),
  };
  r.registerPath({
    method: 'get',
    path: '/healthz',
    summary: 'Temporal and Postgres reachable',
    responses: {
      '200': json(
        z.object({ status: z.literal('ok'), detail: z.null(), ...buildFields }),
        'Healthy',
      ),
      '503': json(
        z.object({ status: z.literal('unhealthy'), detail: z.string(), ...buildFields }),
        'Unhealthy',
      ),
    },
  });
  r.registerPath({
    method: 'get',
    path: '/metrics',
    summary: 'Prometheus metrics of this API instance',
    security: [{}, { [metricsToken.name]: [] }],
    responses: {
      '200': {
        description: 'Prometheus text format',
        content: { 'text/plain': { schema: z.string() } },
      },
      '401': json(detail, 'E2EPOOL_METRICS_TOKEN is set and no bearer token was sent'),
      '403': json(detail, 'Invalid metrics token'),
    },
  });
  const ok = json(
    z.object({ ok: z.literal(true) }),
    'Accepted (finalizes asynchronously, or ignored)',
  );
  r.registerPath({
    method: 'post',
    path: '/webhooks/gitlab',
    summary: 'GitLab job events',
    security: [{ [gitlabToken.name]: [] }],
    request: {
      body: { content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } } },
    },
    responses: {
      '200': ok,
      ...errors(400, 403, 413, 415, 503),
    },
  });
  r.registerPath({
    method: 'post',
    path: '/webhooks/github',
    summary: 'GitHub workflow_job events',
    security: [{ [githubSignature.name]: [] }],
    request: {
      body: {
        content: {
          'application/json': { schema: z.record(z.string(), z.unknown()) },
          'application/x-www-form-urlencoded': { schema: z.object({ payload: z.string() }) },
        },
      },
    },
    responses: {
      '200': ok,
      ...errors(400, 403, 413, 415, 503),
    },
  });
  r.registerPath({
    method: 'get',
    path: '/openapi.json',
    summary: 'This document',
    responses: {
      '200': {
        description: 'OpenAPI 3.1',
        content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } },
      },
    },
  });
  r.registerPath({
    method: 'get',
    path: '/docs',
    summary: 'API reference page',
    responses: { '200': html('Swagger UI') },
  });
  r.registerPath({
    method: 'get',
    path: '/docs/assets/{file}',
    summary: 'The API reference page’s assets',
    request: { params: z.object({ file: z.string() }) },
    responses: { '200': { description: 'A script or style sheet' }, ...errors(404) },
  });

  // The fleet page (HTML for browsers; its JSON under /ui/api).
  r.registerPath({
    method: 'get',
    path: '/ui',
    summary: 'Fleet page',
    security: ui,
    responses: { '200': html('The fleet'), '303': { description: 'To the login form' } },
  });
  r.registerPath({
    method: 'get',
    path: '/ui/login',
    summary: 'Login form',
    responses: { '200': html('The form'), ...errors(503) },
  });
  r.registerPath({
    method: 'post',
    path: '/ui/login',
    summary: 'Log in with the admin token (sets the session cookie)',
    request: {
      body: {
        content: {
          'application/x-www-form-urlencoded': {
            schema: z.object({ token: z.string(), next: z.string().optional() }),
          },
        },
      },
    },
    responses: {
      '303': { description: 'Logged in' },
      '400': html('Empty token'),
      '403': html('Wrong token'),
      '429': html('Too many wrong tokens from this client (see Retry-After)'),
      ...errors(503),
    },
  });
  r.registerPath({
    method: 'post',
    path: '/ui/logout',
    summary: 'Log out',
    security: ui,
    responses: { '303': { description: 'Logged out' } },
  });
  r.registerPath({
    method: 'get',
    path: '/ui/assets/{file}',
    summary: 'The fleet page’s assets',
    request: { params: z.object({ file: z.string() }) },
    responses: { '200': { description: 'A script or style sheet' }, ...errors(404) },
  });
  r.registerPath({
    method: 'get',
    path: '/ui/api/fleet',
    summary: 'The fleet table as JSON',
    security: ui,
    responses: { '200': json(z.record(z.string(), z.unknown()), 'Runners'), ...errors(401, 403) },
  });
  r.registerPath({
    method: 'get',
    path: '/ui/api/checkpoints/{name}',
    summary: 'A checkpoint’s facts',
    security: ui,
    request: { params: nameParam },
    responses: {
      '200': json(z.record(z.string(), z.unknown()), 'Facts'),
      ...errors(401, 403, 404),
    },
  });
  r.registerPath({
    method: 'get',
    path: '/ui/checkpoints/{name}',
    summary: 'Checkpoint page',
    security: ui,
    request: { params: nameParam },
    responses: { '200': html('The checkpoint'), ...errors(404) },
  });
  r.registerPath({
    method: 'get',
    path: '/ui/checkpoints/{name}/logs',
    summary: 'A checkpoint’s log for the page (as /checkpoint/{name}/logs)',
    security: ui,
    request: { params: nameParam },
    responses: { '200': { description: 'As /checkpoint/{name}/logs' }, ...errors(401, 403, 404) },
  });
  r.registerPath({
    method: 'post',
    path: '/ui/checkpoints/{name}/release-hold',
    summary: 'End a hold for debugging now',
    security: ui,
    request: { params: nameParam, ...uiForm() },
    responses: {
      '303': { description: 'Back to the checkpoint page' },
      ...errors(401, 403, 404, 409),
    },
  });

  // The runner registry (see docs/protocol.md#runner-registry): admin bearer token.
  const adminOnly = [{ [adminToken.name]: [] }];
  const detailError = (description: string) => json(detail, description);
  const adminErrors = {
    '401': detailError('Invalid authorization header'),
    '403': detailError('Invalid admin token'),
    '429': detailError('Too many failed admin token attempts from this client (see Retry-After)'),
    '503': detailError('Admin API not configured'),
  };
  const idParam = z.object({ id: z.string() });
  r.registerPath({
    method: 'post',
    path: '/api/runners',
    summary:
      'Add a runner to the registry (its token and agent token are generated and shown once)',
    security: adminOnly,
    request: { body: { content: { 'application/json': { schema: runnerBody } } } },
    responses: {
      '201': json(runnerWithTokens, 'Created'),
      '409': detailError("Runner '<id>' already exists"),
      '422': {
        description:
          'Invalid runner fields (a text), or a string Postgres cannot store (validation issues)',
        content: { 'application/json': { schema: z.union([detail, validationError]) } },
      },
      ...adminErrors,
    },
  });
  r.registerPath({
    method: 'get',
    path: '/api/runners',
    summary: 'Every runner (registry and inventory.yml), ordered by runner_id',
    security: adminOnly,
    request: { query: listRunnersQuery },
    responses: {
      '200': json(z.array(runnerObject), 'Runners'),
      '422': detailError('Invalid query'),
      ...adminErrors,
    },
  });
  r.registerPath({
    method: 'get',
    path: '/api/runners/{id}',
    summary: 'A runner',
    security: adminOnly,
    request: { params: idParam },
    responses: {
      '200': json(runnerObject, 'The runner'),
      '404': detailError('Runner not found'),
      ...adminErrors,
    },
  });
  r.registerPath({
    method: 'patch',
    path: '/api/runners/{id}',
    summary: 'Change the fields sent (null clears an optional field)',
    security: adminOnly,
    request: {
      params: idParam,
      body: { content: { 'application/json': { schema: runnerPatch } } },
    },
    responses: {
      '200': json(runnerObject, 'The runner'),
      '404': detailError('Runner not found'),
      '409': detailError("Runner '<id>' is defined in the inventory file"),
      '422': {
        description:
          'Invalid runner fields (a text), or a string Postgres cannot store (validation issues)',
        content: { 'application/json': { schema: z.union([detail, validationError]) } },
      },
      ...adminErrors,
    },
  });
  r.registerPath({
    method: 'delete',
    path: '/api/runners/{id}',
    summary: 'Deactivate a runner (its token stops working, its agent is disconnected)',
    security: adminOnly,
    request: { params: idParam },
    responses: {
      '200': json(detail, "Runner '<id>' deactivated"),
      '404': detailError('Runner not found'),
      '409': detailError("Runner '<id>' is defined in the inventory file"),
      ...adminErrors,
    },
  });
  for (const [action, summary, body] of [
    [
      'rotate-token',
      'A new token (shown once); the old one stops working at once',
      runnerWithToken,
    ],
    [
      'rotate-agent-token',
      "A new agent token (shown once); the old one (or the REST token, for a runner that had none) no longer opens /ws/agent, and the runner's live agent sockets are closed with 4401",
      runnerWithAgentToken,
    ],
    ['drain', 'Take no new checkpoints; the current one finishes', runnerObject],
    ['undrain', 'Take checkpoints again', runnerObject],
  ] as const) {
    r.registerPath({
      method: 'post',
      path: `/api/runners/{id}/${action}`,
      summary,
      security: adminOnly,
      request: { params: idParam },
      responses: {
        '200': json(body, 'The runner'),
        '404': detailError('Runner not found'),
        // An inventory-file runner's drain is kept in runner_state; its tokens are the file's.
        ...(action.startsWith('rotate')
          ? { '409': detailError("Runner '<id>' is defined in the inventory file") }
          : {}),
        ...adminErrors,
      },
    });
  }
  r.registerPath({
    method: 'post',
    path: '/api/runners/{id}/quarantine',
    summary:
      'Quarantine a runner: creates get 423 and it stays paused in its CI system after its current checkpoint (an idle runner is paused at once by the workflow e2epool-quarantine-<id>); an already quarantined runner keeps its first reason',
    security: adminOnly,
    request: {
      params: idParam,
      body: { content: { 'application/json': { schema: quarantineBody } } },
    },
    responses: {
      '200': json(runnerObject, 'The runner'),
      '404': detailError('Runner not found'),
      '422': detailError('reason missing, empty, too long, or not storable; or an unknown field'),
      ...adminErrors,
    },
  });
  r.registerPath({
    method: 'post',
    path: '/api/runners/{id}/unquarantine',
    summary:
      'End a quarantine: the runner takes checkpoints again and the reconciler unpauses it (a pass starts at once)',
    security: adminOnly,
    request: { params: idParam },
    responses: {
      '200': json(runnerObject, 'The runner'),
      '404': detailError('Runner not found'),
      ...adminErrors,
    },
  });
  registerBaselinePaths(r, { security: adminOnly, adminErrors, detailError });
  registerOperatorPaths(r, { security: adminOnly, ui, adminErrors, detailError, checkpoint });

  return withoutRegexFlags(
    new OpenApiGeneratorV31(r.definitions).generateDocument({
      openapi: '3.1.0',
      info: {
        title: 'e2epool',
        version: buildInfo().version,
        description:
          'Keeps shared end-to-end CI runners clean. The agent WebSocket (`/ws/agent`) is described in docs/protocol.md.',
      },
    }),
  );
}

/**
 * zod-to-openapi 9.1 writes a pattern as the regex's `toString()` without its
 * slashes, so `/^a$/u` becomes `^a$/u`, a pattern that never matches. Ours
 * all end with `$`: the flags after it are cut off.
 */
function withoutRegexFlags<T>(doc: T): T {
  return JSON.parse(JSON.stringify(doc), (key, value: unknown) =>
    key === 'pattern' && typeof value === 'string' ? value.replace(/\$\/[dgimsuvy]+$/, '$') : value,
  ) as T;
}

/** `GET /openapi.json` and the reference page `GET /docs`, served from the swagger-ui-dist package. */
export function openApiRouter(): Router {
  const router = Router();
  const doc = openApiDocument();
  router.get('/openapi.json', (_req, res) => {
    res.json(doc);
  });
  const assets = dirname(require.resolve('swagger-ui-dist/package.json'));
  router.get('/docs', (_req, res) => {
    res.type('html').send(DOCS_PAGE);
  });
  router.get('/docs/assets/:file', (req, res, next) => {
    const file = req.params.file;
    if (file === 'init.js') {
      res.type('js').send(INIT_JS);
      return;
    }
    // Only the files the page loads: nothing else of the package is served.
    if (file !== 'swagger-ui.css' && file !== 'swagger-ui-bundle.js') {
      next();
      return;
    }
    res.sendFile(join(assets, file), { maxAge: '1h' });
  });
  return router;
}

const DOCS_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>e2epool API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script></body></html>
`;
const INIT_JS = `window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui' });\n`;
