/**
 * The Proxmox canary (docs/operators.md, "Proof of reset"): a fresh random nonce written
 * into the guest through the QEMU guest agent once the restore point exists,
 * and looked for after the rollback. Only its SHA-256 is kept (on the
 * checkpoint row): the nonce is never logged, returned or put in history.
 */
import { createHash, randomBytes } from 'node:crypto';
import { applicationFailureOf, fail } from '../../common/fail';
import type { VerifyResetMode } from '../../common/checkpoint';
import type { Stores } from '../../store';
import type { ProxmoxClient } from './client';

/** The guest-agent calls of ProxmoxClient the canary needs. */
type GuestCalls = Pick<
  ProxmoxClient,
  'guestFileWrite' | 'guestFileRead' | 'currentParent' | 'vmAgentEnabled' | 'waitGuestAgent'
>;

/** 256 bits, as hex text: what is written into the guest file. */
const NONCE_BYTES = 32;

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/**
 * A guest agent that cannot answer (not enabled, not running, the VM off):
 * "cannot verify", never "verified". With `refusals`, a guest command the
 * agent refused too (PermanentFailure: e.g. the canary's directory missing).
 * Anything else (Proxmox down) is the call's own failure, retried as classified.
 */
function guestAgentUnavailable(err: unknown, refusals = false): string | null {
  const app = applicationFailureOf(err);
  if (app?.type === 'GuestAgentUnavailable') return app.message;
  return refusals && app?.type === 'PermanentFailure' ? app.message : null;
}

/**
 * Waits (up to `waitMs`) for the guest agent: qemu-ga answers only once the
 * guest has booted. Null when it answers; else why it cannot be asked.
 */
async function guestAgentAbsent(guest: GuestCalls, waitMs: number): Promise<string | null> {
  if (!(await guest.vmAgentEnabled()))
    return "the VM's agent option is off (Proxmox: Options → QEMU Guest Agent)";
  try {
    await guest.waitGuestAgent({ timeoutMs: waitMs });
    return null;
  } catch (err) {
    const why = guestAgentUnavailable(err);
    if (why === null) throw err;
    return why;
  }
}

/** What writeCanary did: the log detail; the nonce itself is not in it. */
export async function writeCanaryFile(
  guest: GuestCalls,
  verification: Stores['verification'],
  i: { checkpointId: number; canaryPath: string; mode: VerifyResetMode; waitMs: number },
): Promise<{ detail: string; written: boolean }> {
  const nonce = randomBytes(NONCE_BYTES).toString('hex');
  try {
    const absent = await guestAgentAbsent(guest, i.waitMs);
    if (absent !== null) throw fail('GuestAgentUnavailable', absent);
    await guest.guestFileWrite(i.canaryPath, nonce);
  } catch (err) {
    const why = guestAgentUnavailable(err, true);
    if (why === null) throw err;
    const detail = `canary not written (${why}): this checkpoint's reset cannot be verified`;
    await verification.setCanary(i.checkpointId, null, detail);
    if (i.mode === 'required')
      throw fail('ResetNotVerified', `${detail}, and verify_reset is required`);
    return { detail, written: false };
  }
  // Recorded only once the file is there: a hash without its file would prove nothing.
  const hash = sha256(nonce);
  await verification.setCanary(i.checkpointId, hash, null);
  return {
    detail: `canary written to ${i.canaryPath} (sha256 ${hash.slice(0, 12)}…)`,
    written: true,
  };
}

/**
 * After the rollback: the VM descends from the snapshot it was rolled back
 * to, and the canary is gone (absent, or not this checkpoint's nonce).
 * Null when it cannot be told: no canary was written, or no guest agent.
 */
export async function checkCanary(
  guest: GuestCalls,
  verification: Stores['verification'],
  i: { checkpointId: number; canaryPath: string; snapshotName: string; waitMs: number },
): Promise<{ verified: boolean | null; detail: string }> {
  const parent = await guest.currentParent();
  if (parent !== i.snapshotName)
    return {
      verified: false,
      detail: `the VM descends from ${parent === null ? 'no snapshot' : `'${parent}'`}, not from '${i.snapshotName}' it was rolled back to`,
    };
  const hash = await verification.canaryOf(i.checkpointId);
  if (hash === null)
    return {
      verified: null,
      detail: `rolled back to '${i.snapshotName}', but no canary was written at the create: nothing to compare`,
    };
  let content: string | null;
  try {
    const absent = await guestAgentAbsent(guest, i.waitMs);
    if (absent !== null) throw fail('GuestAgentUnavailable', absent);
    content = await guest.guestFileRead(i.canaryPath);
  } catch (err) {
    const why = guestAgentUnavailable(err);
    if (why === null) throw err;
    return { verified: null, detail: `canary not readable (${why}): the reset is not verifiable` };
  }
  if (content !== null && (sha256(content) === hash || sha256(content.trim()) === hash))
    return {
      verified: false,
      detail: `the canary ${i.canaryPath} still holds this checkpoint's nonce after the rollback to '${i.snapshotName}': the disk did not go back`,
    };
  const what = content === null ? 'gone' : 'replaced';
  return {
    verified: true,
    detail: `canary ${what} and the VM descends from '${i.snapshotName}'`,
  };
}
