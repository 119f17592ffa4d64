import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import express, {
  Router,
  type ErrorRequestHandler,
  type Request,
  type RequestHandler,
  type Response,
} from 'express';
import { checkpointWorkflowId, releaseHoldSignal } from '../../common/checkpoint';
import type { Logger } from '../../config/logger';
import type { Store } from '../../store';
import { adminRefusal, type AdminToken } from '../auth';
import { checkpointLogHandler, type LogFeed } from '../checkpoint-logs';
import type { CheckpointLogs } from '../../service/checkpoint-logs';
import { HttpError, isDataException, toHttpError } from '../errors';
import { storableParam } from '../input-guard';
import { checkpointFactsView } from '../operator-routes';
import { clientOf } from '../rate-limit';
import { parseInput, statusParams } from '../../service/schemas';
import { actionNotice, RUNNER_ACTIONS, runnerAction } from './actions';
import { ASSETS } from './assets';
import type { RunnerRegistry } from '../runner-registry';
import type { FleetView } from './fleet';
import type { Html } from './html';
import { checkpointPage, errorPage, fleetPage, loginPage, type CheckpointFactsDto } from './pages';
import { UiSessions, clearedSessionCookie, isHttps, sessionCookie } from './session';

export interface UiDeps {
  store: Store;
  admin: AdminToken;
  fleet: FleetView;
  logs: CheckpointLogs;
  logFeed: LogFeed;
  /** Sends `release-hold` to a runner's workflow. */
  temporal: Client;
  /** The runner buttons' actions (audited, as the admin API's). */
  registry: RunnerRegistry;
  /** How often the fleet page refreshes itself. */
  refreshMs: number;
  log: Logger;
}

/**
 * Every /ui response: no caching (pages hold fleet data), no framing, and a
 * policy that runs only our own scripts and styles, so markup that slipped
 * through escaping still could not run.
 */
const securityHeaders: RequestHandler = (_req, res, next) => {
  res.set({
    'Content-Security-Policy':
      "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
  });
  next();
};

/**
 * POSTs only from our own pages. SameSite=Strict keeps the session cookie
 * off cross-site requests, but a sibling host (another subdomain of the same
 * site) is "same-site" and would still send it; browsers say where a request
 * comes from in Sec-Fetch-Site, so anything but same-origin is refused.
 * (Clients that send no Sec-Fetch-Site, such as curl, are not browsers
 * carrying someone's cookie.)
 */
const sameOriginPost: RequestHandler = (req, _res, next) => {
  const site = req.get('sec-fetch-site');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    next(new HttpError(403, 'Cross-site request refused'));
    return;
  }
  next();
};

/** Where a login may send the browser: the fleet or a checkpoint page, nothing else (no open redirect). */
function safeNext(next: unknown): string {
  return typeof next === 'string' && /^\/ui(\/checkpoints\/[A-Za-z0-9._%-]{1,900})?$/.test(next)
    ? next
    : '/ui';
}

function sendHtml(res: Response, status: number, page: Html): void {
  res.status(status).type('html').send(page.text);
}

/** Whether an error on this path is answered as JSON (the API and the log stream) rather than a page. */
function wantsJson(req: Request): boolean {
  // The whole path: under router.use('/ui', …) req.path has lost its /ui.
  const path = req.originalUrl.split('?')[0]!;
  return path.startsWith('/ui/api/') || /^\/ui\/checkpoints\/[^/]+\/logs$/.test(path);
}

/** Pages: without a session, the login form (which brings the browser back here). */
const pageAuth =
  (sessions: UiSessions): RequestHandler =>
  (req, res, next) => {
    if (sessions.valid(req)) {
      res.locals.admin = true;
      next();
      return;
    }
    const back = req.method === 'GET' ? safeNext(req.path) : '/ui';
    res.redirect(303, back === '/ui' ? '/ui/login' : `/ui/login?next=${encodeURIComponent(back)}`);
  };

