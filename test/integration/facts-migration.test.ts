import type { DataSource } from 'typeorm';
import { createDataSource, revertLastMigration, runMigrations } from '../../store/data-source';
import { createStore } from '../../store';
import { createTestDatabase, insertCheckpoint, type TestDatabase } from '../helpers/db';
import { isActiveState } from '../../common/states';

/**
 * RunnerPausesHeldUntil moves the facts earlier versions kept only in the
 * words of operation_logs (who paused a runner, which GitHub labels came off,
 * a drain's kept pause, a hold's end) into runner_pauses and
 * checkpoints.held_until; down() drops them, and up() again rebuilds the same.
 */
const MIGRATION = 'RunnerPausesHeldUntil1795996800000';

/** Reverts the migrations applied after `name`, then `name` itself. */
async function revertThrough(ds: DataSource, name: string): Promise<void> {
  for (;;) {
    const [last] = (await ds.query(
      `SELECT name FROM e2epool_migrations ORDER BY timestamp DESC LIMIT 1`,
    )) as Array<{ name: string }>;
    await revertLastMigration(ds);
    if (!last || last.name === name) return;
  }
}

describe('migration RunnerPausesHeldUntil', () => {
  let db: TestDatabase;
  let ds: DataSource;
  beforeAll(async () => {
    db = await createTestDatabase('facts');
    ds = createDataSource({ url: db.url, poolSize: 2 });
    await ds.initialize();
    await runMigrations(ds);
    await revertThrough(ds, MIGRATION); // the schema of the version before it
  });
  afterAll(async () => {
    await ds?.destroy();
    await db?.drop();
  });

  const T0 = Date.parse('2026-11-01T10:00:00Z');
  const at = (minutes: number) => new Date(T0 + minutes * 60_000);
  const checkpoint = (runnerId: string, state: string): Promise<number> =>
    insertCheckpoint(ds, runnerId, state, isActiveState(state) ? null : at(0));
  const log = (
    checkpointId: number,
    runnerId: string,
    operation: string,
    result: string,
    detail: string | null,
    when: Date,
  ) =>
    ds.query(
      `INSERT INTO operation_logs (checkpoint_id, idempotency_key, operation, runner_id, result, detail, attempt, started_at)
       VALUES ($1, $2, $3, $4, $5, $6, 1, $7)`,
      [
        checkpointId,
        `k-${checkpointId}-${operation}-${when.getTime()}-${result}`,
        operation,
        runnerId,
        result,
        detail,
        when,
      ],
    );

  const dump = async () =>
    ds.query(
      `SELECT checkpoint_id, runner_id, ci, ci_runner_id::int AS ci_runner_id, labels, state, owned,
              paused_at, unpaused_at, changed_at
         FROM runner_pauses ORDER BY checkpoint_id`,
    ) as Promise<Array<Record<string, unknown>>>;
  const holds = async () =>
    (
      (await ds.query(
        `SELECT id, held_until FROM checkpoints WHERE held_until IS NOT NULL ORDER BY id`,
      )) as Array<{ id: number; held_until: Date }>
    ).map((r) => [r.id, r.held_until.toISOString()]);

  it('moves the old log rows into runner_pauses and held_until; down() drops them; up() again rebuilds the same', async () => {
    const ids: Record<string, number> = {};
    // GitLab: paused, nothing undid it.
    ids.open = await checkpoint('r-open', 'reset');
    await log(ids.open, 'r-open', 'pause', 'ok', 'paused GitLab runner 42', at(1));
    // GitLab: paused, then unpaused.
    ids.done = await checkpoint('r-done', 'reset');
    await log(ids.done, 'r-done', 'pause', 'ok', 'paused GitLab runner 43', at(1));
    await log(ids.done, 'r-done', 'unpause', 'ok', 'unpaused GitLab runner 43', at(5));
    // GitLab: sent, never heard back (the workflow's pause, logged with finalize_queued).
    ids.sent = await checkpoint('r-sent', 'finalize_queued');
    await log(ids.sent, 'r-sent', 'pause', 'error', 'pause request sent', at(2));
    // GitHub: a removal sent without an answer names its labels.
    ids.ghSent = await checkpoint('r-gh-sent', 'reset');
    await log(
      ids.ghSent,
      'r-gh-sent',
      'pause',
      'error',
      'pause request sent: remove labels ["e2e","gpu"] from GitHub runner 7 of o/r',
      at(2),
    );
    // GitHub: removed, then an adopting run removed one more: both are e2epool's, since the first.
    ids.ghTwice = await checkpoint('r-gh-twice', 'reset');
    await log(
      ids.ghTwice,
      'r-gh-twice',
      'pause',
      'ok',
      'removed labels ["e2e"] from GitHub runner 8 of organization acme',
      at(1),
    );
    await log(
      ids.ghTwice,
      'r-gh-twice',
      'pause',
      'ok',
      'removed labels ["e2e","x"] from GitHub runner 8 of organization acme',
      at(3),
    );
    // Drain: the unpause kept it paused (still e2epool's).
    ids.drain = await checkpoint('r-drain', 'reset');
    await log(ids.drain, 'r-drain', 'pause', 'ok', 'paused GitLab runner 44', at(1));
    await log(
      ids.drain,
      'r-drain',
      'unpause',
      'skipped',
      "runner 'r-drain' is draining: GitLab runner 44 stays paused until it is undrained",
      at(4),
    );
    // An operator released it paused; somebody else unpaused another; another was paused by someone else.
    ids.left = await checkpoint('r-left', 'reset');
    await log(ids.left, 'r-left', 'pause', 'ok', 'paused GitLab runner 45', at(1));
    await log(
      ids.left,
      'r-left',
      'left_paused',
      'skipped',
      'released by an operator with GitLab runner 45 still paused: e2epool will not unpause it',
      at(6),
    );
    ids.elsewhere = await checkpoint('r-else', 'reset');
    await log(ids.elsewhere, 'r-else', 'pause', 'ok', 'paused GitLab runner 46', at(1));
    await log(
      ids.elsewhere,
      'r-else',
      'unpaused_elsewhere',
      'ok',
      'GitLab runner 46 is no longer paused: someone else unpaused it',
      at(7),
    );
    ids.foreign = await checkpoint('r-foreign', 'reset');
    await log(
      ids.foreign,
      'r-foreign',
      'pause',
      'skipped',
      'GitLab runner 47 was already paused by someone else: e2epool will not unpause it',
      at(1),
    );
    // The reconciler unpaused one.
    ids.reconciled = await checkpoint('r-rec', 'reset');
    await log(ids.reconciled, 'r-rec', 'pause', 'ok', 'paused GitLab runner 48', at(1));
    await log(
      ids.reconciled,
      'r-rec',
      'reconcile:paused_runner',
      'ok',
      'whatever the reconciler said',
      at(8),
    );
    // Holds: one under way, one released, one whose checkpoint moved on.
    const until = new Date(Date.now() + 3_600_000).toISOString();
    ids.held = await checkpoint('r-held', 'finalize_queued');
    await log(
      ids.held,
      'r-held',
      'hold',
      'ok',
      `held for debugging until ${until}; signal release-hold to reset now`,
      at(1),
    );
    ids.released = await checkpoint('r-released', 'finalize_queued');
    await log(
      ids.released,
      'r-released',
      'hold',
      'ok',
      `held for debugging until ${until}; signal release-hold to reset now`,
      at(1),
    );
    await log(
      ids.released,
      'r-released',
      'hold',
      'ok',
      `release-hold: the hold ended early (it was to last until ${until}); resetting now`,
      at(2),
    );
    ids.over = await checkpoint('r-over', 'reset');
    await log(
      ids.over,
      'r-over',
      'hold',
      'ok',
      `held for debugging until ${until}; signal release-hold to reset now`,
      at(1),
    );

    expect((await runMigrations(ds))[0]).toBe(MIGRATION);
    const row = (id: number, fields: Record<string, unknown>) =>
      expect.objectContaining({ checkpoint_id: id, ...fields });
    const first = await dump();
    expect(first).toEqual([
      row(ids.open, {
        ci: 'gitlab',
        ci_runner_id: 42,
        labels: [],
        state: 'paused',
        owned: true,
        paused_at: at(1),
        unpaused_at: null,
      }),
      row(ids.done, {
        ci: 'gitlab',
        state: 'unpaused',
        owned: false,
        paused_at: at(1),
        unpaused_at: at(5),
      }),
      row(ids.sent, {
        ci: 'gitlab',
        ci_runner_id: null,
        state: 'sent',
        owned: true,
        paused_at: at(2),
      }),
      row(ids.ghSent, {
        ci: 'github',
        ci_runner_id: 7,
        labels: ['e2e', 'gpu'],
        state: 'sent',
        owned: true,
      }),
      row(ids.ghTwice, {
        ci: 'github',
        ci_runner_id: 8,
        labels: ['e2e', 'x'],
        state: 'paused',
        paused_at: at(1),
        changed_at: at(3),
      }),
      row(ids.drain, {
        state: 'kept_for_drain',
        owned: true,
        unpaused_at: null,
        changed_at: at(4),
      }),
      row(ids.left, { state: 'left_paused', owned: false, unpaused_at: at(6) }),
      row(ids.elsewhere, { state: 'unpaused_elsewhere', owned: false, unpaused_at: at(7) }),
      row(ids.reconciled, { state: 'unpaused', owned: false, unpaused_at: at(8) }),
    ]);
    expect(await holds()).toEqual([[ids.held, until]]);

    // The stores read the moved facts.
    const store = createStore(ds);
    expect((await store.pauses.openOf(ids.ghSent))?.labels).toEqual(['e2e', 'gpu']);
    expect(await store.pauses.openOf(ids.done)).toBeNull();
    const latest = await store.pauses.latestByRunner(['r-drain', 'r-left', 'r-foreign']);
    expect(latest.map((p) => [p.runnerId, p.state, p.owned])).toEqual([
      ['r-drain', 'kept_for_drain', true],
      ['r-left', 'left_paused', false],
    ]);
    expect([...(await store.holds.untilOf([ids.held, ids.released, ids.over])).keys()]).toEqual([
      ids.held,
    ]);

    await revertThrough(ds, MIGRATION);
    const tables = (await ds.query(
      `SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'runner_pauses'`,
    )) as unknown[];
    expect(tables).toHaveLength(0);
    const column = (await ds.query(
      `SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'checkpoints' AND column_name = 'held_until'`,
    )) as unknown[];
    expect(column).toHaveLength(0);
    // The log rows were never touched.
    const [{ n }] = (await ds.query(`SELECT count(*)::int AS n FROM operation_logs`)) as [
      { n: number },
    ];
    expect(n).toBe(20);

    expect((await runMigrations(ds))[0]).toBe(MIGRATION);
    expect(await dump()).toEqual(first);
    expect(await holds()).toEqual([[ids.held, until]]);
  });
});
