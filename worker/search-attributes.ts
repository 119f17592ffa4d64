/**
 * The namespace's custom search attributes: what e2epool needs
 * (common/search-attributes.ts), what the server has, and registering the
 * missing ones. Used by `e2epool worker` at start, `e2epool setup` and
 * `e2epool doctor` (which only reads).
 */
import type { Connection } from '@temporalio/client';
import { cliSearchAttributeType, SEARCH_ATTRIBUTE_KEYS } from '../common/search-attributes';
import type { Logger } from '../config/logger';

/** What the operator service calls need: a client Connection, or the worker's NativeConnection. */
export type OperatorConnection = Pick<Connection, 'operatorService'>;

/** gRPC status codes (grpc/status.h); the SDK surfaces them as `code` on its errors. */
const GRPC = { ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, UNIMPLEMENTED: 12, UNAUTHENTICATED: 16 };

/** The attributes the namespace lacks or has with another type. */
export interface SearchAttributeReport {
  missing: string[];
  /** Registered with another type: `name` and the type it has (CLI spelling). */
  wrongType: Array<{ name: string; has: string }>;
}

/**
 * The namespace cannot be given what e2epool needs: the message names each
 * attribute and the command that registers it. Printed whole at exit.
 */
export class SearchAttributeSetupError extends Error {
  override name = 'SearchAttributeSetupError';
}

/**
 * `temporal.api.enums.v1.IndexedValueType` (temporal/api/enums/v1/common.proto), by
 * the SDK's type names. The SDK's own encoder is internal to @temporalio/common.
 */
const INDEXED_VALUE_TYPE: Record<string, number> = {
  TEXT: 1,
  KEYWORD: 2,
  INT: 3,
  DOUBLE: 4,
  BOOL: 5,
  DATETIME: 6,
  KEYWORD_LIST: 7,
};
const TYPE_NAMES = new Map<number, string>(
  Object.entries(INDEXED_VALUE_TYPE).map(([name, n]) => [n, name]),
);

/** The `temporal` command an operator runs to register one attribute. */
export function createCommand(namespace: string, name: string, type: string): string {
  return `temporal operator search-attribute create --namespace ${namespace} --name ${name} --type ${cliSearchAttributeType(type)}`;
}

function grpcCode(err: unknown): number | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  if (typeof e?.code === 'number') return e.code;
  if (typeof e?.cause?.code === 'number') return e.cause.code;
  return undefined;
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

/** Rejects after `ms` with a message naming `what`, so a hung server fails instead of hanging. */
export function withTimeout<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Compares the namespace's custom search attributes with what e2epool sets. */
export async function checkSearchAttributes(
  connection: OperatorConnection,
  namespace: string,
  timeoutMs = 10_000,
): Promise<SearchAttributeReport> {
  const res = await withTimeout(
    'listing the search attributes',
    timeoutMs,
    connection.operatorService.listSearchAttributes({ namespace }),
  );
  const have = res.customAttributes ?? {};
  const report: SearchAttributeReport = { missing: [], wrongType: [] };
  for (const key of SEARCH_ATTRIBUTE_KEYS) {
    const found = have[key.name];
    if (found === undefined || found === null) report.missing.push(key.name);
    else if (found !== INDEXED_VALUE_TYPE[key.type]) {
      const t = TYPE_NAMES.get(found as number);
      report.wrongType.push({
        name: key.name,
        has: t ? cliSearchAttributeType(t) : `type ${String(found)}`,
      });
    }
  }
  return report;
}

function typeOf(name: string): string {
  return SEARCH_ATTRIBUTE_KEYS.find((k) => k.name === name)!.type;
}

/** The lines telling an operator what is wrong and which commands fix it. */
export function describeReport(namespace: string, r: SearchAttributeReport): string[] {
  const lines: string[] = [];
  for (const w of r.wrongType) {
    lines.push(
      `search attribute ${w.name} is registered as ${w.has} in namespace ${namespace}, e2epool needs ${cliSearchAttributeType(typeOf(w.name))}: ` +
        `remove it (temporal operator search-attribute remove --namespace ${namespace} --name ${w.name}) and run: ${createCommand(namespace, w.name, typeOf(w.name))}`,
    );
  }
  for (const name of r.missing) {
    lines.push(
      `search attribute ${name} is missing in namespace ${namespace}: run ${createCommand(namespace, name, typeOf(name))}`,
    );
  }
  return lines;
}

/**
 * Makes sure the namespace has every search attribute e2epool sets, with its
 * type: registers the missing ones when the server lets us; throws
 * SearchAttributeSetupError (naming each attribute and its command) when an
 * attribute has another type (never changed here: workflows may use it) or
 * registering is refused (Temporal Cloud, an API key without admin rights).
 * Returns the names it registered.
 */
export async function ensureSearchAttributes(
  connection: OperatorConnection,
  namespace: string,
  log: Logger,
  timeoutMs = 10_000,
): Promise<string[]> {
  const before = await checkSearchAttributes(connection, namespace, timeoutMs);
  if (before.wrongType.length) {
    throw new SearchAttributeSetupError(describeReport(namespace, before).join('\n'));
  }
  if (!before.missing.length) return [];
  const searchAttributes = Object.fromEntries(
    before.missing.map((n) => [n, INDEXED_VALUE_TYPE[typeOf(n)]!]),
  );
  try {
    await withTimeout(
      'registering the search attributes',
      timeoutMs,
      connection.operatorService.addSearchAttributes({ namespace, searchAttributes }),
    );
  } catch (err) {
    const code = grpcCode(err);
    // Another worker starting at the same time registered them first: check again below.
    if (code !== GRPC.ALREADY_EXISTS) {
      const why =
        code === GRPC.PERMISSION_DENIED || code === GRPC.UNAUTHENTICATED
          ? `the server refused to register them (${firstLine(err)})`
          : code === GRPC.UNIMPLEMENTED
            ? `this server cannot register them (${firstLine(err)})`
            : `registering them failed (${firstLine(err)})`;
      throw new SearchAttributeSetupError(
        [
          `namespace ${namespace} lacks search attributes e2epool needs, and ${why}; an operator must register them:`,
          ...describeReport(namespace, before),
        ].join('\n'),
      );
    }
  }
  const after = await checkSearchAttributes(connection, namespace, timeoutMs);
  if (after.missing.length || after.wrongType.length) {
    throw new SearchAttributeSetupError(
      [
        `namespace ${namespace} still lacks search attributes after registering them:`,
        ...describeReport(namespace, after),
      ].join('\n'),
    );
  }
  log.info({ namespace, registered: before.missing }, 'registered search attributes');
  return before.missing;
}
