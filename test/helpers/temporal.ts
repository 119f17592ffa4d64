import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { freePort } from '../../dev/ports';
import { startDevServer, type DevServer } from '../../temporal-dev/dev-server';
import { uniqueId } from './env';
import { shared } from './shared';
import { waitFor } from './wait';

/**
 * A dev server of the test's own that suggests continue-as-new after
 * `historyEvents` events instead of thousands, so a few polls are enough.
 */
export async function startContinueAsNewDevServer(historyEvents: number): Promise<DevServer> {
  return startDevServer({
    bin: shared().temporalBin,
    port: await freePort(),
    uiPort: null,
    namespace: 'default',
    dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': historyEvents },
  });
}

/**
 * A fresh namespace of the test's own on the shared dev server: it has none
 * of e2epool's search attributes (the dev server registers them only on the
 * namespaces it starts with). Resolves once the namespace answers.
 */
export async function createNamespace(label: string): Promise<string> {
  const namespace = uniqueId(label);
  const conn = await Connection.connect({ address: shared().temporalAddress });
  try {
    await conn.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: msToTs('1 day'),
    });
    await waitFor(`namespace ${namespace}`, () =>
      conn.workflowService.describeNamespace({ namespace }).then(() => true),
    );
  } finally {
    await conn.close();
  }
  return namespace;
}
