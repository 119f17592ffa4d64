import { createHash } from 'node:crypto';
import { Client } from 'pg';
import type { DataSource } from 'typeorm';
import { createDataSource, revertLastMigration, runMigrations } from '../../store/data-source';
import { createStore, type Store } from '../../store';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { waitFor } from '../helpers/wait';

/**
 * RunnerState (store/migrations/1796270400000-RunnerState.ts) moves the
 * quarantine and the current baseline of `runners` into `runner_state`, keyed
 * by runner id so inventory-file runners have them too. The old columns stay,
 * mirrored both ways by triggers, so a 1.1.0 instance beside 2.0.0 ones
 * (a rolling upgrade) sees and makes the same changes; down() puts the rows
 * back into the columns.
 */
const LAST = 'RunnerState1796270400000';

describe('migration RunnerState', () => {
  let db: TestDatabase;
  let ds: DataSource;
  let store: Store;
  beforeAll(async () => {
    db = await createTestDatabase('rstate');
    ds = createDataSource({ url: db.url, poolSize: 2 });
    await ds.initialize();
    await runMigrations(ds);
    const [last] = (await ds.query(
      `SELECT name FROM e2epool_migrations ORDER BY timestamp DESC LIMIT 1`,
    )) as Array<{ name: string }>;
    // This test knows the schema right before RunnerState: it must stay the last migration's.
    expect(last!.name).toBe(LAST);
    await revertLastMigration(ds);
    store = createStore(ds);
  });
  afterAll(async () => {
    await ds?.destroy();
    await db?.drop();
  });

  /** A registry runner as 1.1.0 wrote it. */
  const insertRunner = (id: string, options: Record<string, unknown>, extra = '') =>
    ds.query(
      `INSERT INTO runners (runner_id, backend, token_hash, options ${extra ? ', quarantined, quarantine_reason, quarantine_source, quarantined_at, current_baseline' : ''})
       VALUES ($1, 'proxmox', $2, $3 ${extra})`,
      [id, createHash('sha256').update(id).digest(), JSON.stringify(options)],
    );
  const oldColumns = async (id: string) =>
    (
      (await ds.query(
        `SELECT quarantined, quarantine_reason, quarantine_source, current_baseline
           FROM runners WHERE runner_id = $1`,
        [id],
      )) as Array<Record<string, unknown>>
    )[0];
  const stateRows = async () =>
    (await ds.query(
      `SELECT runner_id, quarantined, quarantine_reason, quarantine_source, current_baseline,
              baseline_from, draining
         FROM runner_state ORDER BY runner_id`,
    )) as Array<Record<string, unknown>>;

  it('up() moves the columns into runner_state; the triggers keep both in step; down() puts them back', async () => {
    const at = new Date('2026-11-20T10:00:00Z');
    await insertRunner(
      'q-old',
      { baseline_snapshot: 'gold' },
      `, true, 'flaky', 'operator', '${at.toISOString()}', 'e2epool-baseline-20261101000000'`,
    );
    await insertRunner('plain', { baseline_snapshot: 'gold' });
    await ds.query(`UPDATE runners SET current_baseline = 'gold' WHERE runner_id = 'plain'`);
    await insertRunner('none', {});

    expect(await runMigrations(ds)).toEqual([LAST]);
    expect(await stateRows()).toEqual([
      {
        runner_id: 'plain',
        quarantined: false,
        quarantine_reason: null,
        quarantine_source: null,
        current_baseline: 'gold',
        baseline_from: 'gold',
        draining: false,
      },
      {
        runner_id: 'q-old',
        quarantined: true,
        quarantine_reason: 'flaky',
        quarantine_source: 'operator',
        current_baseline: 'e2epool-baseline-20261101000000',
        baseline_from: 'gold',
        draining: false,
      },
    ]);
    const q = await store.quarantine.ofRunners(['q-old', 'plain', 'none']);
    expect([...q.entries()]).toEqual([['q-old', { reason: 'flaky', source: 'operator', at }]]);

    // 2.0.0 writes runner_state: a registry runner's old columns follow (a 1.1.0 API reads them).
    expect(
      (await store.quarantine.quarantine('none', { reason: 'refresh broke', source: 'refresh' }))
        .changed,
    ).toBe(true);
    expect(await oldColumns('none')).toEqual({
      quarantined: true,
      quarantine_reason: 'refresh broke',
      quarantine_source: 'refresh',
      current_baseline: null,
    });
    // Idempotent: the first reason, source and time stay.
    const again = await store.quarantine.quarantine('none', { reason: 'x', source: 'operator' });
    expect(again.changed).toBe(false);
    expect(again.state.quarantine).toMatchObject({ reason: 'refresh broke', source: 'refresh' });
    expect(await store.runnerState.setCurrentBaseline('plain', 'e2epool-baseline-1', 'gold')).toBe(
      true,
    );
    expect(await store.runnerState.setCurrentBaseline('plain', 'e2epool-baseline-1', 'gold')).toBe(
      false,
    );
    expect((await oldColumns('plain'))!.current_baseline).toBe('e2epool-baseline-1');

    // 1.1.0 writes the old columns: runner_state follows (a 2.0.0 worker reads it).
    await ds.query(
      `UPDATE runners SET quarantined = false, quarantine_reason = NULL, quarantine_source = NULL,
              quarantined_at = NULL WHERE runner_id = 'q-old'`,
    );
    expect((await store.runnerState.get('q-old')).quarantine).toBeNull();
    // 1.1.0's PATCH of baseline_snapshot clears current_baseline: the refreshed one is forgotten.
    await ds.query(
      `UPDATE runners SET options = '{"baseline_snapshot": "silver"}', current_baseline = NULL
        WHERE runner_id = 'plain'`,
    );
    expect(await store.runnerState.get('plain')).toMatchObject({
      refreshedBaseline: null,
      baselineFrom: null,
    });

    // An inventory-file runner (no runners row) has state too; a change NOTIFYs the registry channel.
    const listener = new Client({ connectionString: db.url });
    await listener.connect();
    const notices: string[] = [];
    listener.on('notification', (n) => notices.push(n.payload ?? ''));
    await listener.query('LISTEN e2epool_runners');
    try {
      await store.quarantine.quarantine('file-1', {
        reason: 'proof failed',
        source: 'verification',
      });
      await store.runnerState.setDraining('file-1', true);
      await waitFor('the NOTIFY of runner_state', () => notices.includes('file-1'));
    } finally {
      await listener.end();
    }
    expect(await store.quarantine.quarantinedIds()).toEqual(
      expect.arrayContaining(['file-1', 'none']),
    );
    expect(await store.quarantine.countQuarantined()).toBe(2);

    await revertLastMigration(ds);
    expect(await oldColumns('none')).toEqual({
      quarantined: true,
      quarantine_reason: 'refresh broke',
      // 1.1.0 knows no `refresh` source.
      quarantine_source: 'verification',
      current_baseline: null,
    });
    expect((await oldColumns('q-old'))!.quarantined).toBe(false);
    const [table] = (await ds.query(`SELECT to_regclass('runner_state') AS t`)) as Array<{
      t: string | null;
    }>;
    expect(table!.t).toBeNull();

    // up() again: the registry runners' state is back (the file runner's was lost: 1.1.0 has no place for it).
    await runMigrations(ds);
    expect(
      (await stateRows()).map((r) => [r.runner_id, r.quarantine_source, r.current_baseline]),
    ).toEqual([
      ['none', 'verification', null],
      ['q-old', null, 'e2epool-baseline-20261101000000'],
    ]);
  });
});
