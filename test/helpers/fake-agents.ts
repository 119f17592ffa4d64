import type { AgentGateway, AgentSessionInfo, ExecResult } from '../../activities/agent-gateway';
import { fail } from '../../common/fail';

/**
 * Test double of the agent gateway (the real one is the WebSocket gateway):
 * scripted connectivity and command results, and a log of every command.
 */
export class FakeAgents implements AgentGateway {
  private readonly connectedAt = new Map<string, Date>();
  /** Session ids: a new one for every connect (or, under `connectedWhen`, every reconnect seen). */
  private readonly sessionIds = new Map<string, string>();
  private sessionCount = 0;
  readonly commands: Array<{ runnerId: string; cmd: string; at: Date }> = [];
  /** Decides each command's result; default: exit 0 with a little output. */
  onExec: (runnerId: string, cmd: string) => ExecResult | Promise<ExecResult> = (_r, cmd) => ({
    exitCode: 0,
    stdout: `ran ${cmd}\n`,
    stderr: '',
  });

  connect(runnerId: string, at = new Date()): void {
    this.connectedAt.set(runnerId, at);
    this.sessionIds.set(runnerId, `session-${++this.sessionCount}`);
  }

  disconnect(runnerId: string): void {
    this.connectedAt.delete(runnerId);
    this.sessionIds.delete(runnerId);
  }

  async exec(runnerId: string, cmd: string): Promise<ExecResult> {
    if (!this.connectedAt.has(runnerId))
      throw fail('AgentNotConnected', `no agent connected for runner '${runnerId}'`);
    this.commands.push({ runnerId, cmd, at: new Date() });
    return this.onExec(runnerId, cmd);
  }

  /** Overrides connectivity, e.g. "the agent is back once the VM runs again". */
  connectedWhen: ((runnerId: string, since?: Date) => boolean | undefined) | undefined;

  async isConnected(runnerId: string, since?: Date): Promise<boolean> {
    const override = this.connectedWhen?.(runnerId, since);
    if (override !== undefined) return override;
    const at = this.connectedAt.get(runnerId);
    return at !== undefined && (!since || at >= since);
  }

  /** Under `connectedWhen`, a look that finds the agent gone ends its session; the next live look gets a new one. */
  async session(runnerId: string): Promise<AgentSessionInfo | null> {
    const override = this.connectedWhen?.(runnerId);
    if (override === false) this.sessionIds.delete(runnerId);
    else if (override === true && !this.sessionIds.has(runnerId))
      this.sessionIds.set(runnerId, `session-${++this.sessionCount}`);
    if (override === undefined && !this.connectedAt.has(runnerId)) return null;
    const sessionId = this.sessionIds.get(runnerId);
    return sessionId ? { sessionId, live: true } : null;
  }

  commandsFor(runnerId: string): string[] {
    return this.commands.filter((c) => c.runnerId === runnerId).map((c) => c.cmd);
  }
}
