import { fail } from '../common/fail';
import type { RunnerConfig } from '../config/runner-schema';
import { createStore } from '../store';
import { activityBounds, cancelled, heartbeat, heartbeating } from './context';
import { inventoryRunner, type ActivityDeps } from './deps';
import { activityKey, withOperation, type StepInput, type StepMeta } from './operation-log';
import { proxmoxClientFactory } from './proxmox/steps';

const TAIL = 2000;

/**
 * What makes an agent connection one from after the reboot: not the session
 * stopVm saw (one clock: none), or, for inputs from before that, a connection
 * time after the workflow's boot instant (two clocks; kept for running checkpoints).
 */
/** After a reboot: the agent session from before it (null: there was none) does not count. */
type Reconnect = { staleSession: string | null };

/** The readiness detail of a runner whose agent went silent past the heartbeat timeout. */
export const AGENT_UNREACHABLE = 'agent unreachable';

/** The end of a command's output, as far as logs and details keep it. */
export function tail(s: string): string {
  const t = s.trimEnd();
  return t.length > TAIL ? `…${t.slice(-TAIL)}` : t;
}

/** What the runner-host steps need. */
function runnerSteps(deps: ActivityDeps) {
  const { operations, sessions } = createStore(deps.dataSource);
  return {
    deps,
    sessions,
    log: { operations, metrics: deps.metrics },
    proxmoxClient: proxmoxClientFactory(deps),
  };
}

type RunnerSteps = ReturnType<typeof runnerSteps>;

/** The log row of a runner-host step, by the runner's backend. */
function stepMeta(i: StepInput, r: RunnerConfig, operation: string): StepMeta {
  return {
    checkpointId: i.checkpointId,
    runnerId: i.runnerId,
    backend: r.backend,
    operation,
    key: activityKey(operation, `${i.checkpointName}:${operation}:${i.round}`),
  };
}

/** Runs the runner's `reset_cmd` or `cleanup_cmd` on its agent; no command configured is a no-op. */
async function runRunnerCommand(
  c: RunnerSteps,
  i: StepInput & { which: 'reset_cmd' | 'cleanup_cmd' },
): Promise<void> {
  const { deps } = c;
  const r = inventoryRunner(deps, i.runnerId);
  const cmd = r[i.which];
  await withOperation(c.log, stepMeta(i, r, i.which), async () => {
    if (!cmd)
      return { value: undefined, detail: `no ${i.which} configured`, result: 'skipped' as const };
    const res = await heartbeating(
      // Withdrawn when the activity is cancelled or times out: it never runs later.
      deps.agents.exec(i.runnerId, cmd, deps.settings.commandTimeoutSeconds, {
        commandId: activityKey(`exec:${i.which}`, `${i.checkpointName}:${i.which}:${i.round}`),
        checkpointId: i.checkpointId,
        ...activityBounds(),
      }),
    );
    const output = `stdout: ${tail(res.stdout)}; stderr: ${tail(res.stderr)}`;
    if (res.exitCode !== 0)
      throw fail('CommandFailed', `${i.which} exited with ${res.exitCode}; ${output}`);
    return { value: undefined, detail: `exit 0; ${output}` };
  });
}

/** Polls notReadyReason until it says ready (the detail) or the readiness timeout passes. */
async function pollUntilReady(
  c: RunnerSteps,
  r: RunnerConfig,
  since: Reconnect | undefined,
): Promise<string> {
  const { settings } = c.deps;
  const deadline = Date.now() + settings.readinessTimeoutSeconds * 1000;
  let why = 'not checked yet';
  // Heartbeat on a timer too: the poll interval may exceed the heartbeat timeout.
  const beat = setInterval(() => heartbeat(why), 3000);
  try {
    for (;;) {
      heartbeat(why);
      if (cancelled()) throw fail('Cancelled', 'readiness wait cancelled');
      why = await notReadyReason(c, r, since);
      if (!why) return r.readiness_cmd ? `readiness_cmd succeeded` : 'agent connected';
      if (Date.now() >= deadline) {
        throw fail(
          'NotReady',
          `runner '${r.runner_id}' not ready after ${settings.readinessTimeoutSeconds}s: ${why}`,
        );
      }
      await new Promise((res) => setTimeout(res, settings.readinessPollIntervalSeconds * 1000));
    }
  } finally {
    clearInterval(beat);
  }
}

