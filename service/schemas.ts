import { z } from 'zod';
import { FINALIZE_STATUSES } from '../common/states';
import { InvalidInput } from './errors';

// Python's \w is Unicode-aware; so is this, to accept what the old API accepted.
const WORD = /^[\p{L}\p{N}_.-]+$/u;
const wordish = (max: number) =>
  z
    .string({ error: 'Input should be a valid string' })
    .min(1, 'String should have at least 1 character')
    .max(max, `String should have at most ${max} characters`)
    .regex(WORD, "String should match pattern '^[\\w.\\-]+$'");

/** Checkpoint names, `job-<job_id>-<unix seconds>-<8 hex>`; Unicode-aware like the Python validator. */
const CHECKPOINT_NAME = /^job-[\p{L}\p{N}_.-]+-\d+-[0-9a-f]{8}$/u;

/** Postgres refuses a NUL in text: a string holding one is a 422, never a 500. */
const NO_NUL = 'String should not contain a NUL character';
const hasNoNul = (v: string) => !v.includes('\u0000');

/**
 * The job's project: a GitLab project id (numeric, or a word), or a GitHub
 * repository `owner/name` (`$GITHUB_REPOSITORY`). Clients put it into URL
 * paths (`/projects/:id/jobs/:job_id`, `/repos/{owner}/{repo}/...`), so at
 * most one `/`, and no `.`/`..` segment that would climb out.
 */
const PROJECT_ID = /^[\p{L}\p{N}_.-]{1,255}$/u;
const GITHUB_REPO = /^[\p{L}\p{N}_.-]+\/[\p{L}\p{N}_.-]+$/u;
const isDotSegment = (v: string) => v.split('/').some((p) => p === '.' || p.includes('..'));

export const createBody = z.object({
  runner_id: wordish(255),
  job_id: wordish(200), // the name adds up to 24 characters and must fit in 255
  caller: z
    .string({ error: 'Input should be a valid string' })
    .max(255, 'String should have at most 255 characters')
    .refine(hasNoNul, NO_NUL)
    .nullish(),
  project_id: z
    .union([
      z.number().int().positive(),
      z
        .string()
        .max(255, 'String should have at most 255 characters')
        .refine(
          (v) => PROJECT_ID.test(v) || GITHUB_REPO.test(v),
          'Input should be a GitLab project id (letters, digits, _ . -) or a GitHub repository owner/name',
        )
        .refine((v) => !isDotSegment(v), "Input should not be '.' or contain '..'"),
    ])
    .nullish()
    .transform((v) => (v === null || v === undefined ? null : String(v))),
});

export const finalizeBody = z.object({
  checkpoint_name: z
    .string({ error: 'Input should be a valid string' })
    .regex(CHECKPOINT_NAME, 'checkpoint_name must match pattern ^job-[\\w.\\-]+-\\d+-[0-9a-f]{8}$'),
  status: z.enum(FINALIZE_STATUSES, {
    error: "Input should be 'success', 'failure' or 'canceled'",
  }),
  source: wordish(100).default('hook'),
});

/** A checkpoint name looked up as given (the status path parameter, the agent's status payload). */
export const checkpointNameParam = z
  .string({ error: 'Input should be a valid string' })
  .min(1, 'String should have at least 1 character')
  .max(300, 'String should have at most 300 characters')
  .refine(hasNoNul, NO_NUL);

export const statusParams = z.object({ name: checkpointNameParam });

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let v: unknown = input;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/** A validation error in the shape FastAPI used: a list of {type, loc, msg}. */
export function validationDetail(
  error: z.ZodError,
  where: 'body' | 'path' | 'query' | 'payload',
  input: unknown,
) {
  return error.issues.map((i) => {
    const missing = i.code === 'invalid_type' && valueAt(input, i.path) === undefined;
    return {
      type: missing ? 'missing' : i.code,
      loc: [where, ...i.path.map((p) => (typeof p === 'symbol' ? String(p) : p))],
      msg: missing ? 'Field required' : i.message,
    };
  });
}

/** Parses `input` or throws InvalidInput (REST: 422) with the validation detail. */
export function parseInput<T extends z.ZodTypeAny>(
  schema: T,
  input: unknown,
  where: 'body' | 'path' | 'query' = 'body',
): z.infer<T> {
  const r = schema.safeParse(input ?? {});
  if (!r.success) throw new InvalidInput(validationDetail(r.error, where, input));
  return r.data;
}
