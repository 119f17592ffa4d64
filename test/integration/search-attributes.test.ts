import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTE_KEYS } from '../../common/search-attributes';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { bareMetalInventory, controllerEnv, uniqueId, writeInventory } from '../helpers/env';
import { runCli, startCli } from '../helpers/processes';
import { shared } from '../helpers/shared';
import { createNamespace } from '../helpers/temporal';

/** INDEXED_VALUE_TYPE_KEYWORD and _TEXT (temporal/api/enums/v1/common.proto). */
const KEYWORD = 2;
const TEXT = 1;

/**
 * The search attributes on a namespace of the test's own, which the dev
 * server starts without them: `e2epool worker` and `e2epool setup` register
 * them; a wrong type is refused with the command that fixes it.
 */
describe('search attributes on a fresh namespace', () => {
  let db: TestDatabase;
  let conn: Connection;

  const env = (namespace: string) =>
    controllerEnv({
      TEMPORAL_NAMESPACE: namespace,
      E2EPOOL_DATABASE_URL: db.url,
      E2EPOOL_INVENTORY_PATH: writeInventory(bareMetalInventory()),
      E2EPOOL_TASK_QUEUE: uniqueId('tq-sa'),
      E2EPOOL_WORKER_METRICS_PORT: '0',
      E2EPOOL_HOST: '127.0.0.1',
    });
  const attributes = async (namespace: string) =>
    (await conn.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {};
  const ours = (have: Record<string, unknown>) =>
    Object.fromEntries(SEARCH_ATTRIBUTE_KEYS.map((k) => [k.name, have[k.name]]));
  const allKeyword = Object.fromEntries(SEARCH_ATTRIBUTE_KEYS.map((k) => [k.name, KEYWORD]));

  beforeAll(async () => {
    db = await createTestDatabase('sa');
    conn = await Connection.connect({ address: shared().temporalAddress });
  });

  afterAll(async () => {
    await conn?.close();
    await db?.drop();
  });

  it('e2epool worker registers the missing ones at start, then runs', async () => {
    const namespace = await createNamespace('ns-worker');
    expect(ours(await attributes(namespace))).toEqual(
      Object.fromEntries(SEARCH_ATTRIBUTE_KEYS.map((k) => [k.name, undefined])),
    );
    const worker = startCli(['worker'], env(namespace));
    try {
      await worker.waitForOutput(/worker running/, 60_000);
      expect(worker.stdout()).toContain('registered search attributes');
      expect(ours(await attributes(namespace))).toEqual(allKeyword);
    } finally {
      await worker.stop('SIGKILL');
    }
  });

  it('e2epool setup registers them and exits 0; run again, it says there is nothing to do', async () => {
    const namespace = await createNamespace('ns-setup');
    const first = await runCli(['setup'], env(namespace));
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(
      `registered search attributes in namespace ${namespace}: E2eRunnerId, E2eJobId, E2eCheckpointName, E2eState, E2eBackend\n`,
    );
    expect(ours(await attributes(namespace))).toEqual(allKeyword);
    const again = await runCli(['setup'], env(namespace));
    expect([again.code, again.stderr]).toEqual([0, '']);
    expect(again.stdout).toContain(
      `namespace ${namespace} has every search attribute e2epool needs\n`,
    );
  });

  it('an attribute of another type: the worker refuses to start (exit 78), naming it and the commands', async () => {
    const namespace = await createNamespace('ns-wrong');
    await conn.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: { E2eRunnerId: TEXT },
    });
    for (const cmd of ['worker', 'setup']) {
      const res = await runCli([cmd], env(namespace), 60_000);
      expect(res.code).toBe(78);
      const lines = res.stderr.trimEnd().split('\n');
      expect(lines[0]).toBe(
        `e2epool ${cmd}: search attribute E2eRunnerId is registered as Text in namespace ${namespace}, e2epool needs Keyword: ` +
          `remove it (temporal operator search-attribute remove --namespace ${namespace} --name E2eRunnerId) and run: ` +
          `temporal operator search-attribute create --namespace ${namespace} --name E2eRunnerId --type Keyword`,
      );
      expect(lines.slice(1)).toContain(
        `search attribute E2eJobId is missing in namespace ${namespace}: run temporal operator search-attribute create --namespace ${namespace} --name E2eJobId --type Keyword`,
      );
      expect(res.stdout).not.toContain('worker running');
    }
    // Nothing was registered behind the operator's back.
    expect(ours(await attributes(namespace))).toMatchObject({
      E2eRunnerId: TEXT,
      E2eJobId: undefined,
    });
  });

  it('a registration the server refuses: the worker exits 78 with the command of each missing attribute', async () => {
    // The dev server allows 10 Keyword attributes a namespace: with 8 taken, ours do not fit.
    const namespace = await createNamespace('ns-full');
    await conn.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(
        Array.from({ length: 8 }, (_, i) => [`Filler${i}`, KEYWORD]),
      ),
    });
    const res = await runCli(['worker'], env(namespace), 60_000);
    expect(res.code).toBe(78);
    const lines = res.stderr.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      new RegExp(
        `^e2epool worker: namespace ${namespace} lacks search attributes e2epool needs, and registering them failed \\(.*Keyword.*\\); an operator must register them:$`,
      ),
    );
    expect(lines.slice(1)).toEqual(
      SEARCH_ATTRIBUTE_KEYS.map(
        (k) =>
          `search attribute ${k.name} is missing in namespace ${namespace}: run temporal operator search-attribute create --namespace ${namespace} --name ${k.name} --type Keyword`,
      ),
    );
  });
});
