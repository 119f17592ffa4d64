import { controllerEnv, uniqueId, writeInventory } from '../helpers/env';
import { runCli } from '../helpers/processes';
import { CLI_EXIT } from '../../common/failures';

function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe('startup errors of the real processes', () => {
  it.each([
    [
      'api',
      { E2EPOOL_PORT: 'abc' },
      /^e2epool api: invalid setting E2EPOOL_PORT: expected an integer/,
    ],
    [
      'worker',
      { E2EPOOL_CHECKPOINT_TTL_SECONDS: '-5' },
      /^e2epool worker: invalid setting E2EPOOL_CHECKPOINT_TTL_SECONDS: must be a positive/,
    ],
    [
      'api',
      { E2EPOOL_DATABASE_URL: 'mysql://u:pw-secret@h/db' },
      /^e2epool api: invalid setting E2EPOOL_DATABASE_URL/,
    ],
    [
      'api',
      { E2EPOOL_ADMIN_TOKEN: 'CHANGE-ME' },
      /^e2epool api: invalid setting E2EPOOL_ADMIN_TOKEN: is the example placeholder/,
    ],
    [
      'api',
      { E2EPOOL_ADMIN_TOKEN: 'pw-secret-but-short' },
      /^e2epool api: invalid setting E2EPOOL_ADMIN_TOKEN: must be at least 32 characters/,
    ],
    [
      'worker',
      { TEMPORAL_ADDRESS: 'not a host' },
      /^e2epool worker: invalid setting TEMPORAL_ADDRESS/,
    ],
  ])(
    '%s exits 78 (EX_CONFIG) with one line naming the bad variable (%j)',
    async (cmd, bad, pattern) => {
      const res = await runCli(
        [cmd],
        controllerEnv({ E2EPOOL_INVENTORY_PATH: writeInventory('runners: []\n'), ...bad }),
      );
      expect(res.code).toBe(CLI_EXIT.config);
      const line = oneLine(res.stderr);
      expect(line).toMatch(pattern);
      expect(line).not.toContain('pw-secret');
      expect(res.stdout).toBe('');
    },
  );

  it.each(['api', 'worker'])(
    '%s exits 78 with one line naming the runner and field of an invalid inventory',
    async (cmd) => {
      const runnerId = uniqueId('vm');
      const path = writeInventory(
        `runners:\n  - runner_id: ${runnerId}\n    backend: proxmox\n    token: t9\n    proxmox_host: pve\n`,
      );
      const res = await runCli([cmd], controllerEnv({ E2EPOOL_INVENTORY_PATH: path }));
      expect(res.code).toBe(CLI_EXIT.config);
      expect(oneLine(res.stderr)).toBe(
        `e2epool ${cmd}: ${path}: runner '${runnerId}': proxmox_user: required for backend proxmox`,
      );
    },
  );

  it('exits 78 naming a missing inventory file', async () => {
    const res = await runCli(
      ['api'],
      controllerEnv({ E2EPOOL_INVENTORY_PATH: '/nonexistent/inventory.yml' }),
    );
    expect(res.code).toBe(CLI_EXIT.config);
    expect(oneLine(res.stderr)).toBe(
      'e2epool api: inventory /nonexistent/inventory.yml: file not found',
    );
  });

  it('a one-shot command (migrate) exits 78 for a bad setting too: one exit code per kind of failure', async () => {
    const res = await runCli(
      ['migrate'],
      controllerEnv({
        E2EPOOL_INVENTORY_PATH: writeInventory('runners: []\n'),
        E2EPOOL_PORT: 'abc',
      }),
    );
    expect(res.code).toBe(CLI_EXIT.config);
    expect(oneLine(res.stderr)).toMatch(/^e2epool migrate: invalid setting E2EPOOL_PORT/);
  });
});
