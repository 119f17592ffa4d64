/**
 * The `patched()` gates of workflow changes since 1.0.0 (CONTRIBUTING.md,
 * "Workflow changes"). A run whose history has no marker of a gate takes
 * the path it took before the change; each name is written into histories,
 * so it never changes.
 */

/**
 * 1.1.0, golden baseline and proof of reset (docs/operators.md, "Golden
 * baseline", "Proof of reset"). For a run whose runner plan carries them:
 * - create: a Proxmox runner with a `baselineSnapshot` takes no snapshot of
 *   its own; with a canary (`verifyReset` not `off`), `writeCanary` runs
 *   after the restore point exists and before the create answers;
 * - reset: a runner with a baseline is always reset (success too) to it,
 *   and the baseline is never deleted; after readiness, `verifyReset` runs
 *   unless `verifyReset` is `off`, and a failed proof (or none, when it is
 *   `required`) fails the round into needs_attention.
 * A plan without those fields (every run started before 1.1.0) takes the
 * 1.0.0 path whether or not the marker is there.
 */
export const PATCH_PROOF_OF_RESET = 'proof-of-reset';
