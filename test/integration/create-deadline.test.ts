import { FakeAgents } from '../helpers/fake-agents';
import { restClient, startTestController, type TestController } from '../helpers/controller';
import { proxmoxRunnerYaml, testRunner } from '../helpers/env';
import { waitFor } from '../helpers/wait';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * A create has a deadline under the agent CLI's 30 s: past it the caller gets
 * 504 and the checkpoint is compensated, so the next job is not refused 409
 * by a create nobody waits for.
 */
describe('the create deadline (E2EPOOL_CREATE_TIMEOUT_SECONDS)', () => {
  const r = testRunner('deadline');
  const VMID = 310;
  const agents = new FakeAgents();
  let pve: ProxmoxStandIn;
  let c: TestController;

  beforeAll(async () => {
    pve = await startProxmoxStandIn({ taskDurationMs: 30 });
    pve.addVm('pve1', VMID, { status: 'running' });
    agents.connect(r.id, new Date(0));
    agents.connectedWhen = (runnerId) =>
      runnerId === r.id ? pve.vm('pve1', VMID).status === 'running' : undefined;
    c = await startTestController({
      inventory: `runners:\n${proxmoxRunnerYaml(pve, { runnerId: r.id, token: r.token, vmid: VMID })}`,
      agents,
      gitlab: null,
      env: { E2EPOOL_CREATE_TIMEOUT_SECONDS: '2', E2EPOOL_RESET_MAX_ATTEMPTS: '2' },
    });
  });
  afterAll(async () => {
    await c?.stop();
    await pve?.close();
  });

  it('answers 504 at the deadline while the snapshot hangs, ends the checkpoint create_failed, and the next create works', async () => {
    const api = restClient(() => c.api.url, r.token);
    pve.failNext({ taskType: 'qmsnapshot' }, { kind: 'hang' }, Infinity);
    const t0 = Date.now();
    const res = await api.create(r.id, '9501');
    expect(res).toEqual({
      status: 504,
      body: { detail: 'Checkpoint could not be created before the create deadline' },
    });
    // The deadline (2 s) plus the API's grace (3 s), never the CLI's 30 s.
    expect(Date.now() - t0).toBeLessThan(15_000);

    pve.clearFaults(); // the hung task finishes; compensation removes its snapshot
    const [row] = await waitFor(
      'the compensated checkpoint',
      async () => {
        const rows = await c.ds.query(
          `SELECT state, error_detail FROM checkpoints WHERE runner_id = $1`,
          [r.id],
        );
        return rows[0]?.state === 'create_failed' ? rows : undefined;
      },
      { timeoutMs: 60_000 },
    );
    expect(row.error_detail).toMatch(/^not created before its deadline/);
    await waitFor('the VM unlocked', () => pve.vm('pve1', VMID).lock === undefined);

    const next = await api.create(r.id, '9502');
    expect(next).toMatchObject({ status: 201, body: { job_id: '9502', state: 'created' } });
    expect(pve.vm('pve1', VMID).snapshots.map((s) => s.name)).toEqual([next.body.name]);
  }, 90_000);
});
