import { createHash } from 'node:crypto';
import { FakeAgents } from '../helpers/fake-agents';
import {
  operations,
  restClient,
  runEnded,
  startTestController,
  type TestController,
} from '../helpers/controller';
import { proxmoxRunnerBody, proxmoxRunnerYaml, testRunners, type TestRunner } from '../helpers/env';
import { scrape, sumOf } from '../helpers/metrics';
import { waitFor } from '../helpers/wait';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * Golden baseline and proof of reset on the Proxmox stand-in (its guest
 * filesystem is part of the disk: snapshots keep it, rollbacks restore it).
 * docs/operators.md, "Golden baseline" and "Proof of reset".
 */
const LABELS = ['golden', 'perJob', 'silent', 'noAgent', 'agentGone'] as const;
type Label = (typeof LABELS)[number];
const R = testRunners(LABELS);
const vmid = (l: Label) => 301 + LABELS.indexOf(l);
const gitlabRunner = (l: Label) => 341 + LABELS.indexOf(l);
const BASELINE = 'golden-base';
const CANARY = '/var/lib/e2epool/canary';
const JOB_FILE = '/tmp/left-by-the-job';
const ADMIN = 'admin-token-proof-of-reset-proxmox-0123456789';
/** Per runner: its fields beyond the Proxmox ones (`silent` is a registry runner: quarantinable). */
const EXTRA: Record<Label, Record<string, string | number>> = {
  golden: { baseline_snapshot: BASELINE },
  perJob: {},
  silent: { baseline_snapshot: BASELINE },
  noAgent: { baseline_snapshot: BASELINE },
  agentGone: { baseline_snapshot: BASELINE, verify_reset: 'required' },
};

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

