import type { DataSource } from 'typeorm';
import { createStore, type Store } from '../../store';
import { createMigratedDatabase, insertCheckpoint } from '../helpers/db';

/**
 * runner_pauses and checkpoints.held_until through their stores: every write
 * is idempotent (the activities that make them are retried), and a runner's
 * newest pause says whether e2epool has it paused.
 */
describe('RunnerPauseStore and HoldStore', () => {
  let ds: DataSource;
  let close: () => Promise<void>;
  let store: Store;
  beforeAll(async () => {
    ({ ds, close } = await createMigratedDatabase('pauses'));
    store = createStore(ds);
  });
  afterAll(async () => close());

  const checkpoint = (runnerId: string, state = 'created'): Promise<number> =>
    insertCheckpoint(ds, runnerId, state, state === 'reset' ? new Date() : null);
  const github = {
    kind: 'github' as const,
    githubRunnerId: 7,
    scope: { repo: 'acme/app' },
    labels: ['e2e', 'gpu'],
  };

  it('a pause is sent, then confirmed, then kept for a drain, then closed; retries change nothing', async () => {
    const id = await checkpoint('r-1');
    const at = new Date('2026-11-01T10:00:00Z');
    const fact = { checkpointId: id, runnerId: 'r-1', target: github, at };
    await store.pauses.opened({ ...fact, state: 'sent', labels: ['e2e', 'gpu'] });
    await store.pauses.opened({ ...fact, state: 'sent', labels: ['e2e', 'gpu'] });
    expect(await store.pauses.openOf(id)).toMatchObject({
      ci: 'github',
      ciRunnerId: 7,
      state: 'sent',
      owned: true,
      labels: ['e2e', 'gpu'],
      pausedAt: at,
    });
    // A later write of an open pause keeps its start.
    await store.pauses.opened({ ...fact, state: 'paused', labels: ['e2e'], at: new Date() });
    expect(await store.pauses.openOf(id)).toMatchObject({
      state: 'paused',
      labels: ['e2e'],
      pausedAt: at,
    });
    expect(await store.pauses.closed(id, 'kept_for_drain')).toBe(true);
    expect(await store.pauses.openOf(id)).toMatchObject({ state: 'kept_for_drain', owned: true });
    expect(await store.pauses.closed(id, 'unpaused')).toBe(true);
    expect(await store.pauses.closed(id, 'unpaused')).toBe(false); // a retry
    expect(await store.pauses.openOf(id)).toBeNull();
    // Paused again after it closed: a new pause, from its own start.
    const later = new Date('2026-11-02T10:00:00Z');
    await store.pauses.opened({ ...fact, state: 'paused', labels: ['gpu'], at: later });
    expect(await store.pauses.openOf(id)).toMatchObject({ pausedAt: later, unpausedAt: null });
  });

  it("a runner's newest pause wins; a closed one says nothing is e2epool's", async () => {
    const first = await checkpoint('r-2', 'reset');
    const second = await checkpoint('r-2');
    const gitlab = { kind: 'gitlab' as const, gitlabRunnerId: 42 };
    await store.pauses.opened({
      checkpointId: first,
      runnerId: 'r-2',
      target: gitlab,
      state: 'paused',
    });
    expect(
      (await store.pauses.latestByRunner(['r-2', 'r-none'])).map((p) => [p.checkpointId, p.owned]),
    ).toEqual([[first, true]]);
    await store.pauses.opened({
      checkpointId: second,
      runnerId: 'r-2',
      target: gitlab,
      state: 'paused',
    });
    await store.pauses.closed(second, 'left_paused');
    const [latest] = await store.pauses.latestByRunner(['r-2']);
    expect(latest).toMatchObject({ checkpointId: second, state: 'left_paused', owned: false });
    expect(latest!.unpausedAt).toBeInstanceOf(Date);
  });

  it('a hold deadline counts while the checkpoint waits and the deadline is ahead; a state change clears it', async () => {
    const id = await checkpoint('r-3', 'finalize_queued');
    const until = new Date(Date.now() + 3_600_000);
    await store.holds.set(id, until);
    expect(await store.holds.untilOf([id])).toEqual(new Map([[id, until]]));
    await store.holds.set(id, null);
    expect(await store.holds.untilOf([id])).toEqual(new Map());
    await store.holds.set(id, new Date(Date.now() - 1000));
    expect(await store.holds.untilOf([id])).toEqual(new Map()); // over
    await store.holds.set(id, until);
    await store.checkpoints.transition({
      checkpointId: id,
      from: ['finalize_queued'],
      to: 'reset',
    });
    const [{ held_until }] = (await ds.query(`SELECT held_until FROM checkpoints WHERE id = $1`, [
      id,
    ])) as [{ held_until: Date | null }];
    expect(held_until).toBeNull();
  });
});
