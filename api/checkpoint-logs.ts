import { Router, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import type { InventoryStore } from '../config/inventory';
import type { Logger } from '../config/logger';
import { AgentNoticeListener } from '../store/agent-notices';
import { LOG_PAGE } from '../store/checkpoint-log';
import type { CheckpointLogs, LogReader } from '../service/checkpoint-logs';
import { runnerOrAdminAuth, type AdminToken } from './auth';
import { HttpError } from './errors';
import { parseInput, statusParams } from '../service/schemas';

/** Without a notice (one can be missed), a follower looks again this often. */
const FOLLOW_POLL_MS = 2000;
/** An idle stream sends a comment this often, so proxies and clients keep it open. */
const KEEPALIVE_MS = 15_000;
/** Caps on live log streams (SSE) open at once on one instance. */
export interface StreamLimits {
  /** For one runner's checkpoints. */
  perRunner: number;
  /** In all. */
  total: number;
  /**
   * A client that reads nothing of a full socket buffer for this long is
   * dropped (it resumes from its last event id): it must not hold a stream
   * slot and a page of the log forever.
   */
  stalledMs: number;
}

const afterQuery = z.object({
  after: z.coerce
    .number({ error: 'after must be an integer ≥ 0' })
    .int('after must be an integer ≥ 0')
    .min(0, 'after must be an integer ≥ 0')
    // seq is a Postgres integer: a larger number must be a 422, not a database error.
    .max(2_147_483_647, 'after must be at most 2147483647')
    .optional(),
});

/**
 * Wakes the followers of checkpoint logs on this instance when entries are
 * appended, by any process (LISTEN on its own connection). Followers poll
 * as well, so a missed notice only delays them.
 */
export class LogFeed {
  private readonly followers = new Map<number, Set<() => void>>();
  private readonly listener: AgentNoticeListener;
  /** Open streams per runner (of the checkpoint, whoever reads it). */
  private readonly streams = new Map<string, number>();
  private openStreams = 0;

  constructor(
    databaseUrl: string,
    log: Logger,
    private readonly limits: StreamLimits = { perRunner: 8, total: 500, stalledMs: 60_000 },
  ) {
    this.listener = new AgentNoticeListener({
      databaseUrl,
      channel: 'logs',
      applicationName: 'e2epool-log-feed',
      onNotice: (id) => this.followers.get(Number(id))?.forEach((wake) => wake()),
      log,
      name: 'log feed',
      fallback: `polling every ${FOLLOW_POLL_MS} ms`,
    });
  }

  /** Calls `wake` when checkpoint `id` has new entries; returns the unsubscribe. */
  follow(id: number, wake: () => void): () => void {
    void this.listener.ensure();
    let set = this.followers.get(id);
    if (!set) this.followers.set(id, (set = new Set()));
    set.add(wake);
    return () => {
      set.delete(wake);
      if (set.size === 0) this.followers.delete(id);
    };
  }

  /**
   * Takes a stream slot for a log of `runnerId`'s checkpoint, or throws 429
   * when the runner's or the instance's streams are all taken. Returns the
   * release (safe to call more than once).
   */
  openStream(runnerId: string): () => void {
    const mine = this.streams.get(runnerId) ?? 0;
    if (this.openStreams >= this.limits.total)
      throw new HttpError(
        429,
        `Too many live log streams on this server (at most ${this.limits.total}); try again later`,
      );
    if (mine >= this.limits.perRunner)
      throw new HttpError(
        429,
        `Too many live log streams for runner ${runnerId} (at most ${this.limits.perRunner}); close one or try again later`,
      );
    this.streams.set(runnerId, mine + 1);
    this.openStreams++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.openStreams--;
      const n = (this.streams.get(runnerId) ?? 1) - 1;
      if (n > 0) this.streams.set(runnerId, n);
      else this.streams.delete(runnerId);
    };
  }

  /** How long a stream waits for a client that reads nothing. */
  get stalledMs(): number {
    return this.limits.stalledMs;
  }

  close(): Promise<void> {
    return this.listener.close();
  }
}

/** The reader an auth middleware left in `res.locals` (runnerOrAdminAuth, or a fleet-page session). */
export function logReaderOf(res: Response): LogReader {
  return res.locals.admin === true ? 'admin' : { runnerId: res.locals.runnerId as string };
}

