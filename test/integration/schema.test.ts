import type { DataSource } from 'typeorm';
import { ACTIVE_STATES, CHECKPOINT_STATES, TERMINAL_STATES } from '../../common/states';
import { createDataSource, revertLastMigration, runMigrations } from '../../store/data-source';
import { createMigratedDatabase, createTestDatabase } from '../helpers/db';

let ds: DataSource;
let close: () => Promise<void>;

beforeAll(async () => {
  ({ ds, close } = await createMigratedDatabase('schema'));
});
afterAll(async () => close());
beforeEach(async () => {
  await ds.query('TRUNCATE checkpoints, operation_logs RESTART IDENTITY CASCADE');
});

let seq = 0;
function row(
  runnerId: string,
  state: string,
  extra: { finalizeStatus?: string; endedAt?: Date | null } = {},
) {
  seq += 1;
  const terminal = (TERMINAL_STATES as readonly string[]).includes(state);
  const endedAt = 'endedAt' in extra ? extra.endedAt : terminal ? new Date() : null;
  return ds.query(
    `INSERT INTO checkpoints (name, runner_id, job_id, backend, state, workflow_id, finalize_status, ended_at)
     VALUES ($1, $2, $3, 'bare_metal', $4, $5, $6, $7)`,
    [
      `job-${seq}-1700000000-0000000${seq % 10}`,
      runnerId,
      String(seq),
      state,
      `wf-${seq}`,
      extra.finalizeStatus ?? null,
      endedAt,
    ],
  );
}

function pgError(err: unknown): { code?: string; constraint?: string } {
  const e = err as {
    driverError?: { code?: string; constraint?: string };
    code?: string;
    constraint?: string;
  };
  return e.driverError ?? e;
}

describe('checkpoints table', () => {
  it.each(ACTIVE_STATES.flatMap((a) => ACTIVE_STATES.map((b) => [a, b] as const)))(
    'Postgres rejects a second active checkpoint (%s then %s) for the same runner',
    async (first, second) => {
      await row('runner-a', first);
      const err = await row('runner-a', second).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(pgError(err)).toMatchObject({
        code: '23505',
        constraint: 'ix_one_active_checkpoint_per_runner',
      });
    },
  );

  it('allows one active checkpoint per runner alongside any number of terminal ones', async () => {
    for (const s of TERMINAL_STATES) await row('runner-b', s);
    await row('runner-b', 'created');
    await row('runner-c', 'created');
    const [{ count }] = await ds.query(
      `SELECT count(*)::int AS count FROM checkpoints WHERE runner_id = 'runner-b'`,
    );
    expect(count).toBe(TERMINAL_STATES.length + 1);
  });

  it('rejects a state outside the state machine', async () => {
    const err = await row('runner-d', 'finalizing').catch((e: unknown) => e);
    expect(pgError(err)).toMatchObject({ code: '23514', constraint: 'ck_checkpoints_state' });
  });

  it('knows exactly the states of the state machine', async () => {
    for (const s of CHECKPOINT_STATES) await row(`runner-${s}`, s);
    const states = await ds.query(`SELECT state FROM checkpoints ORDER BY id`);
    expect(states.map((r: { state: string }) => r.state)).toEqual([...CHECKPOINT_STATES]);
  });

  it('rejects a finalize status other than success, failure or canceled', async () => {
    const err = await row('runner-e', 'finalize_queued', { finalizeStatus: 'failed' }).catch(
      (e: unknown) => e,
    );
    expect(pgError(err)).toMatchObject({
      code: '23514',
      constraint: 'ck_checkpoints_finalize_status',
    });
  });

  it('requires an end time exactly for terminal states', async () => {
    const noEnd = await row('runner-f', 'reset', { endedAt: null }).catch((e: unknown) => e);
    expect(pgError(noEnd)).toMatchObject({ constraint: 'ck_checkpoints_ended_at' });
    const endWhileActive = await row('runner-f', 'created', { endedAt: new Date() }).catch(
      (e: unknown) => e,
    );
    expect(pgError(endWhileActive)).toMatchObject({ constraint: 'ck_checkpoints_ended_at' });
  });

  it('stores every timestamp as timestamptz', async () => {
    const cols = await ds.query(
      `SELECT table_name, column_name, data_type FROM information_schema.columns
       WHERE table_schema = current_schema() AND column_name LIKE '%\\_at' ORDER BY 1, 2`,
    );
    expect(cols.length).toBeGreaterThanOrEqual(6);
    for (const c of cols) expect(c.data_type).toBe('timestamp with time zone');
  });

  it('has the TTL sweep and cooldown indexes', async () => {
    const idx = await ds.query(
      `SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'checkpoints'`,
    );
    const byName = Object.fromEntries(
      idx.map((i: { indexname: string; indexdef: string }) => [i.indexname, i.indexdef]),
    );
    expect(byName.ix_checkpoints_ttl).toMatch(
      /\(created_at\) WHERE \(\(state\)::text = 'created'::text\)/,
    );
    expect(byName.ix_checkpoints_runner_ended).toMatch(/\(runner_id, ended_at DESC\)/);
  });
});

describe('operation_logs table', () => {
  it('keeps one row per idempotency key', async () => {
    await row('runner-g', 'created');
    const [{ id }] = await ds.query(`SELECT id FROM checkpoints WHERE runner_id = 'runner-g'`);
    const insert = () =>
      ds.query(
        `INSERT INTO operation_logs (checkpoint_id, idempotency_key, operation, runner_id, result) VALUES ($1, 'k1', 'pause', 'runner-g', 'ok')`,
        [id],
      );
    await insert();
    const err = await insert().catch((e: unknown) => e);
    expect(pgError(err)).toMatchObject({
      code: '23505',
      constraint: 'uq_operation_logs_idempotency_key',
    });
  });
});