/** JSON and the log stream: a session, or the admin token as a bearer (for scripts). */
const apiAuth =
  (admin: AdminToken, sessions: UiSessions): RequestHandler =>
  (req, res, next) => {
    if (req.get('authorization') !== undefined) {
      const refused = adminRefusal(admin, req);
      if (refused) {
        next(refused);
        return;
      }
    } else if (!sessions.valid(req)) {
      next(new HttpError(401, 'Not logged in'));
      return;
    }
    res.locals.admin = true;
    next();
  };

/** `POST /ui/login`: the admin token for a session cookie, rate limited per client like the API. */
function login(admin: AdminToken, sessions: UiSessions, log: Logger): RequestHandler {
  return (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const next = safeNext(body.next);
    if (!admin.configured) {
      sendHtml(res, 503, loginPage({ configured: false, error: 'Admin API not configured' }));
      return;
    }
    const token = typeof body.token === 'string' ? body.token : '';
    if (token === '') {
      sendHtml(res, 400, loginPage({ configured: true, error: 'Enter the admin token', next }));
      return;
    }
    const client = clientOf(req);
    const limited = admin.refusedClient(client);
    if (limited) {
      res.set(limited.headers);
      sendHtml(res, 429, loginPage({ configured: true, error: String(limited.detail), next }));
      return;
    }
    if (!admin.matches(token)) {
      admin.failed(client);
      log.warn({ ip: client }, 'fleet page: login with a wrong admin token');
      sendHtml(res, 403, loginPage({ configured: true, error: 'Invalid admin token', next }));
      return;
    }
    res.set('Set-Cookie', sessionCookie(sessions.issue(), isHttps(req)));
    res.redirect(303, next);
  };
}

/** The facts of the checkpoint a page or the JSON API names (404 when there is none). */
async function checkpointFacts(store: Store, req: Request): Promise<CheckpointFactsDto> {
  const { name } = parseInput(statusParams, req.params, 'path');
  const c = await store.checkpoints.factsByName(name);
  if (!c) throw new HttpError(404, 'Checkpoint not found');
  // Only a hold still ahead of a finalize_queued checkpoint (store/holds.ts).
  const until = (await store.holds.untilOf([c.id])).get(c.id) ?? null;
  return { ...checkpointFactsView(c), held_until: until ? until.toISOString() : null };
}

/** `release-hold`: ends a hold for debugging now (the workflow resets and unpauses the runner). */
function releaseHold(store: Store, temporal: Client, log: Logger): RequestHandler {
  return async (req, res) => {
    const f = await checkpointFacts(store, req);
    if (!f.held_until) throw new HttpError(409, 'This checkpoint is not held for debugging');
    // Outside a hold the workflow ignores release-hold, so a hold that ends
    // between the check above and the signal makes it a no-op.
    try {
      await temporal.workflow
        .getHandle(checkpointWorkflowId(f.runner_id))
        .signal(releaseHoldSignal);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError)
        throw new HttpError(409, "The runner's checkpoint workflow is not running");
      throw err;
    }
    log.info({ checkpoint: f.name, runnerId: f.runner_id }, 'fleet page: release-hold sent');
    res.redirect(303, `/ui/checkpoints/${encodeURIComponent(f.name)}?released=1`);
  };
}

/**
 * A form POST must carry the session's form token (api/ui/session.ts): a
 * request another site makes the browser send carries the cookie, but it
 * cannot read our pages, so it cannot know the token. Runs after pageAuth.
 */
const formToken =
  (sessions: UiSessions): RequestHandler =>
  (req, _res, next) => {
    const token = (req.body as { csrf?: unknown } | undefined)?.csrf;
    next(
      sessions.formTokenValid(req, token)
        ? undefined
        : new HttpError(
            403,
            'The form is stale or not from this page: reload the page and try again',
          ),
    );
  };

