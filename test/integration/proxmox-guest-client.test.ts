import { ApplicationFailure } from '@temporalio/common';
import { agentOptionEnabled, ProxmoxClient } from '../../activities/proxmox/client';
import { failureTypeOf } from '../../common/fail';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * The guest side of the Proxmox client against the stand-in over real HTTP: the QEMU guest
 * agent calls the reset proof makes, and how their failures are classified ("cannot verify"
 * is GuestAgentUnavailable, never a result).
 */

const NODE = 'pve1';
const CANARY = '/var/lib/e2epool/canary';

let pve: ProxmoxStandIn;

function client(vmid: number, s = pve): ProxmoxClient {
  const [tokenId, tokenSecret] = [s.tokenId, s.tokenSecret];
  return new ProxmoxClient({
    baseUrl: s.url,
    node: NODE,
    vmid,
    tokenId,
    tokenSecret,
    timeoutMs: 5000,
  });
}

/** The failure type a rejected call carries, and whether Temporal would retry it. */
async function failureOf(
  p: Promise<unknown>,
): Promise<{ type?: string; retried: boolean; message: string }> {
  try {
    await p;
  } catch (err) {
    const app = err as ApplicationFailure;
    expect(app).toBeInstanceOf(ApplicationFailure);
    return { type: failureTypeOf(err), retried: !app.nonRetryable, message: app.message };
  }
  throw new Error('expected the call to fail');
}

async function waitTask(c: ProxmoxClient, upid: Promise<string>): Promise<void> {
  await c.waitTask(await upid, { timeoutMs: 5000, pollMs: 5 });
}

beforeEach(async () => {
  pve = await startProxmoxStandIn({ taskDurationMs: 5 });
});
afterEach(async () => {
  await pve.close();
});

