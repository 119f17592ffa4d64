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

/** One inventory entry for a Proxmox runner served by a stand-in (indented for a `runners:` list). */
export function proxmoxRunnerYaml(
  pve: { url: string; tokenId: string; tokenSecret: string },
  r: {
    runnerId: string;
    token: string;
    vmid: number;
    node?: string;
    extra?: Record<string, string | number>;
  },
): string {
  const [user, tokenName] = pve.tokenId.split('!');
  const lines = [
    `  - runner_id: ${r.runnerId}`,
    '    backend: proxmox',
    `    token: ${r.token}`,
    `    proxmox_host: ${pve.url}`,
    `    proxmox_user: ${user}`,
    `    proxmox_token_name: ${tokenName}`,
    `    proxmox_token_value: ${pve.tokenSecret}`,
    `    proxmox_node: ${r.node ?? 'pve1'}`,
    `    proxmox_vmid: ${r.vmid}`,
    ...Object.entries(r.extra ?? {}).map(([k, v]) => `    ${k}: ${v}`),
  ];
  return `${lines.join('\n')}\n`;
}
