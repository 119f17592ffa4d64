import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { waitFor } from '../helpers/wait';

const INVENTORY = `runners:
  - runner_id: metal-1
    backend: bare_metal
    token: tok-metal-1
    reset_cmd: /opt/reset.sh
    cleanup_cmd: /opt/cleanup.sh
  - runner_id: metal-2
    backend: bare_metal
    token: tok-metal-2
    reset_cmd: /opt/reset.sh
    reset_on_success: true
  - runner_id: metal-3
    backend: bare_metal
    token: tok-metal-3
    reset_cmd: /opt/reset.sh
`;

describe('bare-metal checkpoints over REST (real Temporal, real Postgres)', () => {
  const agents = new FakeAgents();
  let c: TestController;
  const rest = (token: string) => restClient(() => c.api.url, token);

  beforeAll(async () => {
    for (const r of ['metal-1', 'metal-2', 'metal-3']) agents.connect(r, new Date(0));
    c = await startTestController({
      inventory: INVENTORY,
      agents,
      env: { E2EPOOL_CHECKPOINT_TTL_SECONDS: '3' },
    });
  });
  afterAll(async () => c?.stop());

  async function until(name: string, token: string, state: string) {
    return waitFor(`${name} to reach ${state}`, async () => {
      const r = await rest(token).status(name);
      return r.body?.state === state ? r.body : undefined;
    });
  }

  it('creates (201), refuses a second active checkpoint (409), resets on failure and logs every step', async () => {
    const api = rest('tok-metal-1');
    const created = await api.create('metal-1', '1001', { caller: 'ci' });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      name: expect.stringMatching(/^job-1001-\d+-[0-9a-f]{8}$/),
      runner_id: 'metal-1',
      job_id: '1001',
      state: 'created',
      finalize_status: null,
      finalize_source: null,
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      finalized_at: null,
    });
    const name = created.body.name as string;

    const again = await api.create('metal-1', '1002');
    expect(again).toEqual({
      status: 409,
      body: { detail: `Active checkpoint '${name}' already exists for runner 'metal-1'` },
    });

    const fin = await api.finalize(name, 'failure');
    expect(fin).toEqual({
      status: 202,
      body: { detail: 'Finalize queued', checkpoint_name: name },
    });
    const done = await until(name, 'tok-metal-1', 'reset');
    expect(done).toMatchObject({
      finalize_status: 'failure',
      finalize_source: 'hook',
      finalized_at: expect.any(String),
    });

    expect(agents.commandsFor('metal-1')).toEqual(['/opt/reset.sh']);
    const ops = await operations(c.ds, name);
    expect(ops.map((o) => `${o.operation}:${o.result}`)).toEqual([
      'create:ok',
      'poller:skipped',
      'finalize_queued:ok',
      'reset_cmd:ok',
      'readiness:ok',
      'reset:ok',
    ]);
    expect(ops.find((o) => o.operation === 'reset_cmd')!.detail).toContain(
      'exit 0; stdout: ran /opt/reset.sh',
    );

    const repeat = await api.finalize(name, 'success');
    expect(repeat).toEqual({ status: 202, body: { detail: 'Already finalized', state: 'reset' } });
  });

  it('takes the cleanup path on success (state deleted), and the reset path when reset_on_success is set', async () => {
    const one = rest('tok-metal-1');
    const a = (await one.create('metal-1', '2001')).body.name as string;
    expect((await one.finalize(a, 'success')).status).toBe(202);
    await until(a, 'tok-metal-1', 'deleted');
    expect(agents.commandsFor('metal-1').slice(-1)).toEqual(['/opt/cleanup.sh']);

    const two = rest('tok-metal-2');
    const b = (await two.create('metal-2', '2002')).body.name as string;
    expect((await two.finalize(b, 'success')).status).toBe(202);
    await until(b, 'tok-metal-2', 'reset');
    expect(agents.commandsFor('metal-2')).toEqual(['/opt/reset.sh']);
  });

  it('resets a checkpoint nobody finalizes when its TTL expires (gc_reset)', async () => {
    const api = rest('tok-metal-3');
    const name = (await api.create('metal-3', '3001')).body.name as string;
    const done = await until(name, 'tok-metal-3', 'gc_reset');
    expect(done).toMatchObject({ finalize_status: null, finalize_source: null });
    expect(agents.commandsFor('metal-3')).toEqual(['/opt/reset.sh']);
    expect((await api.finalize(name, 'failure')).body).toEqual({
      detail: 'Already finalized',
      state: 'gc_reset',
    });
  });
});
