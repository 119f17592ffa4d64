/** A DataSource or a transaction's EntityManager: what every store runs its SQL on. */
export interface Queryable {
  query(sql: string, parameters?: unknown[]): Promise<unknown>;
}

/** Rows of a SELECT, or of an INSERT ... RETURNING. */
export async function selectRows<T>(
  q: Queryable,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  return (await q.query(sql, params)) as T[];
}

/**
 * Rows and count of an UPDATE or DELETE. TypeORM answers those (and only
 * those) with `[rows, affectedCount]` instead of the rows: reading them like a
 * SELECT would see one "row" whatever happened.
 */
export async function changeRows<T>(
  q: Queryable,
  sql: string,
  params: unknown[],
): Promise<{ rows: T[]; count: number }> {
  const [rows, count] = (await q.query(sql, params)) as [T[], number];
  return { rows, count };
}
