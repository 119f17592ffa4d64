/**
 * The fleet page's runner buttons: the admin API's actions (drain, undrain,
 * quarantine, unquarantine; retry and release of a checkpoint in
 * needs_attention), audited the same way. Each is a form POST from the
 * page, confirmed in a dialog first (fleet.js), carrying the session's form
 * token (api/ui/session.ts), and answered with a redirect to the fleet.
 */
import type { Request, RequestHandler } from 'express';
import type { Logger } from '../../config/logger';
import { HttpError } from '../errors';
import { decide, type OperatorDeps } from '../operator-routes';
import { quarantineBody } from '../runner-routes';

/** The buttons, in the order a row shows them. */
export const RUNNER_ACTIONS = [
  'drain',
  'undrain',
  'quarantine',
  'unquarantine',
  'retry',
  'release',
] as const;
export type RunnerAction = (typeof RUNNER_ACTIONS)[number];

/** The query parameter of the fleet page's notice after an action (`/ui?<done>=<runner>`). */
const DONE: Record<RunnerAction, string> = {
  drain: 'drained',
  undrain: 'undrained',
  quarantine: 'quarantined',
  unquarantine: 'unquarantined',
  retry: 'retried',
  release: 'released',
};

const NOTICE: Record<RunnerAction, (id: string) => string> = {
  drain: (id) =>
    `Runner '${id}' drains: it takes no new checkpoint until undrained; its current one finishes.`,
  undrain: (id) => `Runner '${id}' undrained: it takes checkpoints again and is unpaused shortly.`,
  quarantine: (id) =>
    `Runner '${id}' quarantined: creates get 423 and it stays paused after its current checkpoint.`,
  unquarantine: (id) =>
    `Runner '${id}' unquarantined: it takes checkpoints again and is unpaused shortly.`,
  retry: (id) => `Retry sent: the checkpoint of runner '${id}' is reset again.`,
  release: (id) => `Release sent: runner '${id}' is unpaused and its checkpoint ends reset_failed.`,
};

/** The notice of the action a redirect names, or null. */
export function actionNotice(query: Request['query']): string | null {
  for (const a of RUNNER_ACTIONS) {
    const id = query[DONE[a]];
    if (typeof id === 'string' && id !== '') return NOTICE[a](id);
  }
  return null;
}

/** The quarantine reason of a form post; 422 as the admin API words it. */
function formReason(body: unknown): string {
  const reason = (body as { reason?: unknown } | undefined)?.reason;
  const parsed = quarantineBody.safeParse({ reason });
  if (parsed.success) return parsed.data.reason;
  const issue = parsed.error.issues[0]!;
  throw new HttpError(
    422,
    issue.code === 'invalid_type' ? 'reason: expected a string' : issue.message,
  );
}

/** The handler of one button: the action, then back to the fleet with its notice. */
export function runnerAction(action: RunnerAction, d: OperatorDeps, log: Logger): RequestHandler {
  return async (req, res) => {
    const runnerId = String(req.params.id);
    if (action === 'drain' || action === 'undrain')
      await d.registry.drain(runnerId, action === 'drain');
    else if (action === 'quarantine') await d.registry.quarantine(runnerId, formReason(req.body));
    else if (action === 'unquarantine') await d.registry.unquarantine(runnerId);
    else await decide(d, runnerId, action, 'ui');
    log.info({ runnerId, action }, 'fleet page: runner action');
    res.redirect(303, `/ui?${DONE[action]}=${encodeURIComponent(runnerId)}`);
  };
}
