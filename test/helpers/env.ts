import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadTemporalSettings, type TemporalConnectSettings } from '../../config/temporal';
import { shared } from './shared';

/** A unique suffix for task queues, workflow ids and runner ids. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/**
 * How a client reaches a Temporal server, in Temporal's environment conventions
 * (what e2epool reads through envconfig): the shared one (the dev server, or
 * under `npm run test:cluster` the mTLS cluster in its own namespace), or a dev
 * server of the test's own at `address` (no TLS, namespace `default`).
 * TEMPORAL_CONFIG_FILE points nowhere so a developer's own profile never leaks in.
 */
export function temporalEnv(address?: string): Record<string, string> {
  const s = shared();
  const own = address !== undefined && address !== s.temporalAddress;
  const tls = own ? undefined : s.temporalTls;
  return {
    TEMPORAL_ADDRESS: address ?? s.temporalAddress,
    TEMPORAL_NAMESPACE: own ? 'default' : s.temporalNamespace,
    TEMPORAL_CONFIG_FILE: join(s.workDir, 'no-temporal-config.toml'),
    ...(tls
      ? {
          TEMPORAL_TLS_CLIENT_CERT_PATH: tls.clientCertPath,
          TEMPORAL_TLS_CLIENT_KEY_PATH: tls.clientKeyPath,
          TEMPORAL_TLS_SERVER_CA_CERT_PATH: tls.caPath,
          TEMPORAL_TLS_SERVER_NAME: tls.serverName,
        }
      : {}),
  };
}

/**
 * The shared Temporal as e2epool sees it (address, namespace, TLS), read from
 * temporalEnv() through envconfig: a test's own client connects the same way.
 */
export function sharedTemporal(): TemporalConnectSettings {
  return loadTemporalSettings(temporalEnv());
}

/** `temporal` CLI flags for the shared Temporal: address, namespace and, on the cluster, mTLS. */
export function temporalCliArgs(): string[] {
  const s = shared();
  const tls = s.temporalTls;
  return [
    '--address', s.temporalAddress, '--namespace', s.temporalNamespace,
    ...(tls
      ? ['--tls-cert-path', tls.clientCertPath, '--tls-key-path', tls.clientKeyPath,
         '--tls-ca-path', tls.caPath, '--tls-server-name', tls.serverName]
      : []),
  ]; // prettier-ignore
}

/** Environment for an e2epool process talking to the shared test Temporal (see temporalEnv). */
export function controllerEnv(extra: Record<string, string>): Record<string, string> {
  return { ...temporalEnv(), ...extra };
}

/** Writes an inventory file in the shared work directory and returns its path. */
export function writeInventory(yaml: string): string {
  const path = join(shared().workDir, `${uniqueId('inventory')}.yml`);
  writeFileSync(path, yaml, { mode: 0o600 });
  return path;
}

/**
 * A runner of one test: its id is fresh (see `uniqueId`), so its Temporal
 * workflow id (`e2epool-runner-<id>`) is too. Tests share one Temporal server;
 * a runner id used by two tests lets one of them see the other's run.
 */
export interface TestRunner {
  id: string;
  token: string;
}

/** A fresh runner (id and token) for `label`, e.g. `testRunner('cancel')` → `cancel-1a2b3c4d`. */
export function testRunner(label: string): TestRunner {
  const id = uniqueId(label);
  return { id, token: `tok-${id}-${randomBytes(4).toString('hex')}` };
}

/** Fresh runners for several tests at once, by label: `const r = testRunners(['cancel', 'retry'])`. */
export function testRunners<K extends string>(labels: readonly K[]): Record<K, TestRunner> {
  return Object.fromEntries(labels.map((l) => [l, testRunner(l)])) as Record<K, TestRunner>;
}

/** One bare-metal inventory entry (indented for a `runners:` list). */
export function bareMetalRunnerYaml(
  r: TestRunner,
  extra: Record<string, string | number | boolean> = {},
): string {
  const lines = [
    `  - runner_id: ${r.id}`,
    '    backend: bare_metal',
    `    token: ${r.token}`,
    ...Object.entries({ reset_cmd: '"true"', ...extra }).map(([k, v]) => `    ${k}: ${v}`),
  ];
  return `${lines.join('\n')}\n`;
}

/** An inventory of one bare-metal runner with a fresh id. */
export function bareMetalInventory(r: TestRunner = testRunner('metal')): string {
  return `runners:\n${bareMetalRunnerYaml(r)}`;
}

/** The `POST /api/runners` body of a registry Proxmox runner served by a stand-in (node pve1). */
export function proxmoxRunnerBody(
  pve: { url: string; tokenId: string; tokenSecret: string },
  runnerId: string,
  vmid: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const [user, tokenName] = pve.tokenId.split('!');
  return {
    runner_id: runnerId,
    backend: 'proxmox',
    proxmox_host: pve.url,
    proxmox_user: user,
    proxmox_token_name: tokenName,
    proxmox_token_value: pve.tokenSecret,
    proxmox_node: 'pve1',
    proxmox_vmid: vmid,
    ...extra,
  };
}

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
