/** The `agent` check of every runner: whether its agent holds a live session. */
import type { RunnerConfig } from '../../config/runner-schema';
import { AgentSessionStore } from '../../store/agent-sessions';
import { withTimeout } from '../../worker/search-attributes';
import { bad, message, ok, type Context, type DoctorCheck } from './check';
import type { Database } from './postgres';

const FIX =
  'start the agent on the runner host (systemctl start e2epool-agent) and check its controller_url and token';

/** What AgentSessionStore.agentsOf knows of one runner's agent. */
type Session = { status: 'live' | 'unreachable' | 'closed'; lastSeenAt: Date };

/** The check of each runner, by runner id. */
export async function agentChecks(
  c: Context,
  db: Database,
  runners: RunnerConfig[],
): Promise<Map<string, DoctorCheck>> {
  const out = new Map<string, DoctorCheck>();
  if (!db.ds || !db.current) {
    for (const r of runners)
      out.set(
        r.runner_id,
        bad(
          'agent',
          r.runner_id,
          'not checked: see the postgres check',
          'fix the postgres check first',
        ),
      );
    return out;
  }
  try {
    const sessions = new AgentSessionStore(db.ds);
    const states = await withTimeout(
      'reading agent sessions',
      c.ms,
      sessions.agentsOf(
        runners.map((r) => r.runner_id),
        c.settings.wsHeartbeatTimeoutSeconds,
      ),
    );
    for (const r of runners) out.set(r.runner_id, sessionCheck(c, r, states.get(r.runner_id)));
  } catch (err) {
    for (const r of runners) out.set(r.runner_id, bad('agent', r.runner_id, message(err), FIX));
  }
  return out;
}

function sessionCheck(c: Context, r: RunnerConfig, s: Session | undefined): DoctorCheck {
  if (!s)
    return bad(
      'agent',
      r.runner_id,
      'agent not connected (no session on record: it never connected, or its credentials were revoked)',
      FIX,
    );
  const seen = `last heard from ${s.lastSeenAt.toISOString()}`;
  if (s.status === 'live') return ok('agent', r.runner_id, `agent connected, ${seen}`);
  if (s.status === 'unreachable')
    return bad(
      'agent',
      r.runner_id,
      `agent unreachable: silent longer than E2EPOOL_WS_HEARTBEAT_TIMEOUT (${c.settings.wsHeartbeatTimeoutSeconds} s), ${seen}`,
      'check the runner host and its network to the API',
    );
  return bad('agent', r.runner_id, `agent not connected (disconnected, ${seen})`, FIX);
}
