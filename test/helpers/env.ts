import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { shared } from './shared';

/** A unique suffix for task queues, workflow ids and runner ids. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/**
 * Environment for an e2epool process talking to the shared test Temporal.
 * TEMPORAL_CONFIG_FILE points nowhere so a developer's own profile never leaks in.
 */
export function controllerEnv(extra: Record<string, string>): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: shared().temporalAddress,
    TEMPORAL_NAMESPACE: 'default',
    TEMPORAL_CONFIG_FILE: join(shared().workDir, 'no-temporal-config.toml'),
    ...extra,
  };
}

/** Writes an inventory file in the shared work directory and returns its path. */
export function writeInventory(yaml: string): string {
  const path = join(shared().workDir, `${uniqueId('inventory')}.yml`);
  writeFileSync(path, yaml, { mode: 0o600 });
  return path;
}

export const BARE_METAL_INVENTORY = `runners:
  - runner_id: metal-1
    backend: bare_metal
    token: test-token-metal-1
    reset_cmd: "true"
`;
