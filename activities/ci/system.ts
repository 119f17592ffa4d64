import { fail } from '../../common/fail';
import type { FinalizeStatus } from '../../common/states';

/** A job's state as a checkpoint reads it: how it ended, or still `running`. */
export type JobState = FinalizeStatus | 'running';

/**
 * The CI system a runner belongs to, as e2epool needs it: when a job ended
 * (the poller), and a hold on the runner (RunnerHold) that keeps the next
 * job off it during a reset. GitLabClient and GitHubClient implement it.
 */
export interface CiSystem {
  /** How messages name it. */
  readonly name: 'GitLab' | 'GitHub';
  /** The job's state; `project` is GitLab's project id, or GitHub's `owner/name`. */
  jobState(project: string, jobId: string): Promise<JobState>;
}

/**
 * The hold on one runner through its CI system. GitLab pauses the runner;
 * GitHub, which has no pause, removes the custom labels its e2e jobs select
 * it by. `State` is what reading the runner tells (paused; its labels),
 * `Part` what a hold takes and a release puts back (the pause; labels).
 */
export interface RunnerHold<State, Part> {
  /** How details and logs name the runner: `GitLab runner 5`, `GitHub runner 7 of acme/app`. */
  readonly what: string;
  /** Why a failed check means nothing was held (the PauseCheckFailed message, before the cause). */
  readonly uncheckable: string;
  /** The runner now; failures as the client classified them. */
  read(): Promise<State>;
  /** Takes `part` off the runner's job supply; returns what it took. */
  hold(part: Part): Promise<Part>;
  /** Puts `part` back. */
  release(part: Part): Promise<void>;
  /** What of `part` is still held, by `state` read after a release; null: none of it. */
  heldIn(state: State, part: Part): Part | null;
}

/**
 * The runner now, read before deciding to hold it: a failure to ask is
 * PauseCheckFailed, which says that nothing was held (so nothing may be
 * released for it).
 */
export async function checkHold<S, P>(h: RunnerHold<S, P>): Promise<S> {
  try {
    return await h.read();
  } catch (err) {
    throw fail('PauseCheckFailed', `${h.uncheckable}: ${(err as Error).message}`);
  }
}