/** Errors under /ui: JSON for the API and the log stream, an error page otherwise. */
function uiErrors(sessions: UiSessions, log: Logger): ErrorRequestHandler {
  return (err, req, res, next) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    let status: number;
    let detail: unknown;
    const http = toHttpError(err);
    if (http) {
      [status, detail] = [http.status, http.detail];
      res.set(http.headers);
    } else {
      const e = err as { status?: number; statusCode?: number };
      const s = e.status ?? e.statusCode;
      if (typeof s === 'number' && s >= 400 && s < 500) [status, detail] = [s, 'Bad request'];
      else if (isDataException(err))
        [status, detail] = [422, 'The request holds a value the database cannot store'];
      else {
        log.error({ err, method: req.method, path: req.path }, 'unhandled error in a fleet page');
        [status, detail] = [500, 'Internal server error'];
      }
    }
    if (wantsJson(req)) {
      res.status(status).json({ detail });
      return;
    }
    const message = typeof detail === 'string' ? detail : 'Invalid request';
    sendHtml(res, status, errorPage(status, message, sessions.valid(req)));
  };
}

/**
 * The fleet page (`/ui`): login with the admin token, the fleet table and
 * its JSON, a checkpoint's page with its live log, and `release-hold`.
 */
export function uiRouter(d: UiDeps): Router {
  const router = Router();
  const sessions = new UiSessions(d.admin);
  const log = d.log.child({ component: 'ui' });
  const form = express.urlencoded({ extended: false, limit: '8kb' });

  router.use('/ui', securityHeaders);
  router.param('id', storableParam('runner id'));
  const page = pageAuth(sessions);
  const api = apiAuth(d.admin, sessions);
  const facts = (req: Request) => checkpointFacts(d.store, req);

  router.get('/ui/assets/:file', (req, res) => {
    // A Map: a name such as __proto__ must not find Object.prototype.
    const asset = ASSETS.get(req.params.file);
    if (!asset) throw new HttpError(404, 'Not Found');
    res.set('Cache-Control', 'no-cache').type(asset.type).send(asset.body);
  });

  router.get('/ui/login', (req, res) => {
    if (sessions.valid(req)) {
      res.redirect(303, safeNext(req.query.next));
      return;
    }
    sendHtml(
      res,
      d.admin.configured ? 200 : 503,
      loginPage({
        configured: d.admin.configured,
        error: d.admin.configured ? undefined : 'Admin API not configured',
        next: safeNext(req.query.next),
      }),
    );
  });

  router.post('/ui/login', sameOriginPost, form, login(d.admin, sessions, log));

  router.post('/ui/logout', sameOriginPost, (req, res) => {
    res.set('Set-Cookie', clearedSessionCookie(isHttps(req)));
    res.redirect(303, '/ui/login');
  });

  router.get('/ui', page, async (req, res) => {
    const notice = actionNotice(req.query);
    // The snapshot may predate the change: read anew after one.
    const snapshot = await d.fleet.snapshot(notice !== null);
    sendHtml(res, 200, fleetPage(snapshot, d.refreshMs, notice, sessions.formToken(req) ?? ''));
  });

  router.get('/ui/api/fleet', api, async (_req, res) => {
    res.json(await d.fleet.snapshot());
  });

  router.get('/ui/api/checkpoints/:name', api, async (req, res) => {
    res.json(await facts(req));
  });

  router.get('/ui/checkpoints/:name', page, async (req, res) => {
    const notice =
      req.query.released === '1' ? 'Release sent: the runner is reset and unpaused now.' : null;
    sendHtml(res, 200, checkpointPage(await facts(req), notice, sessions.formToken(req) ?? ''));
  });

  // The session cookie is scoped to /ui, so the page's EventSource reads the
  // log here; the handler is the one of GET /checkpoint/{name}/logs.
  router.get('/ui/checkpoints/:name/logs', api, checkpointLogHandler(d.logs, d.logFeed, log));

  const guarded = [sameOriginPost, form, page, formToken(sessions)];
  router.post('/ui/checkpoints/:name/release-hold', guarded, releaseHold(d.store, d.temporal, log));
  const operator = { store: d.store, registry: d.registry, temporal: d.temporal, log: d.log };
  for (const action of RUNNER_ACTIONS)
    router.post(`/ui/runners/:id/${action}`, guarded, runnerAction(action, operator, log));

  router.use('/ui', (req, res) => {
    if (wantsJson(req)) res.status(404).json({ detail: 'Not Found' });
    else sendHtml(res, 404, errorPage(404, 'No such page', sessions.valid(req)));
  });

  router.use('/ui', uiErrors(sessions, log));
  return router;
}
