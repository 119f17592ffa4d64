/** The Temporal checks: `temporal` (reachable, namespace present), `search-attributes`, `worker`. */
import { Connection } from '@temporalio/client';
import { gitlabPollTaskQueue, gitlabTaskQueue } from '../../common/gitlab-budget';
import {
  checkSearchAttributes,
  createCommand,
  describeReport,
  withTimeout,
} from '../../worker/search-attributes';
import { bad, guarded, message, ok, plural, type Context, type DoctorCheck } from './check';

/** Pollers seen this recently are live workers (long polls last about a minute; the server remembers pollers for 5). */
const POLLER_LIVE_MS = 2 * 60_000;

/** gRPC NOT_FOUND. */
const GRPC_NOT_FOUND = 5;

/** TASK_QUEUE_TYPE_WORKFLOW and TASK_QUEUE_TYPE_ACTIVITY. */
const WORKFLOW_QUEUE = 1;
const ACTIVITY_QUEUE = 2;

/** The two checks that need the namespace, failing for `why`. */
function notChecked(why: string): DoctorCheck[] {
  return [
    bad('search-attributes', null, `not checked: ${why}`, 'fix the temporal check first'),
    bad('worker', null, `not checked: ${why}`, 'fix the temporal check first'),
  ];
}

/** [temporal, search-attributes, worker], in that order. */
export async function temporalChecks(c: Context): Promise<DoctorCheck[]> {
  const { address } = c.temporal;
  let connection: Connection;
  try {
    connection = await withTimeout(
      `Temporal at ${address}`,
      c.ms,
      Connection.connect({
        ...(c.temporal.connectionOptions as Parameters<typeof Connection.connect>[0]),
        connectTimeout: c.ms,
      }),
    );
  } catch (err) {
    return [
      bad(
        'temporal',
        null,
        `cannot reach Temporal at ${address}: ${message(err)}`,
        'start Temporal, or set TEMPORAL_ADDRESS (and TEMPORAL_TLS_* / TEMPORAL_API_KEY) to reach it',
      ),
      ...notChecked('Temporal is unreachable'),
    ];
  }
  try {
    const first = await namespaceCheck(c, connection);
    if (!first.ok) return [first, ...notChecked(`namespace ${c.temporal.namespace} is not usable`)];
    const sa = searchAttributesCheck(c, connection);
    const worker = workerCheck(c, connection);
    return [first, ...(await Promise.all([sa, worker]))];
  } finally {
    await connection.close().catch(() => undefined);
  }
}

function namespaceCheck(c: Context, connection: Connection): Promise<DoctorCheck> {
  const { address, namespace } = c.temporal;
  const fix = 'check TEMPORAL_NAMESPACE and that this client may read it';
  return guarded('temporal', null, c.ms, fix, async () => {
    try {
      await connection.withDeadline(Date.now() + c.ms, () =>
        connection.workflowService.describeNamespace({ namespace }),
      );
    } catch (err) {
      if ((err as { code?: number }).code === GRPC_NOT_FOUND) {
        return bad(
          'temporal',
          null,
          `reachable at ${address}, but namespace ${namespace} does not exist`,
          `create it (temporal operator namespace create --namespace ${namespace}) or set TEMPORAL_NAMESPACE`,
        );
      }
      throw err;
    }
    return ok('temporal', null, `reachable at ${address}, namespace ${namespace} present`);
  });
}

function searchAttributesCheck(c: Context, connection: Connection): Promise<DoctorCheck> {
  const { namespace } = c.temporal;
  return guarded('search-attributes', null, c.ms, 'run `e2epool setup`', async () => {
    const report = await checkSearchAttributes(connection, namespace, c.ms);
    if (!report.missing.length && !report.wrongType.length)
      return ok('search-attributes', null, `namespace ${namespace} has all five, as Keyword`);
    const what = [
      ...report.missing.map((n) => `${n} missing`),
      ...report.wrongType.map((w) => `${w.name} is ${w.has}, not Keyword`),
    ].join('; ');
    const fix = report.wrongType.length
      ? describeReport(namespace, report).join('; ')
      : `run \`e2epool setup\` (or \`e2epool worker\`, which registers them at start), or: ${report.missing
          .map((n) => createCommand(namespace, n, 'KEYWORD'))
          .join('; ')}`;
    return bad('search-attributes', null, `namespace ${namespace}: ${what}`, fix);
  });
}

/** Identities of the workers that polled task queue `name` within POLLER_LIVE_MS. */
async function livePollers(
  c: Context,
  connection: Connection,
  name: string,
  taskQueueType: number,
): Promise<string[]> {
  const res = await connection.withDeadline(Date.now() + c.ms, () =>
    connection.workflowService.describeTaskQueue({
      namespace: c.temporal.namespace,
      taskQueue: { name, kind: 1 }, // TASK_QUEUE_KIND_NORMAL
      taskQueueType,
    }),
  );
  const now = Date.now();
  return (res.pollers ?? [])
    .filter((p) => {
      const s = p.lastAccessTime?.seconds;
      const at = s === undefined || s === null ? 0 : Number(s) * 1000;
      return now - at < POLLER_LIVE_MS;
    })
    .map((p) => p.identity ?? '?');
}

function workerCheck(c: Context, connection: Connection): Promise<DoctorCheck> {
  const { namespace } = c.temporal;
  return guarded('worker', null, c.ms, 'start `e2epool worker`', async () => {
    const queue = c.settings.taskQueue;
    const live = await livePollers(c, connection, queue, WORKFLOW_QUEUE);
    if (!live.length) {
      return bad(
        'worker',
        null,
        `no worker polls task queue ${queue} in namespace ${namespace}`,
        `start \`e2epool worker\` with E2EPOOL_TASK_QUEUE=${queue} and the same Temporal settings`,
      );
    }
    // GitLab activities run on queues of their own (the rate budget); a
    // process polling only the main queue is not this release's worker, and
    // resets would wait on the unpolled queues.
    if (c.settings.gitlabUrl) {
      for (const q of [gitlabTaskQueue(queue), gitlabPollTaskQueue(queue)]) {
        if ((await livePollers(c, connection, q, ACTIVITY_QUEUE)).length === 0) {
          return bad(
            'worker',
            null,
            `no worker polls the GitLab task queue ${q} (workers: ${live.join(', ')})`,
            'run `e2epool worker` of this release on the task queue: it polls the GitLab queues beside the main one',
          );
        }
      }
    }
    return ok(
      'worker',
      null,
      `${plural(live.length, 'worker')} polling task queue ${queue} (${live.join(', ')})`,
    );
  });
}
