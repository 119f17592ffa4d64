import type { GitLabClient } from '../../activities/gitlab/client';
import { applicationFailureOf, describeFailure, failureTypeOf } from '../../common/fail';
import type { Logger } from '../../config/logger';

/** What GitLab last said about a runner's pause, as the fleet page shows it. */
export interface GitLabPause {
  /** null: GitLab has not answered yet (or never did). */
  paused: boolean | null;
  /** When GitLab answered (or failed to); null: not asked yet. */
  checkedAt: Date | null;
  /** Why the last question failed; the last answer, if any, is kept. */
  error: string | null;
}

export interface GitLabPauseCacheOptions {
  /** An answer is asked again once it is this old. */
  maxAgeMs: number;
  /** At most this many GitLab requests at once. */
  concurrency: number;
  log: Logger;
}

/**
 * GitLab's pause state of the fleet's runners, for the fleet page. GitLab
 * has no call that answers for a list of runner ids with the permission
 * e2epool already needs (`GET /runners?paused=` lists only the runners the
 * token's user owns, `/runners/all` needs an admin, and a `manage_runner`
 * token may call neither), so each runner is asked with `GET /runners/:id`,
 * the call the worker makes before a pause.
 *
 * Page views never wait for GitLab: they get what is known and start one
 * background pass (at most one at a time) over the answers older than
 * `maxAgeMs`, `concurrency` requests at once. So GitLab sees at most one
 * request per runner per `maxAgeMs`, however many people look and however
 * often their pages refresh, and none while nobody looks. The token is the
 * worker's, and so is its rate limit: a 429 stops the pass until its
 * Retry-After, so the page never takes the budget the pauses need.
 */
export class GitLabPauseCache {
  private readonly known = new Map<number, GitLabPause>();
  private refreshing: Promise<void> | null = null;
  private quietUntil = 0;

  constructor(
    private readonly client: Pick<GitLabClient, 'runnerPaused'>,
    private readonly o: GitLabPauseCacheOptions,
  ) {}

  /**
   * What is known about `ids` now. Asked again in the background: answers
   * older than `maxAgeMs`, and those older than the runner's entry in
   * `changedAt` (when e2epool last paused or unpaused it: its own change
   * makes the answer stale, and there are two such changes per job at most).
   */
  lookup(
    ids: readonly number[],
    changedAt: ReadonlyMap<number, Date> = new Map(),
  ): Map<number, GitLabPause> {
    const wanted = new Set(ids);
    // Runners that left the inventory are forgotten.
    for (const id of this.known.keys()) if (!wanted.has(id)) this.known.delete(id);
    const now = Date.now();
    const due = [...wanted].filter((id) => {
      const checked = this.known.get(id)?.checkedAt?.getTime();
      return (
        checked === undefined ||
        now - checked >= this.o.maxAgeMs ||
        checked < (changedAt.get(id)?.getTime() ?? -Infinity)
      );
    });
    if (due.length > 0 && !this.refreshing && now >= this.quietUntil) {
      this.refreshing = this.refresh(due).finally(() => (this.refreshing = null));
    }
    return new Map(
      [...wanted].map((id) => [
        id,
        this.known.get(id) ?? { paused: null, checkedAt: null, error: null },
      ]),
    );
  }

  /** Resolves when the pass under way (if any) is done; for tests and shutdown. */
  async settled(): Promise<void> {
    await this.refreshing;
  }

  private async refresh(due: number[]): Promise<void> {
    const queue = [...due];
    const worker = async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
        if (Date.now() < this.quietUntil) return;
        await this.ask(id);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.o.concurrency, queue.length) }, worker));
  }

  private async ask(id: number): Promise<void> {
    const before = this.known.get(id);
    try {
      const paused = await this.client.runnerPaused(id);
      this.known.set(id, { paused, checkedAt: new Date(), error: null });
    } catch (err) {
      if (failureTypeOf(err) === 'GitLabRateLimited') {
        const delay = applicationFailureOf(err)?.nextRetryDelay;
        const ms = typeof delay === 'number' ? delay : 60_000;
        this.quietUntil = Date.now() + ms;
        this.o.log.warn(
          { gitlabRunnerId: id, quietSeconds: Math.round(ms / 1000) },
          'fleet page: GitLab rate limit; not asking GitLab about pauses until its Retry-After',
        );
      }
      this.known.set(id, {
        paused: before?.paused ?? null,
        checkedAt: new Date(),
        error: describeFailure(err),
      });
    }
  }
}
