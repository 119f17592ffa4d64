import { freePort } from '../../dev/ports';
import { startDevServer, type DevServer } from '../../temporal-dev/dev-server';
import { shared } from './shared';

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