describe('golden baseline and proof of reset on Proxmox', () => {
  const agents = new FakeAgents();
  let pve: ProxmoxStandIn;
  let gitlab: GitLabStandIn;
  let c: TestController;
  const as = (r: TestRunner) => restClient(() => c.api.url, r.token);
  const admin = () => restClient(() => c.api.url, ADMIN).call;
  const vm = (l: Label) => pve.vm('pve1', vmid(l));

  beforeAll(async () => {
    [pve, gitlab] = await Promise.all([
      startProxmoxStandIn({ taskDurationMs: 30 }),
      startGitLabStandIn(),
    ]);
    const inventory = ['runners:\n'];
    for (const l of LABELS) {
      pve.addVm('pve1', vmid(l), {
        status: 'running',
        snapshots: EXTRA[l].baseline_snapshot ? [{ name: BASELINE, description: 'baseline' }] : [],
        agent: l === 'noAgent' ? '0' : '1',
      });
      gitlab.addRunner(gitlabRunner(l));
      if (l === 'silent') continue;
      inventory.push(
        proxmoxRunnerYaml(pve, {
          runnerId: R[l].id,
          token: R[l].token,
          vmid: vmid(l),
          extra: { gitlab_runner_id: gitlabRunner(l), ...EXTRA[l] },
        }),
      );
    }
    const labelOf = new Map(LABELS.map((l) => [R[l].id, l]));
    agents.connectedWhen = (runnerId) => {
      const l = labelOf.get(runnerId);
      return l ? vm(l).status === 'running' : undefined;
    };
    for (const l of LABELS) agents.connect(R[l].id, new Date(0));
    c = await startTestController({
      inventory: inventory.join(''),
      agents,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        // Registry Proxmox runners keep their API token encrypted with it.
        E2EPOOL_SECRET_KEY: 'proof-of-reset-secret-key-0123456789',
        E2EPOOL_GITLAB_URL: gitlab.url,
        E2EPOOL_GITLAB_TOKEN: gitlab.token,
        E2EPOOL_RESET_MAX_ATTEMPTS: '1',
        E2EPOOL_PROXMOX_TASK_TIMEOUT_SECONDS: '3',
        E2EPOOL_READINESS_TIMEOUT_SECONDS: '3',
      },
    });
    const res = await admin()(
      'POST',
      '/api/runners',
      proxmoxRunnerBody(pve, R.silent.id, vmid('silent'), {
        gitlab_runner_id: gitlabRunner('silent'),
        ...EXTRA.silent,
      }),
    );
    if (res.status !== 201) throw new Error(JSON.stringify(res.body));
    R.silent.token = res.body.token as string;
  });
  afterAll(async () => {
    await c?.stop();
    await Promise.all([pve?.close(), gitlab?.close()]);
  });
  afterEach(() => pve.clearFaults());

  const until = (r: TestRunner, name: string, state: string) =>
    waitFor(`${name} to reach ${state}`, async () => {
      const res = await as(r).status(name);
      return res.body?.state === state ? res.body : undefined;
    });
  /** A job: create, a file left in the guest, then its end. */
  async function job(l: Label, jobId: string, status: 'success' | 'failure') {
    const r = R[l];
    const created = await as(r).create(r.id, jobId);
    expect(created.status).toBe(201);
    const name = created.body.name as string;
    vm(l).files.set(JOB_FILE, 'secrets of the last job');
    expect((await as(r).finalize(name, status)).status).toBe(202);
    return name;
  }
  const canaryRow = async (name: string) =>
    (
      await c.ds.query(
        `SELECT canary_sha256 AS sha, verified, verify_detail AS detail FROM checkpoints WHERE name = $1`,
        [name],
      )
    )[0] as { sha: string | null; verified: boolean | null; detail: string | null };
  const snapshotCreates = (l: Label) =>
    pve.calls.filter((x) => x.method === 'POST' && x.path.endsWith(`/qemu/${vmid(l)}/snapshot`));

  it('golden: no snapshot of its own; success and failure both reset to the baseline, verified; the baseline stays', async () => {
    const r = R.golden;
    const before = sumOf(await scrape(c.worker.metricsUrl), 'e2epool_resets_total', {
      backend: 'proxmox',
      verified: 'true',
    });
    for (const [jobId, status] of [
      ['9101', 'success'],
      ['9102', 'failure'],
    ] as const) {
      const created = await as(r).create(r.id, jobId);
      const name = created.body.name as string;
      // The canary is in the guest before the create answered; only its hash is on the row.
      const nonce = vm('golden').files.get(CANARY);
      expect(nonce).toMatch(/^[0-9a-f]{64}$/);
      expect((await canaryRow(name)).sha).toBe(sha256(nonce!));
      expect(JSON.stringify(created.body)).not.toContain(nonce);
      vm('golden').files.set(JOB_FILE, 'secrets of the last job');
      await as(r).finalize(name, status);
      const done = await until(r, name, 'reset');
      expect(done).toMatchObject({
        finalize_status: status,
        verified: true,
        verify_detail: `canary gone and the VM descends from '${BASELINE}'`,
      });
      await runEnded(c, r.id);
      expect(vm('golden').files.has(JOB_FILE)).toBe(false);
      expect(vm('golden').files.has(CANARY)).toBe(false);
      expect(vm('golden').snapshots.map((s) => s.name)).toEqual([BASELINE]);
      expect(vm('golden').currentParent).toBe(BASELINE);
      const ops = (await operations(c.ds, name)).map((o) => o.operation);
      expect(ops).toEqual(expect.arrayContaining(['canary', 'rollback', 'verify_reset']));
      expect(ops).not.toContain('snapshot');
      expect(ops).not.toContain('delete_snapshot');
      // The nonce is in no log row.
      const logs = JSON.stringify(
        await c.ds.query(`SELECT * FROM operation_logs WHERE detail LIKE '%' || $1 || '%'`, [
          nonce,
        ]),
      );
      expect(logs).toBe('[]');
    }
    expect(snapshotCreates('golden')).toHaveLength(0);
    expect(gitlab.runner(gitlabRunner('golden'))).toMatchObject({ paused: false });
    const after = sumOf(await scrape(c.worker.metricsUrl), 'e2epool_resets_total', {
      backend: 'proxmox',
      verified: 'true',
    });
    expect(after).toBe(before + 2);
  });

  it('per-job snapshots with the default canary: verified before the snapshot goes', async () => {
    const r = R.perJob;
    const name = await job('perJob', '9201', 'failure');
    const done = await until(r, name, 'reset');
    expect(done).toMatchObject({ verified: true });
    expect(done.verify_detail).toMatch(/^canary gone and the VM descends from '/);
    await runEnded(c, r.id);
    expect(vm('perJob').files.has(JOB_FILE)).toBe(false);
    expect(vm('perJob').snapshots).toEqual([]);
    expect(snapshotCreates('perJob')).toHaveLength(1);
  });

  it('a silent rollback (the disk not restored) is caught: needs_attention, still paused, quarantined, next create 423', async () => {
    const r = R.silent;
    pve.failNext({ taskType: 'qmrollback' }, { kind: 'disk-not-restored' }, Infinity);
    const name = await job('silent', '9301', 'failure');
    const parked = await until(r, name, 'needs_attention');
    expect(parked).toMatchObject({ verified: false, finalize_status: 'failure' });
    expect(parked.verify_detail).toBe(
      `the canary ${CANARY} still holds this checkpoint's nonce after the rollback to '${BASELINE}': the disk did not go back`,
    );
    expect(vm('silent').files.get(JOB_FILE)).toBe('secrets of the last job');
    expect(gitlab.runner(gitlabRunner('silent'))).toMatchObject({ paused: true });
    expect((await admin()('GET', `/api/runners/${r.id}`)).body).toMatchObject({
      quarantined: true,
      quarantine_source: 'verification',
    });
    expect((await as(r).create(r.id, '9302')).status).toBe(423);
  });

  it('no guest agent: not verifiable (null), not quarantined, unpaused', async () => {
    const r = R.noAgent;
    const name = await job('noAgent', '9401', 'failure');
    const done = await until(r, name, 'reset');
    expect(done.verified).toBeNull();
    expect(done.verify_detail).toMatch(/no canary was written at the create/);
    await runEnded(c, r.id);
    expect(gitlab.runner(gitlabRunner('noAgent'))).toMatchObject({ paused: false });
    expect(vm('noAgent').files.has(JOB_FILE)).toBe(false);
  });

  it('`required` and the guest agent gone after the create: needs_attention, not quarantined, still paused', async () => {
    const r = R.agentGone;
    const created = await as(r).create(r.id, '9501');
    const name = created.body.name as string;
    vm('agentGone').guestAgent = false; // qemu-ga crashed
    await as(r).finalize(name, 'failure');
    const parked = await until(r, name, 'needs_attention');
    expect(parked.verified).toBeNull();
    expect(parked.verify_detail).toMatch(/^canary not readable \(/);
    const [row] = await c.ds.query(`SELECT error_detail FROM checkpoints WHERE name = $1`, [name]);
    expect(row.error_detail).toMatch(
      /^ResetNotVerified: not verifiable, and verify_reset is required/,
    );
    expect(gitlab.runner(gitlabRunner('agentGone'))).toMatchObject({ paused: true });
  });
});