/**
 * The readiness gate before unpausing. Proxmox: the VM runs and its agent
 * reconnected after the reboot (a live session other than `staleSession`,
 * the one stopVm saw; one clock: agent_sessions'); then `readiness_cmd` if
 * set. Bare metal (no `staleSession`): `readiness_cmd` if set, else an
 * agent is connected. Polls every READINESS_POLL_INTERVAL_SECONDS for up to
 * READINESS_TIMEOUT_SECONDS.
 */
async function waitUntilReady(
  c: RunnerSteps,
  i: StepInput & {
    /** The agent session from before the VM stopped (null: there was none); it does not count. */
    staleSession?: string | null;
  },
): Promise<void> {
  const r = inventoryRunner(c.deps, i.runnerId);
  const since: Reconnect | undefined =
    i.staleSession !== undefined ? { staleSession: i.staleSession } : undefined;
  await withOperation(c.log, stepMeta(i, r, 'readiness'), async () => ({
    value: undefined,
    detail: await pollUntilReady(c, r, since),
  }));
}

/** Whether the agent is connected; with `since`, only a session other than the stale one counts. */
async function connected(
  c: RunnerSteps,
  runnerId: string,
  since: Reconnect | undefined,
): Promise<boolean> {
  if (since === undefined) return c.deps.agents.isConnected(runnerId);
  const s = await c.deps.agents.session(runnerId);
  return s !== null && s.live && s.sessionId !== since.staleSession;
}

/** Why `readiness_cmd` says the runner is not ready, or '' when it exits 0. */
async function readinessCmdReason(c: RunnerSteps, r: RunnerConfig, cmd: string): Promise<string> {
  const { deps } = c;
  try {
    const res = await heartbeating(
      deps.agents.exec(
        r.runner_id,
        cmd,
        Math.max(5, deps.settings.readinessPollIntervalSeconds * 2),
        activityBounds(),
      ),
    );
    if (res.exitCode !== 0)
      return `readiness_cmd exited with ${res.exitCode}: ${tail(res.stderr || res.stdout).slice(-200)}`;
  } catch (err) {
    return `readiness_cmd could not run: ${(err as Error).message}`;
  }
  return '';
}

/** Why the runner is not ready yet, or '' when it is. */
async function notReadyReason(
  c: RunnerSteps,
  r: RunnerConfig,
  since: Reconnect | undefined,
): Promise<string> {
  if (r.backend === 'proxmox') {
    const st = await c.proxmoxClient(r).vmStatus();
    if (st.status !== 'running') return `VM is ${st.status}`;
  }
  if (!(await connected(c, r.runner_id, since))) {
    if (since) return 'agent has not reconnected since the reboot';
    // Its session went silent (no pong, no frame) past the heartbeat timeout.
    if (await c.sessions.isUnreachable(r.runner_id, c.deps.settings.wsHeartbeatTimeoutSeconds))
      return AGENT_UNREACHABLE;
    return 'agent not connected';
  }
  return r.readiness_cmd ? readinessCmdReason(c, r, r.readiness_cmd) : '';
}

/**
 * The Proxmox readiness gate after a reboot outside a checkpoint (a baseline
 * refresh's): as a reset's (waitUntilReady), the VM runs and its e2epool
 * agent reconnected, a session other than `staleSession` (read once the VM
 * was down; null: any live session), then `readiness_cmd` if set. Returns
 * the detail; NotReady past READINESS_TIMEOUT_SECONDS.
 */
export function readyAfterReboot(
  deps: ActivityDeps,
  runnerId: string,
  staleSession: string | null,
): Promise<string> {
  return pollUntilReady(runnerSteps(deps), inventoryRunner(deps, runnerId), { staleSession });
}

/** Runner-host work through the agent: reset/cleanup commands and the readiness gate. */
export function runnerActivities(deps: ActivityDeps) {
  const c = runnerSteps(deps);
  return {
    runRunnerCommand: (i: StepInput & { which: 'reset_cmd' | 'cleanup_cmd' }) =>
      runRunnerCommand(c, i),
    waitUntilReady: (i: StepInput & { staleSession?: string | null }) => waitUntilReady(c, i),

    /** One readiness check, for `GET /runner/readiness`: ready, or why not. */
    async checkReadiness(i: {
      runnerId: string;
    }): Promise<{ ready: boolean; detail: string | null }> {
      const r = inventoryRunner(deps, i.runnerId);
      const why = await notReadyReason(c, r, undefined).catch(
        (err: unknown) => (err as Error).message,
      );
      return why ? { ready: false, detail: why } : { ready: true, detail: null };
    },
  };
}
