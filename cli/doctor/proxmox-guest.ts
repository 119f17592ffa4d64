/**
 * The reset-proof checks of one Proxmox runner: `proxmox-guest-agent` (the QEMU guest agent
 * answers and offers the file commands), `proxmox-guest-files` (the token may read and write
 * guest files) and, with a baseline, `proxmox-baseline` (the current baseline exists: a
 * refresh's, else `baseline_snapshot`; the caller passes it as `baseline_snapshot`).
 * Read-only calls only (GET): doctor never writes to a guest.
 *
 * How bad a finding is follows `verify_reset`: with `required` a reset that cannot be proven
 * fails, so these checks fail; with `canary` the reset is only reported unverified, so they
 * warn (an ok line with a fix); with `off` the first two are not checked.
 */
import type { ProxmoxClient } from '../../activities/proxmox/client';
import { failureTypeOf } from '../../common/fail';
import { verifyModeOf, type ProxmoxRunner, type VerifyMode } from '../../config/runner-schema';
import { bad, guarded, message, ok, type Context, type DoctorCheck } from './check';

/** The qemu-ga commands the canary's file-write and file-read run. */
const FILE_COMMANDS = [
  'guest-file-open',
  'guest-file-read',
  'guest-file-write',
  'guest-file-close',
];

/** A failure under `required`; under `canary` a warning saying what it costs. */
function finding(
  mode: VerifyMode,
  name: string,
  runner: string,
  detail: string,
  fix: string,
): DoctorCheck {
  if (mode === 'required') return bad(name, runner, detail, fix);
  return { ...ok(name, runner, detail), fix: `${fix}; until then resets are reported unverified` };
}

const skipped = (name: string, runner: string): DoctorCheck =>
  ok(name, runner, 'not checked: verify_reset is off (resets are not proven)');

/** [proxmox-guest-agent, proxmox-guest-files, proxmox-baseline (with baseline_snapshot)]. */
export async function guestChecks(
  c: Context,
  client: ProxmoxClient,
  r: ProxmoxRunner,
  perms: Record<string, number>,
): Promise<DoctorCheck[]> {
  const mode = verifyModeOf(r);
  const out =
    mode === 'off'
      ? [skipped('proxmox-guest-agent', r.runner_id), skipped('proxmox-guest-files', r.runner_id)]
      : [await agentCheck(c, client, r, mode), filesCheck(client, r, mode, perms)];
  if (r.baseline_snapshot !== undefined) out.push(await baselineCheck(c, client, r));
  return out;
}

/** The check names guestChecks reports for `r` (for the lines of a runner whose API is down). */
export function guestCheckNames(r: ProxmoxRunner): string[] {
  const names = ['proxmox-guest-agent', 'proxmox-guest-files'];
  return r.baseline_snapshot !== undefined ? [...names, 'proxmox-baseline'] : names;
}

