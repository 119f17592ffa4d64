import {
  bareMetalSchema,
  ciAdapterProblem,
  proxmoxSchema,
  verifyFieldsProblem,
  type RunnerConfig,
} from '../config/runner-schema';
import { HttpError } from './errors';

const PROXMOX_REQUIRED = [
  'proxmox_host',
  'proxmox_user',
  'proxmox_token_name',
  'proxmox_token_value',
  'proxmox_node',
  'proxmox_vmid',
] as const;

function isBlank(v: unknown): boolean {
  return v === undefined || v === null || (typeof v === 'string' && v.trim() === '');
}

/**
 * Validates a runner's fields with the inventory's schemas; throws 422 with
 * the Python original's texts for the backend checks, `<field>: <problem>`
 * otherwise.
 */
export function validateRunner(body: Record<string, unknown>): RunnerConfig {
  const backend = body.backend;
  if (backend !== 'proxmox' && backend !== 'bare_metal') {
    throw new HttpError(
      422,
      `Invalid backend '${backend === undefined || backend === null ? 'None' : String(backend)}'. Must be 'proxmox' or 'bare_metal'.`,
    );
  }
  if (backend === 'bare_metal' && isBlank(body.reset_cmd)) {
    throw new HttpError(422, "bare_metal backend requires 'reset_cmd'.");
  }
  if (backend === 'proxmox') {
    const missing = PROXMOX_REQUIRED.filter((f) => isBlank(body[f]));
    if (missing.length) {
      throw new HttpError(422, `proxmox backend is missing required fields: ${missing.join(', ')}`);
    }
  }
  const misplaced = verifyFieldsProblem(body);
  if (misplaced) throw new HttpError(422, misplaced);
  // The tokens are generated, never taken from the body.
  const raw: Record<string, unknown> = { ...body, token: 'generated' };
  delete raw.agent_token;
  const parsed =
    backend === 'proxmox' ? proxmoxSchema.safeParse(raw) : bareMetalSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new HttpError(422, `${issue.path.map(String).join('.') || 'body'}: ${issue.message}`);
  }
  const ci = ciAdapterProblem(parsed.data as RunnerConfig);
  if (ci) throw new HttpError(422, ci);
  return parsed.data as RunnerConfig;
}
