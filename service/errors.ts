/**
 * What a checkpoint operation refused, in the service's own terms. The service
 * never speaks HTTP or WebSocket: each edge maps `code` to its answer in one
 * table (api/errors.ts: status, `detail`, `Retry-After`; gateway/replies.ts:
 * the WS error envelope's `code`, `detail` and `retry_after`).
 */
export const DOMAIN_ERROR_CODES = [
  'RunnerNotFound',
  'CheckpointNotFound',
  'NotAuthorized',
  'RunnerDraining',
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

export class RunnerNotFound extends DomainError {
  readonly code = 'RunnerNotFound';
  constructor(detail: unknown = 'Runner not found in inventory') {
    super(detail);
  }
}

export class CheckpointNotFound extends DomainError {
  readonly code = 'CheckpointNotFound';
  constructor(detail: unknown = 'Checkpoint not found') {
    super(detail);
  }
}

/** The token names another runner than the request or the checkpoint. */
export class NotAuthorized extends DomainError {
  readonly code = 'NotAuthorized';
}

/** Draining (see docs/protocol.md#runner-registry): no new checkpoint starts. */
export class RunnerDraining extends DomainError {
  readonly code = 'RunnerDraining';
}

/** The request clashes with the runner's or the checkpoint's state. */
export class Conflict extends DomainError {
  readonly code = 'Conflict';
}

/** The runner finished a checkpoint moments ago; `retryAfterSeconds` says when it is past. */
export class CooldownActive extends DomainError {
  readonly code = 'CooldownActive';
}

/** The runner's previous run is closing; asking again in a moment gets a real answer. */
export class RunClosing extends DomainError {
  readonly code = 'RunClosing';
}

/** The request's values are not acceptable. */
export class InvalidInput extends DomainError {
  readonly code = 'InvalidInput';
}

/** The backend could not create the checkpoint (its compensation ran). */
export class BackendUnavailable extends DomainError {
  readonly code = 'BackendUnavailable';
}

/** A backend, or the checkpoint's create, took too long. */
export class DeadlinePassed extends DomainError {
  readonly code = 'DeadlinePassed';
}

export class TemporalUnavailable extends DomainError {
  readonly code = 'TemporalUnavailable';
  constructor() {
    super('Temporal unavailable, try again later');
  }
}

/** A fault the caller cannot act on (logged where it happened, never shown). */
export class InternalFailure extends DomainError {
  readonly code = 'InternalFailure';
  constructor() {
    super('Internal server error');
  }
}