function agentCheck(
  c: Context,
  client: ProxmoxClient,
  r: ProxmoxRunner,
  mode: VerifyMode,
): Promise<DoctorCheck> {
  const [name, id, vmid] = ['proxmox-guest-agent', r.runner_id, r.proxmox_vmid];
  const fix = `grant the token VM.Monitor (Proxmox VE 8) or VM.GuestAgent.Audit (Proxmox VE 9) on ${client.aclPath}`;
  return guarded(name, id, c.ms, fix, async () => {
    if (!(await client.vmAgentEnabled())) {
      return finding(
        mode,
        name,
        id,
        `VM ${vmid} has the QEMU guest agent option off (agent unset or 0)`,
        `qm set ${vmid} --agent enabled=1, install qemu-guest-agent in the guest, then stop and start the VM`,
      );
    }
    let info: Awaited<ReturnType<ProxmoxClient['guestInfo']>>;
    try {
      info = await client.guestInfo();
    } catch (err) {
      if (failureTypeOf(err) !== 'GuestAgentUnavailable') throw err;
      return finding(
        mode,
        name,
        id,
        `the guest agent of VM ${vmid} does not answer (${message(err).replace(/^.*\((.*)\)$/, '$1')})`,
        'install and start qemu-guest-agent in the guest (systemctl enable --now qemu-guest-agent); the VM must be running',
      );
    }
    const off = FILE_COMMANDS.filter((k) => info.commands[k] === false);
    if (off.length) {
      return finding(
        mode,
        name,
        id,
        `qemu-ga ${info.version} in VM ${vmid} has ${off.join(', ')} disabled`,
        "allow them in the guest's qemu-ga (its --block-rpcs / BLACKLIST_RPC setting)",
      );
    }
    const answered = `the QEMU guest agent of VM ${vmid} answers (qemu-ga ${info.version}; verify_reset: ${mode})`;
    if (info.commands['guest-exec'] === false) {
      return {
        ...ok(name, id, `${answered}; guest-exec is disabled`),
        fix: "a baseline refresh's update_cmd runs through guest-exec: allow it in the guest's qemu-ga if refreshes need one",
      };
    }
    return ok(name, id, answered);
  });
}

/**
 * Whether the token may write and read the canary: Proxmox VE 8 guards the guest agent with
 * VM.Monitor, Proxmox VE 9 with VM.GuestAgent.FileWrite and .FileRead; either will do.
 */
function filesCheck(
  client: ProxmoxClient,
  r: ProxmoxRunner,
  mode: VerifyMode,
  have: Record<string, number>,
): DoctorCheck {
  const name = 'proxmox-guest-files';
  const tokenId = `${r.proxmox_user}!${r.proxmox_token_name}`;
  const pve9 = ['VM.GuestAgent.FileRead', 'VM.GuestAgent.FileWrite'];
  const granted =
    have['VM.Monitor'] !== undefined
      ? 'VM.Monitor'
      : pve9.every((p) => have[p] !== undefined)
        ? pve9.join(', ')
        : undefined;
  if (granted)
    return ok(
      name,
      r.runner_id,
      `token ${tokenId} may write and read guest files (${granted}) on ${client.aclPath}`,
    );
  return finding(
    mode,
    name,
    r.runner_id,
    `token ${tokenId} may not write or read guest files on ${client.aclPath}: it lacks VM.Monitor (Proxmox VE 8) or VM.GuestAgent.FileRead and VM.GuestAgent.FileWrite (Proxmox VE 9)`,
    `grant them, e.g. pveum acl modify ${client.aclPath} -token '${tokenId}' -role PVEVMAdmin (with privilege separation the token's user needs them too)`,
  );
}

function baselineCheck(c: Context, client: ProxmoxClient, r: ProxmoxRunner): Promise<DoctorCheck> {
  const [name, id, vmid, snap] = [
    'proxmox-baseline',
    r.runner_id,
    r.proxmox_vmid,
    r.baseline_snapshot!,
  ];
  return guarded(name, id, c.ms, 'check proxmox_node and proxmox_vmid', async () => {
    const snapshots = await client.listSnapshots();
    const found = snapshots.find((s) => s.name === snap);
    if (!found) {
      const names = snapshots.map((s) => s.name);
      return bad(
        name,
        id,
        `VM ${vmid} has no snapshot '${snap}' (its current baseline)`,
        `take it (qm snapshot ${vmid} ${snap}) or set baseline_snapshot to an existing one${names.length ? ` (${names.join(', ')})` : ''}`,
      );
    }
    if (found.snapstate) {
      return bad(
        name,
        id,
        `snapshot '${snap}' of VM ${vmid} is half-made (snapstate ${found.snapstate})`,
        `delete it (qm delsnapshot ${vmid} ${snap} --force) and take it again`,
      );
    }
    return ok(name, id, `baseline snapshot '${snap}' of VM ${vmid} exists`);
  });
}