/** `Last-Event-ID` (an EventSource reconnecting) wins over `?after=`. */
function resumeAfter(req: Request): number {
  const { after } = parseInput(afterQuery, req.query, 'query');
  const last = req.get('last-event-id');
  if (last !== undefined && /^\d{1,9}$/.test(last.trim())) return Number(last.trim()); // < 2^31
  return after ?? 0;
}

/**
 * Answers a log request for the reader an auth middleware admitted:
 * Server-Sent Events when asked for (`Accept: text/event-stream`),
 * replaying after `Last-Event-ID` and following live until the checkpoint
 * ends; JSON pages otherwise. Shared by the REST route and the fleet page.
 */
export function checkpointLogHandler(
  logs: CheckpointLogs,
  feed: LogFeed,
  log: Logger,
): RequestHandler {
  return async (req, res) => {
    const { name } = parseInput(statusParams, req.params, 'path');
    const after = resumeAfter(req);
    const ref = await logs.open(logReaderOf(res), name);
    if (!(req.get('accept') ?? '').includes('text/event-stream')) {
      res.status(200).json(await logs.page(ref.id, after));
      return;
    }
    const release = feed.openStream(ref.runnerId);
    try {
      await stream(req, res, logs, feed, ref.id, after, log);
    } finally {
      release();
    }
  };
}

/** `GET /checkpoint/{name}/logs` (see docs/protocol.md#checkpoint-logs), for the checkpoint's runner or the admin. */
export function checkpointLogRouter(
  logs: CheckpointLogs,
  feed: LogFeed,
  inventory: InventoryStore,
  admin: AdminToken,
  log: Logger,
): Router {
  const router = Router();
  router.get(
    '/checkpoint/:name/logs',
    runnerOrAdminAuth(inventory, admin),
    checkpointLogHandler(logs, feed, log),
  );
  return router;
}

async function stream(
  req: Request,
  res: Response,
  logs: CheckpointLogs,
  feed: LogFeed,
  checkpointId: number,
  after: number,
  log: Logger,
): Promise<void> {
  res.status(200).set({
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache, no-transform',
    Connection: 'keep-alive',
    // Proxies such as nginx would otherwise hold events back.
    'X-Accel-Buffering': 'no',
  });
  res.flushHeaders();
  let closed = false;
  let wake: () => void = () => undefined;
  const woken = () => new Promise<void>((r) => (wake = r));
  const unfollow = feed.follow(checkpointId, () => wake());
  req.on('close', () => {
    closed = true;
    wake();
  });
  /**
   * Writes one event and, when the socket's buffer is full, waits until the
   * client has read it (or is gone): a slow reader holds at most about one
   * buffer here, not the whole log. False when the stream is over.
   */
  const write = async (chunk: string): Promise<boolean> => {
    if (closed) return false;
    if (res.write(chunk)) return true;
    const drained = await new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        res.off('drain', onDrain);
        res.off('close', onClose);
        resolve(ok);
      };
      const onDrain = () => done(true);
      const onClose = () => done(false);
      const timer = setTimeout(() => done(false), feed.stalledMs);
      res.on('drain', onDrain);
      res.on('close', onClose);
    });
    if (!drained && !closed) {
      log.warn({ checkpointId }, 'checkpoint log stream dropped: the client stopped reading');
      closed = true;
      res.destroy();
    }
    return drained && !closed;
  };
  let last = after;
  let lastWrite = Date.now();
  try {
    while (!closed) {
      const page = await logs.page(checkpointId, last);
      for (const e of page.entries) {
        if (!(await write(`id: ${e.seq}\nevent: ${e.kind}\ndata: ${JSON.stringify(e)}\n\n`)))
          return;
        last = e.seq;
      }
      if (page.entries.length) lastWrite = Date.now();
      if (page.done) {
        await write(`event: end\ndata: ${JSON.stringify({ next: last })}\n\n`);
        break;
      }
      if (page.entries.length === LOG_PAGE) continue; // more to replay at once
      if (Date.now() - lastWrite >= KEEPALIVE_MS) {
        if (!(await write(': keep-alive\n\n'))) return;
        lastWrite = Date.now();
      }
      const next = woken();
      const timer = setTimeout(() => wake(), FOLLOW_POLL_MS);
      await next;
      clearTimeout(timer);
    }
  } catch (err) {
    // Headers are sent: the stream just ends; the client resumes from its last id.
    log.warn({ checkpointId, err: (err as Error).message }, 'checkpoint log stream failed');
  } finally {
    unfollow();
    res.end();
  }
}