describe('migrations', () => {
  it('revert cleanly and apply again', async () => {
    const db = await createTestDatabase('mig');
    const d = createDataSource({ url: db.url, poolSize: 2 });
    await d.initialize();
    try {
      const all = [
        'InitialSchema1795305600000',
        'AgentSessions1795392000000',
        'AgentCommandExpiry1795478400000',
        'OperationLogPauseEvents1795564800000',
        'CheckpointLogs1795651200000',
        'AgentSessionClosedAt1795737600000',
        'RunnerRegistry1795824000000',
        'AgentTokens1795910400000',
        'RunnerPausesHeldUntil1795996800000',
        'RunnerQuarantine1796083200000',
        'CheckpointVerification1796097600000',
        'RunnerCurrentBaseline1796184000000',
        'RunnerState1796270400000',
      ];
      const tables = async () =>
        (
          (await d.query(
            `SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename NOT LIKE 'e2epool_%' ORDER BY 1`,
          )) as Array<{ tablename: string }>
        ).map((t) => t.tablename);
      expect(await runMigrations(d)).toEqual(all);
      expect(await runMigrations(d)).toEqual([]);
      const expiryColumns = async () =>
        (await d.query(
          `SELECT column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'agent_commands' AND column_name = 'expires_at'`,
        )) as unknown[];
      expect(await expiryColumns()).toHaveLength(1);
      const pauseIndex = async () =>
        (await d.query(
          `SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'ix_operation_logs_pause_events'`,
        )) as unknown[];
      // RunnerPausesHeldUntil replaced the log's pause index with runner_pauses.
      expect(await pauseIndex()).toHaveLength(0);
      expect(await tables()).toEqual(
        expect.arrayContaining(['runners', 'admin_audit', 'runner_pauses']),
      );
      const verifyColumns = async () =>
        (await d.query(
          `SELECT column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'checkpoints'
              AND column_name IN ('verified', 'verify_detail', 'canary_sha256')`,
        )) as unknown[];
      expect(await verifyColumns()).toHaveLength(3);
      // RunnerState (test/integration/runner-state-migration.test.ts) adds runner_state.
      expect(await tables()).toContain('runner_state');
      await revertLastMigration(d);
      expect(await tables()).not.toContain('runner_state');
      const baselineColumn = async () =>
        (await d.query(
          `SELECT column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'runners' AND column_name = 'current_baseline'`,
        )) as unknown[];
      expect(await baselineColumn()).toHaveLength(1);
      await revertLastMigration(d);
      expect(await baselineColumn()).toHaveLength(0);
      expect(await verifyColumns()).toHaveLength(3);
      await revertLastMigration(d);
      expect(await verifyColumns()).toHaveLength(0);
      const quarantineColumns = async () =>
        (await d.query(
          `SELECT column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'runners' AND column_name LIKE 'quarantin%'`,
        )) as unknown[];
      expect(await quarantineColumns()).toHaveLength(4);
      await revertLastMigration(d);
      expect(await quarantineColumns()).toHaveLength(0);
      await revertLastMigration(d);
      expect(await tables()).not.toContain('runner_pauses');
      expect(await pauseIndex()).toHaveLength(1);
      const agentTokenColumn = async () =>
        (await d.query(
          `SELECT column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'runners' AND column_name = 'agent_token_hash'`,
        )) as unknown[];
      expect(await agentTokenColumn()).toHaveLength(1);
      await revertLastMigration(d);
      expect(await agentTokenColumn()).toHaveLength(0);
      expect(await tables()).toContain('runners');
      await revertLastMigration(d);
      expect(await tables()).not.toContain('runners');
      expect(await tables()).not.toContain('admin_audit');
      await revertLastMigration(d);
      await revertLastMigration(d);
      expect(await tables()).not.toContain('checkpoint_logs');
      await revertLastMigration(d);
      expect(await pauseIndex()).toHaveLength(0);
      await revertLastMigration(d);
      expect(await expiryColumns()).toHaveLength(0);
      await revertLastMigration(d);
      expect(await tables()).toEqual(['checkpoints', 'operation_logs']);
      await revertLastMigration(d);
      expect(await tables()).toEqual([]);
      expect(await runMigrations(d)).toEqual(all);
    } finally {
      await d.destroy();
      await db.drop();
    }
  });

  it('apply exactly once when several processes start at the same time', async () => {
    const db = await createTestDatabase('race');
    const sources = Array.from({ length: 4 }, () => createDataSource({ url: db.url, poolSize: 1 }));
    try {
      await Promise.all(sources.map((s) => s.initialize()));
      const applied = await Promise.all(sources.map((s) => runMigrations(s)));
      expect(applied.flat()).toEqual([
        'InitialSchema1795305600000',
        'AgentSessions1795392000000',
        'AgentCommandExpiry1795478400000',
        'OperationLogPauseEvents1795564800000',
        'CheckpointLogs1795651200000',
        'AgentSessionClosedAt1795737600000',
        'RunnerRegistry1795824000000',
        'AgentTokens1795910400000',
        'RunnerPausesHeldUntil1795996800000',
        'RunnerQuarantine1796083200000',
        'CheckpointVerification1796097600000',
        'RunnerCurrentBaseline1796184000000',
        'RunnerState1796270400000',
      ]);
      const [{ count }] = await sources[0]!.query(
        'SELECT count(*)::int AS count FROM e2epool_migrations',
      );
      expect(count).toBe(13);
    } finally {
      await Promise.all(sources.map((s) => (s.isInitialized ? s.destroy() : undefined)));
      await db.drop();
    }
  });
});
