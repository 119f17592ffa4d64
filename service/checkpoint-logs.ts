import { isActiveState } from '../common/states';
import type { Store } from '../store';
import { LOG_PAGE, type LogEntry } from '../store/checkpoint-log';
import { CheckpointNotFound, NotAuthorized } from './errors';

/** A page of a checkpoint's log (JSON form, see docs/protocol.md#checkpoint-logs). */
export interface LogPage {
  entries: LogEntry[];
  next: number;
  done: boolean;
}

/** Who reads a log: a runner (its own checkpoints only) or the admin (any checkpoint). */
export type LogReader = { runnerId: string } | 'admin';

/** Reads checkpoint logs for callers allowed to (the checkpoint's runner, or the admin). */
export class CheckpointLogs {
  constructor(private readonly store: Store) {}

  /** The checkpoint, if `reader` may read its log (CheckpointNotFound / NotAuthorized otherwise). */
  async open(reader: LogReader, name: string) {
    const ref = await this.store.checkpoints.refByName(name);
    if (!ref) throw new CheckpointNotFound();
    if (reader !== 'admin' && ref.runnerId !== reader.runnerId)
      throw new NotAuthorized('Token not authorized for this checkpoint');
    return ref;
  }

  /** Entries after `after`; `done` once the checkpoint ended and nothing more follows. */
  async page(checkpointId: number, after: number): Promise<LogPage> {
    // The state first: entries up to a terminal state commit with it, so none can follow.
    const ended = await this.ended(checkpointId);
    const entries = await this.store.logs.after(checkpointId, after);
    const next = entries.length ? entries[entries.length - 1]!.seq : after;
    return { entries, next, done: ended && entries.length < LOG_PAGE };
  }

  private async ended(checkpointId: number): Promise<boolean> {
    const state = await this.store.checkpoints.stateOf(checkpointId);
    return state === null || !isActiveState(state);
  }

  /** For a checkpoint in a runner's own view (the agent's `logs` request): by name. */
  async pageByName(tokenRunnerId: string, name: string, after: number): Promise<LogPage> {
    const ref = await this.open({ runnerId: tokenRunnerId }, name);
    return this.page(ref.id, after);
  }
}
