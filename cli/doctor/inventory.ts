/** The `inventory` check (the file and the runner registry) and the `agent-credential` warning. */
import { loadInventoryFile, type Inventory } from '../../config/inventory';
import { InventoryError } from '../../config/runner-schema';
import { createLogger } from '../../config/logger';
import { SecretBox } from '../../config/secret-box';
import { registrySource } from '../../store/registry-feed';
import { withTimeout } from '../../worker/search-attributes';
import { bad, message, ok, plural, type Context, type DoctorCheck } from './check';
import type { Database } from './postgres';

/** Loads the inventory file, plus the registry's runners when the database is current. */
export async function inventoryCheck(
  c: Context,
  db: Database,
): Promise<{ check: DoctorCheck; inventory: Inventory | null }> {
  const path = c.settings.inventoryPath;
  try {
    const { inventory: file } = loadInventoryFile(path);
    if (!db.ds || !db.current) {
      return {
        check: ok(
          'inventory',
          null,
          `${plural(file.size, 'runner')} in ${path} (the registry was not read: see the postgres check)`,
        ),
        inventory: file,
      };
    }
    // A registry row that cannot be used is left out (the API and the worker log it).
    const log = createLogger('silent');
    const source = registrySource(
      db.ds,
      c.settings.secretKey ? new SecretBox(c.settings.secretKey) : null,
      log,
    );
    const [entries, states] = await withTimeout(
      'reading the runner registry',
      c.ms,
      Promise.all([source.load(), source.loadStates()]),
    );
    const inventory = file.withRegistry(entries, states);
    const fromRegistry = inventory.size - file.size;
    return {
      check: ok(
        'inventory',
        null,
        `${plural(inventory.size, 'runner')}: ${file.size} in ${path}, ${fromRegistry} from the registry`,
      ),
      inventory,
    };
  } catch (err) {
    const fix =
      err instanceof InventoryError
        ? 'fix the inventory (the API and the worker refuse it too)'
        : 'check E2EPOOL_INVENTORY_PATH and the runner registry';
    return { check: bad('inventory', null, message(err), fix), inventory: null };
  }
}

/**
 * Runners whose agent opens /ws/agent with the REST token: their CI jobs hold
 * that token too and could stand in for the agent. A warning, not a failure:
 * it is how the Python agent's configs work.
 */
export function agentCredentialCheck(inventory: Inventory): DoctorCheck {
  const shared = inventory.sharedCredentialRunners();
  if (shared.length === 0)
    return ok('agent-credential', null, "every runner's agent has an agent token of its own");
  const shown = shared.slice(0, 10);
  const more = shared.length > shown.length ? ` and ${shared.length - shown.length} more` : '';
  return {
    name: 'agent-credential',
    runner: null,
    ok: true,
    detail: `${shared.length} of ${inventory.size} runners share one credential between agent and CI jobs (no agent token): ${shown.join(', ')}${more}`,
    fix: "give each an agent_token (inventory.yml, or POST /api/runners/{id}/rotate-agent-token) and put it in the agent's config",
  };
}