describe('the guest agent through the Proxmox client', () => {
  it('guestPing answers; an agent that cannot be asked is GuestAgentUnavailable, not retried', async () => {
    pve.addVm(NODE, 500);
    pve.addVm(NODE, 501, { agent: null });
    pve.addVm(NODE, 502, { agent: '0' });
    pve.addVm(NODE, 503, { guestAgent: false });
    pve.addVm(NODE, 504, { status: 'stopped' });
    await expect(client(500).guestPing()).resolves.toBeUndefined();
    for (const [vmid, why] of [
      [501, 'No QEMU guest agent configured'],
      [502, 'QEMU guest agent is not enabled'],
      [503, 'QEMU guest agent is not running'],
      [504, 'VM 504 is not running'],
    ] as const) {
      for (const call of [
        client(vmid).guestPing(),
        client(vmid).guestFileRead(CANARY),
        client(vmid).guestFileWrite(CANARY, 'x'),
        client(vmid).guestExec(['true'], { timeoutMs: 1000 }),
      ]) {
        expect(await failureOf(call)).toEqual({
          type: 'GuestAgentUnavailable',
          retried: false,
          message: `Proxmox: the guest agent cannot be asked (${why})`,
        });
      }
    }
  });

  it('waitGuestAgent waits for qemu-ga to come up after a start, and gives up as GuestAgentUnavailable', async () => {
    pve.addVm(NODE, 505, { status: 'stopped', guestAgentBootMs: 800 });
    const c = client(505);
    await waitTask(c, c.start());
    expect(await failureOf(c.guestPing())).toMatchObject({ type: 'GuestAgentUnavailable' });
    await c.waitGuestAgent({ timeoutMs: 10_000, pollMs: 10 });
    expect(pve.guestAgentRunning(NODE, 505)).toBe(true);
    pve.vm(NODE, 505).guestAgent = false;
    expect(await failureOf(c.waitGuestAgent({ timeoutMs: 50, pollMs: 10 }))).toMatchObject({
      type: 'GuestAgentUnavailable',
      message: 'Proxmox: the guest agent cannot be asked (QEMU guest agent is not running)',
    });
    pve.setPrivileges(['VM.Audit']);
    // A refusal is not "not up yet": it is thrown at once.
    expect(await failureOf(c.waitGuestAgent({ timeoutMs: 60_000 }))).toMatchObject({
      type: 'PermanentFailure',
    });
  });

  it('guestInfo lists the enabled commands; a command disabled in the guest is GuestAgentUnavailable', async () => {
    pve.addVm(NODE, 506, { blockedRpcs: ['guest-file-write'] });
    const c = client(506);
    const info = await c.guestInfo();
    expect(info.version).toBe('8.2.2');
    expect(info.commands).toMatchObject({ 'guest-file-write': false, 'guest-file-read': true });
    expect(await failureOf(c.guestFileWrite(CANARY, 'x'))).toMatchObject({
      type: 'GuestAgentUnavailable',
      retried: false,
    });
    expect(await c.guestFileRead(CANARY)).toBeNull();
  });

  it('guestFileWrite and guestFileRead round-trip; a missing file reads as null; other refusals are failures', async () => {
    pve.addVm(NODE, 510);
    const c = client(510);
    expect(await c.guestFileRead(CANARY)).toBeNull();
    await c.guestFileWrite(CANARY, 'nonce = a+b/c&d%20');
    expect(pve.vm(NODE, 510).files.get(CANARY)).toBe('nonce = a+b/c&d%20');
    expect(await c.guestFileRead(CANARY)).toBe('nonce = a+b/c&d%20');
    // A missing directory is the guest's answer, not a passing fault.
    expect(await failureOf(c.guestFileWrite('/opt/none/canary', 'x'))).toMatchObject({
      type: 'PermanentFailure',
      retried: false,
      message: expect.stringMatching(/Failed to open file '\/opt\/none\/canary'/),
    });
    // A directory is not "no such file": reading it is a failure, not a verified absence.
    expect(await failureOf(c.guestFileRead('/var/lib/e2epool'))).toMatchObject({
      type: 'PermanentFailure',
    });
    expect(await failureOf(c.guestFileWrite(CANARY, 'x'.repeat(61441)))).toMatchObject({
      type: 'PermanentFailure',
      message: `guest file ${CANARY}: 61441 characters, Proxmox takes at most 61440`,
    });
    await c.guestFileWrite(CANARY, 'x'.repeat(61440));
  });

  it('guestExec runs argv, passes input, returns exit code and output, and times out as BackendTimeout', async () => {
    pve.addVm(NODE, 520);
    const c = client(520);
    expect(
      await c.guestExec(['sh', '-c', 'echo ready > /tmp/state && cat /tmp/state'], {
        timeoutMs: 5000,
        pollMs: 5,
      }),
    ).toEqual({ exitCode: 0, stdout: 'ready\n', stderr: '' });
    expect(await c.guestExec(['cat', '/tmp/none'], { timeoutMs: 5000, pollMs: 5 })).toEqual({
      exitCode: 1,
      stdout: '',
      stderr: 'cat: /tmp/none: No such file or directory\n',
    });
    expect(await c.guestExec(['sh'], { input: 'exit 4', timeoutMs: 5000, pollMs: 5 })).toEqual({
      exitCode: 4,
      stdout: '',
      stderr: '',
    });
    expect(await failureOf(c.guestExec(['no-such-tool'], { timeoutMs: 5000 }))).toMatchObject({
      type: 'PermanentFailure',
    });
    let polls = 0;
    await c.guestExec(['true'], { timeoutMs: 5000, pollMs: 5, onPoll: () => (polls += 1) });
    expect(polls).toBeGreaterThanOrEqual(1);
    const seen: string[][] = [];
    pve.setExecHandler(NODE, 520, (argv) => {
      seen.push(argv);
      return new Promise(() => {});
    });
    expect(
      await failureOf(
        c.guestExec(['/usr/bin/apt-get', '-y', 'upgrade'], { timeoutMs: 100, pollMs: 5 }),
      ),
    ).toEqual({
      type: 'BackendTimeout',
      retried: true,
      message: 'guest command "/usr/bin/apt-get" on VM 520 still running after 0s',
    });
    expect(seen).toEqual([['/usr/bin/apt-get', '-y', 'upgrade']]);
  });

  it('currentParent follows snapshots and rollbacks; vmAgentEnabled reads the agent option', async () => {
    pve.addVm(NODE, 530, { agent: 'enabled=1,fstrim_cloned_disks=1' });
    pve.addVm(NODE, 531, { agent: null, snapshots: [{ name: 'golden', description: '' }] });
    pve.addVm(NODE, 532, { agent: 'fstrim_cloned_disks=1,enabled=0' });
    const c = client(530);
    expect(await c.currentParent()).toBeNull();
    await waitTask(c, c.createSnapshot('first', 'one'));
    await waitTask(c, c.createSnapshot('second', 'two'));
    expect(await c.currentParent()).toBe('second');
    await waitTask(c, c.rollback('first'));
    expect(await c.currentParent()).toBe('first');
    expect(await client(531).currentParent()).toBe('golden');
    expect(await c.vmAgentEnabled()).toBe(true);
    expect(await client(531).vmAgentEnabled()).toBe(false);
    expect(await client(532).vmAgentEnabled()).toBe(false);
    expect(
      [1, '1', 'enabled=1', '1,type=virtio', '0', 'enabled=0', '', undefined, 'type=isa'].map(
        agentOptionEnabled,
      ),
    ).toEqual([true, true, true, true, false, false, false, false, false]);
  });

  it('a canary written after the restore point: gone after a real rollback, still there after a disk-not-restored one', async () => {
    pve.addVm(NODE, 540, { snapshots: [{ name: 'golden', description: '' }] });
    const c = client(540);
    const nonce = 'e2epool-canary 3f9a0c7e1b2d4a5f8e6c0b1a2d3e4f50';
    await c.guestFileWrite(CANARY, nonce);
    await waitTask(c, c.rollback('golden'));
    await waitTask(c, c.start());
    expect(await c.guestFileRead(CANARY)).toBeNull();
    expect(await c.currentParent()).toBe('golden');

    await c.guestFileWrite(CANARY, nonce);
    pve.failNext({ taskType: 'qmrollback' }, { kind: 'disk-not-restored' });
    await waitTask(c, c.rollback('golden'));
    await waitTask(c, c.start());
    expect(await c.currentParent()).toBe('golden');
    expect(await c.guestFileRead(CANARY)).toBe(nonce);
  });

  it('a token without the agent privileges is refused for good (PVE 8: VM.Monitor; PVE 9: VM.GuestAgent.*)', async () => {
    pve.addVm(NODE, 550);
    pve.setPrivileges(['VM.Audit']);
    expect(await failureOf(client(550).guestPing())).toEqual({
      type: 'PermanentFailure',
      retried: false,
      message: 'Proxmox denied permission: Permission check failed (/vms/550, VM.Monitor)',
    });
    const pve9 = await startProxmoxStandIn({ pveVersion: 9 });
    try {
      pve9.addVm(NODE, 551);
      pve9.setPrivileges(['VM.Monitor', 'VM.GuestAgent.FileRead']);
      expect(await client(551, pve9).guestFileRead(CANARY)).toBeNull();
      expect(await failureOf(client(551, pve9).guestFileWrite(CANARY, 'x'))).toMatchObject({
        type: 'PermanentFailure',
        message:
          'Proxmox denied permission: Permission check failed (/vms/551, VM.GuestAgent.FileWrite)',
      });
    } finally {
      await pve9.close();
    }
  });
});
