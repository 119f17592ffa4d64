/**
 * The Proxmox checks of one runner: `proxmox-api`, `proxmox-privileges`, `proxmox-vm`, then
 * the reset-proof checks of ./proxmox-guest.ts. Read-only calls.
 */
import type { proxmoxClientFactory } from '../../activities/proxmox/steps';
import { proxmoxBaseUrl, type ProxmoxRunner } from '../../config/runner-schema';
import { bad, guarded, message, ok, type Context, type DoctorCheck } from './check';
import { guestCheckNames, guestChecks } from './proxmox-guest';

type ProxmoxClient = ReturnType<ReturnType<typeof proxmoxClientFactory>>;

/** Privileges e2epool's Proxmox calls need on /vms/{vmid} (reference §1.5, §1.12). */
const PROXMOX_PRIVILEGES: Array<{ any: string[]; for: string }> = [
  { any: ['VM.Audit'], for: 'VM status and snapshot list' },
  { any: ['VM.Snapshot'], for: 'snapshot create/delete' },
  { any: ['VM.Snapshot.Rollback', 'VM.Snapshot'], for: 'rollback' },
  { any: ['VM.PowerMgmt'], for: 'start/stop' },
];

function tlsMode(r: ProxmoxRunner): string {
  if (proxmoxBaseUrl(r).startsWith('http:')) return 'plain HTTP, no TLS';
  if (r.proxmox_fingerprint) return 'TLS, pinned fingerprint matched';
  if (!r.proxmox_verify_tls) return 'TLS NOT verified (proxmox_verify_tls: false)';
  if (r.proxmox_ca_file) return `TLS verified with ${r.proxmox_ca_file}`;
  return 'TLS verified with the system CAs';
}

const tokenIdOf = (r: ProxmoxRunner) => `${r.proxmox_user}!${r.proxmox_token_name}`;

/** [proxmox-api, proxmox-privileges, proxmox-vm, guest checks]; only the first without an API. */
export async function proxmoxChecks(
  c: Context,
  clientFor: ReturnType<typeof proxmoxClientFactory>,
  r: ProxmoxRunner,
): Promise<DoctorCheck[]> {
  const client = clientFor(r);
  const { check: api, perms } = await apiCheck(c, client, r);
  if (!api.ok || !perms) {
    const skip = (name: string) =>
      bad(
        name,
        r.runner_id,
        'not checked: the Proxmox API did not answer',
        'fix the proxmox-api check first',
      );
    return [api, ...['proxmox-privileges', 'proxmox-vm', ...guestCheckNames(r)].map(skip)];
  }
  return [
    api,
    privilegesCheck(client, r, perms),
    await vmCheck(c, client, r),
    ...(await guestChecks(c, client, r, perms)),
  ];
}

/** Reaches the API with the token; its answer is the token's permissions. */
async function apiCheck(
  c: Context,
  client: ProxmoxClient,
  r: ProxmoxRunner,
): Promise<{ check: DoctorCheck; perms: Record<string, number> | undefined }> {
  const id = r.runner_id;
  const tokenId = tokenIdOf(r);
  let perms: Record<string, number> | undefined;
  const fix = 'check proxmox_host and that the worker reaches it (port 8006)';
  const check = await guarded('proxmox-api', id, c.ms, fix, async () => {
    try {
      perms = await client.permissions(client.aclPath);
    } catch (err) {
      const m = message(err);
      if (/TLS verification failed/.test(m))
        return bad(
          'proxmox-api',
          id,
          m.replace(/; set proxmox_ca_file.*$/, ''),
          r.proxmox_fingerprint
            ? "proxmox_fingerprint does not match the node's certificate: set it to the SHA-256 that `pvenode cert info` shows, or use proxmox_ca_file"
            : "set proxmox_ca_file to the cluster CA (pve-root-ca.pem) or proxmox_fingerprint to the node certificate's SHA-256 (`pvenode cert info`)",
        );
      if (/rejected the API token/.test(m))
        return bad(
          'proxmox-api',
          id,
          `${m} for ${tokenId}`,
          'check proxmox_user, proxmox_token_name and proxmox_token_value (`pveum user token list <user>`)',
        );
      throw err;
    }
    return ok(
      'proxmox-api',
      id,
      `${r.proxmox_host} answered (${tlsMode(r)}), token ${tokenId} accepted`,
    );
  });
  return { check, perms };
}

function privilegesCheck(
  client: ProxmoxClient,
  r: ProxmoxRunner,
  have: Record<string, number>,
): DoctorCheck {
  const tokenId = tokenIdOf(r);
  const missing = PROXMOX_PRIVILEGES.filter((p) => !p.any.some((x) => have[x] !== undefined));
  return missing.length
    ? bad(
        'proxmox-privileges',
        r.runner_id,
        `token ${tokenId} lacks ${missing.map((p) => `${p.any.join(' or ')} (${p.for})`).join(', ')} on ${client.aclPath}`,
        `grant them, e.g. pveum acl modify ${client.aclPath} -token '${tokenId}' -role PVEVMAdmin (with privilege separation the token's user needs them too)`,
      )
    : ok(
        'proxmox-privileges',
        r.runner_id,
        `token ${tokenId} has VM.Audit, VM.Snapshot, VM.PowerMgmt on ${client.aclPath}`,
      );
}

function vmCheck(c: Context, client: ProxmoxClient, r: ProxmoxRunner): Promise<DoctorCheck> {
  const id = r.runner_id;
  return guarded('proxmox-vm', id, c.ms, 'check proxmox_node and proxmox_vmid', async () => {
    try {
      const st = await client.vmStatus();
      return ok('proxmox-vm', id, `VM ${r.proxmox_vmid} on node ${r.proxmox_node} is ${st.status}`);
    } catch (err) {
      if (/VM not found/.test(message(err)))
        return bad(
          'proxmox-vm',
          id,
          `no VM ${r.proxmox_vmid} on node ${r.proxmox_node}`,
          'set proxmox_node and proxmox_vmid to where the VM is (`qm list` on the node)',
        );
      throw err;
    }
  });
}
