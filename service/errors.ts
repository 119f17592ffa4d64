/**
 * What a checkpoint operation refused, in the service's own terms. The service
 * never speaks HTTP or WebSocket: each edge turns an error into its answer
 * (api/errors.ts: status, `detail`, `Retry-After`; gateway/replies.ts: the WS
 * error envelope's `code`, `detail` and `retry_after`), both by wireCodeOf.
 */
export const DOMAIN_ERROR_CODES = [
  'RunnerNotFound',
  'CheckpointNotFound',
  'NotAuthorized',
  'RunnerDraining',
  'RunnerQuarantined',
  'Conflict',
  'CooldownActive',
  'RunClosing',
  'InvalidInput',
  'BackendUnavailable',
  'DeadlinePassed',
  'TemporalUnavailable',
  'InternalFailure',
] as const;

/** Every code an edge must map (its table is a `Record<DomainErrorCode, ...>`). */
export type DomainErrorCode = (typeof DOMAIN_ERROR_CODES)[number];

/**
 * The number each error is answered with on both wire protocols: the REST
 * status, and the agent WebSocket's `error.code`, which carries the same
 * number so an agent CLI tells the same outcomes apart (docs/protocol.md).
 */
const WIRE_CODE: Record<DomainErrorCode, number> = {
  RunnerNotFound: 404,
  CheckpointNotFound: 404,
  NotAuthorized: 403,
  RunnerDraining: 423,
  RunnerQuarantined: 423,
  Conflict: 409,
  CooldownActive: 429,
  RunClosing: 503,
  InvalidInput: 422,
  BackendUnavailable: 502,
  DeadlinePassed: 504,
  TemporalUnavailable: 503,
  InternalFailure: 500,
};

/** The REST status, and WS `error.code`, of a domain error. */
export function wireCodeOf(err: { code: DomainErrorCode }): number {
  return WIRE_CODE[err.code];
}

export abstract class DomainError extends Error {
  abstract readonly code: DomainErrorCode;
  constructor(
    /** Safe to show the caller: a message, or (InvalidInput) a list of validation issues. */
    readonly detail: unknown,
    /** Seconds after which asking again may succeed (a cooldown's time left). */
    readonly retryAfterSeconds?: number,
  ) {
    super(typeof detail === 'string' ? detail : 'invalid input');
  }
}

/** The base of the domain error whose code is `code`. */
function withCode<C extends DomainErrorCode>(code: C) {
  return class extends DomainError {
    readonly code: C = code;
  };
}

export class RunnerNotFound extends withCode('RunnerNotFound') {
  constructor(detail: unknown = 'Runner not found in inventory') {
    super(detail);
  }
}

export class CheckpointNotFound extends withCode('CheckpointNotFound') {
  constructor(detail: unknown = 'Checkpoint not found') {
    super(detail);
  }
}

/** The token names another runner than the request or the checkpoint. */
export class NotAuthorized extends withCode('NotAuthorized') {}

/** Draining (see docs/protocol.md#runner-registry): no new checkpoint starts. */
export class RunnerDraining extends withCode('RunnerDraining') {}

/** Quarantined (see docs/protocol.md#runner-registry): no checkpoint starts until an operator unquarantines it. */
export class RunnerQuarantined extends withCode('RunnerQuarantined') {}

/** The request clashes with the runner's or the checkpoint's state. */
export class Conflict extends withCode('Conflict') {}

/** The runner finished a checkpoint moments ago; `retryAfterSeconds` says when it is past. */
export class CooldownActive extends withCode('CooldownActive') {}

/** The runner's previous run is closing; asking again in a moment gets a real answer. */
export class RunClosing extends withCode('RunClosing') {}

/** The request's values are not acceptable. */
export class InvalidInput extends withCode('InvalidInput') {}

/** The backend could not create the checkpoint (its compensation ran). */
export class BackendUnavailable extends withCode('BackendUnavailable') {}

/** A backend, or the checkpoint's create, took too long. */
export class DeadlinePassed extends withCode('DeadlinePassed') {}

export class TemporalUnavailable extends withCode('TemporalUnavailable') {
  constructor() {
    super('Temporal unavailable, try again later');
  }
}

/** A fault the caller cannot act on (logged where it happened, never shown). */
export class InternalFailure extends withCode('InternalFailure') {
  constructor() {
    super('Internal server error');
  }
}
