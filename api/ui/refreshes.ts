/**
 * The fleet page's baseline-refresh column (docs/operators.md, "Baseline refresh"):
 * per Proxmox runner, its running or last refresh workflow as Temporal has it
 * (status; the running one's step, from its current details), read from
 * Temporal, never from a side table of the activities. One visibility list
 * per snapshot, plus one query per running refresh.
 */
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { baselineWorkflowId, BASELINE_REFRESH_WORKFLOW } from '../../common/baseline';

/** A refresh as a fleet row shows it (JSON: ISO dates). */
export interface FleetRefresh {
  workflow_id: string;
  /** Temporal's status in lower case: `running`, `completed`, `failed`, `canceled`, `terminated`, `timed_out`. */
  status: string;
  /** The running refresh's step (its current details); null once it closed or when no worker answered. */
  step: string | null;
  started_at: string;
  closed_at: string | null;
  /** The rollout that started it; null for a refresh started on its own. */
  rollout_id: string | null;
  /** The run in the Temporal Web UI (E2EPOOL_TEMPORAL_UI_URL); null when that is not set. */
  url: string | null;
}

export interface RefreshWatchDeps {
  client: Pick<Client, 'workflow'>;
  namespace: string;
  /** The Temporal Web UI's base URL, for links; null: no links. */
  uiUrl: string | null;
  /** How long a running refresh's worker may take to answer the details query. */
  queryTimeoutMs: number;
}

/** Visibility rows read per snapshot at most (several runs per runner over time). */
const MAX_LISTED = 2000;

/** The refresh's own prefix on its details (`**Baseline refresh of `x`**: `): the row names the runner already. */
const DETAILS_PREFIX = /^\*\*Baseline refresh of `[^`]*`\*\*: /;

function statusOf(info: WorkflowExecutionInfo): string {
  return info.status.name.toLowerCase();
}

/** Reads the refresh workflows of the fleet's runners from Temporal. */
export class RefreshWatch {
  constructor(private readonly d: RefreshWatchDeps) {}

  /** Each runner's running refresh, else its newest; runners with none are absent. */
  async lookup(runnerIds: readonly string[]): Promise<Map<string, FleetRefresh>> {
    const out = new Map<string, FleetRefresh>();
    if (runnerIds.length === 0) return out;
    const byWorkflow = new Map(runnerIds.map((id) => [baselineWorkflowId(id), id]));
    // Runner ids are letters, digits, _ . - (config/runner-schema.ts): safe inside quotes.
    const ids = [...byWorkflow.keys()].map((w) => `'${w}'`).join(', ');
    const newest = new Map<string, WorkflowExecutionInfo>();
    let listed = 0;
    for await (const info of this.d.client.workflow.list({
      query: `WorkflowType = '${BASELINE_REFRESH_WORKFLOW}' AND WorkflowId IN (${ids})`,
    })) {
      const seen = newest.get(info.workflowId);
      const running = (i: WorkflowExecutionInfo) => statusOf(i) === 'running';
      if (
        !seen ||
        (running(info) && !running(seen)) ||
        (running(info) === running(seen) && info.startTime > seen.startTime)
      )
        newest.set(info.workflowId, info);
      if (++listed >= MAX_LISTED) break;
    }
    await Promise.all(
      [...newest.values()].map(async (info) => {
        const runnerId = byWorkflow.get(info.workflowId);
        if (runnerId !== undefined) out.set(runnerId, await this.row(info));
      }),
    );
    return out;
  }

  private async row(info: WorkflowExecutionInfo): Promise<FleetRefresh> {
    const status = statusOf(info);
    return {
      workflow_id: info.workflowId,
      status,
      step: status === 'running' ? await this.step(info) : null,
      started_at: info.startTime.toISOString(),
      closed_at: info.closeTime ? info.closeTime.toISOString() : null,
      rollout_id: info.parentExecution?.workflowId ?? null,
      url: this.d.uiUrl
        ? `${this.d.uiUrl.replace(/\/+$/, '')}/namespaces/${encodeURIComponent(this.d.namespace)}/workflows/${encodeURIComponent(info.workflowId)}/${encodeURIComponent(info.runId)}`
        : null,
    };
  }

  /** The running refresh's current details, as the Web UI shows them; null when no worker answers in time. */
  private async step(info: WorkflowExecutionInfo): Promise<string | null> {
    const handle = this.d.client.workflow.getHandle(info.workflowId, info.runId);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), this.d.queryTimeoutMs);
    });
    try {
      const meta = await Promise.race([
        handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata'),
        timeout,
      ]);
      const details = meta?.currentDetails;
      return details ? details.replace(DETAILS_PREFIX, '') : null;
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  }
}
