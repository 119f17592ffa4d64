/**
 * How a runner's reset is proven (its `verify_reset`, `verify_cmd` and `canary_path`), resolved
 * to the effective mode. Pure and import-free: the workflow sandbox, activities, the API and
 * the CLI all read it (config/runner-schema.ts validates the fields).
 */

/** How a reset is proven: `canary` tolerates a guest that cannot be asked, `required` does not. */
export const VERIFY_MODES = ['canary', 'required', 'off'] as const;
export type VerifyMode = (typeof VERIFY_MODES)[number];

/** Where the canary nonce is written in the guest unless `canary_path` says otherwise. */
export const DEFAULT_CANARY_PATH = '/var/lib/e2epool/canary';

/** The reset-proof fields of a runner, as the inventory or the registry holds them. */
export interface VerifyFields {
  backend: string;
  verify_reset?: unknown;
  verify_cmd?: unknown;
  canary_path?: unknown;
}

/**
 * A runner's effective reset proof: its `verify_reset`, or the backend's
 * default: `canary` for Proxmox; for bare metal `required` when it has a
 * `verify_cmd` (a command set to prove the reset is meant to be run), else
 * `off`. A bare-metal runner without `verify_cmd` has nothing to verify with.
 */
export function verifyModeOf(r: VerifyFields): VerifyMode {
  const set = VERIFY_MODES.find((m) => m === r.verify_reset);
  const hasCmd = typeof r.verify_cmd === 'string' && r.verify_cmd.trim() !== '';
  if (r.backend === 'proxmox') return set ?? 'canary';
  if (!hasCmd) return 'off';
  return set === 'off' ? 'off' : 'required';
}

/** The guest file a Proxmox runner's canary nonce goes to. */
export function canaryPathOf(r: VerifyFields): string {
  return typeof r.canary_path === 'string' ? r.canary_path : DEFAULT_CANARY_PATH;
}
