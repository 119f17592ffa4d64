import {
  PVE9_VM_ADMIN_PRIVILEGES,
  PVE_VM_ADMIN_PRIVILEGES,
  startProxmoxStandIn,
  type ProxmoxStandIn,
} from './proxmox';

/**
 * The Proxmox stand-in's guest side: the guest filesystem that snapshots keep and rollbacks
 * restore, the `agent` VM option, and the QEMU guest agent endpoints with PVE 8 and PVE 9
 * privileges (test/stand-ins/proxmox/guest.ts).
 */

const NODE = 'pve1';
const VMID = 100;
const CANARY = '/var/lib/e2epool/canary';

let pve: ProxmoxStandIn;

interface Reply {
  status: number;
  statusText: string;
  json: { data?: unknown; message?: string; errors?: Record<string, string> };
}

async function api(
  method: string,
  path: string,
  opts: { form?: Array<[string, string]>; query?: Record<string, string> } = {},
  s = pve,
): Promise<Reply> {
  const headers: Record<string, string> = {
    Authorization: `PVEAPIToken=${s.tokenId}=${s.tokenSecret}`,
  };
  let body: string | undefined;
  if (opts.form) {
    body = new URLSearchParams(opts.form).toString();
    headers['Content-Type'] = 'application/x-www-form-urlencoded';
  }
  const qs = opts.query ? `?${new URLSearchParams(opts.query).toString()}` : '';
  const res = await fetch(`${s.url}/api2/json${path}${qs}`, { method, headers, body });
  const text = await res.text();
  return {
    status: res.status,
    statusText: res.statusText,
    json: text ? (JSON.parse(text) as Reply['json']) : {},
  };
}

const vmPath = (rest: string, vmid = VMID): string => `/nodes/${NODE}/qemu/${vmid}${rest}`;

async function task(method: string, path: string, form: Array<[string, string]> = []) {
  const r = await api(method, vmPath(path), { form });
  expect(r.status).toBe(200);
  const upid = r.json.data as string;
  const deadline = Date.now() + 3000;
  for (;;) {
    const st = await api('GET', `/nodes/${NODE}/tasks/${encodeURIComponent(upid)}/status`);
    const data = st.json.data as { status: string; exitstatus?: string };
    if (data.status === 'stopped') return data.exitstatus;
    if (Date.now() > deadline) throw new Error(`task ${upid} still running`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const write = (file: string, content: string, extra: Array<[string, string]> = []) =>
  api('POST', vmPath('/agent/file-write'), {
    form: [['file', file], ['content', content], ...extra],
  });
const read = (file: string) => api('GET', vmPath('/agent/file-read'), { query: { file } });
const startExec = (argv: string[], input?: string) =>
  api('POST', vmPath('/agent/exec'), {
    form: [
      ...argv.map((a): [string, string] => ['command', a]),
      ...(input === undefined ? [] : [['input-data', input] as [string, string]]),
    ],
  });
const execStatus = (pid: number) =>
  api('GET', vmPath('/agent/exec-status'), { query: { pid: String(pid) } });

/** Runs argv through agent/exec and polls exec-status until it has exited. */
async function run(argv: string[], input?: string): Promise<Record<string, unknown>> {
  const started = await startExec(argv, input);
  expect(started.status).toBe(200);
  const { pid } = started.json.data as { pid: number };
  for (;;) {
    const st = await execStatus(pid);
    expect(st.status).toBe(200);
    const data = st.json.data as Record<string, unknown>;
    if (data.exited === 1) return data;
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function currentParent(): Promise<unknown> {
  const r = await api('GET', vmPath('/snapshot'));
  return (r.json.data as Array<{ name: string; parent?: string }>).find((s) => s.name === 'current')
    ?.parent;
}

beforeEach(async () => {
  pve = await startProxmoxStandIn();
  pve.addVm(NODE, VMID, {
    status: 'running',
    snapshots: [{ name: 'base', description: 'golden' }],
    files: { '/etc/hostname': 'ci-runner\n' },
  });
});

afterEach(async () => {
  await pve.close();
});

describe('the guest filesystem is part of the disk', () => {
  it('a file written after a snapshot is gone after rolling back to it; current.parent follows', async () => {
    expect(await currentParent()).toBe('base');
    expect((await write(CANARY, 'nonce-1')).json).toEqual({ data: null });
    expect(pve.vm(NODE, VMID).files.get(CANARY)).toBe('nonce-1');
    expect(await task('POST', '/snapshot', [['snapname', 'job1']])).toBe('OK');
    expect(await currentParent()).toBe('job1');
    pve.vm(NODE, VMID).files.set('/tmp/after', 'x');
    pve.vm(NODE, VMID).files.delete('/etc/hostname');

    expect(await task('POST', '/snapshot/job1/rollback', [['start', '1']])).toBe('OK');
    expect(Object.fromEntries(pve.vm(NODE, VMID).files)).toEqual({
      '/etc/hostname': 'ci-runner\n',
      [CANARY]: 'nonce-1',
    });
    expect(await task('POST', '/snapshot/base/rollback', [['start', '1']])).toBe('OK');
    expect(await currentParent()).toBe('base');
    expect(Object.fromEntries(pve.vm(NODE, VMID).files)).toEqual({
      '/etc/hostname': 'ci-runner\n',
    });
    // Deleting a snapshot does not touch the live disk; rolling back to it then fails.
    expect(await task('DELETE', '/snapshot/job1')).toBe('OK');
    expect(pve.vm(NODE, VMID).files.get('/etc/hostname')).toBe('ci-runner\n');
    expect(await task('POST', '/snapshot/job1/rollback')).toBe("snapshot 'job1' does not exist");
  });

  it('fault disk-not-restored: the rollback task is OK, current.parent moves, the disk keeps what it held', async () => {
    await write(CANARY, 'nonce-2');
    pve.failNext({ taskType: 'qmrollback' }, { kind: 'disk-not-restored' });
    expect(await task('POST', '/snapshot/base/rollback', [['start', '1']])).toBe('OK');
    expect(await currentParent()).toBe('base');
    expect(pve.vm(NODE, VMID).files.get(CANARY)).toBe('nonce-2');
    expect(pve.vm(NODE, VMID).rollbacks).toBe(1);

    expect(await task('POST', '/snapshot', [['snapname', 'job2']])).toBe('OK');
    pve.failNext({ taskType: 'qmrollback' }, { kind: 'disk-not-restored', keepParent: true });
    expect(await task('POST', '/snapshot/base/rollback', [['start', '1']])).toBe('OK');
    expect(await currentParent()).toBe('job2');
    expect(pve.vm(NODE, VMID).files.get(CANARY)).toBe('nonce-2');
    // The fault is used up: the next rollback restores.
    expect(await task('POST', '/snapshot/base/rollback', [['start', '1']])).toBe('OK');
    expect(pve.vm(NODE, VMID).files.has(CANARY)).toBe(false);
  });
});

describe('the agent VM option', () => {
  it("GET .../config shows it as set ('1' by default); status/current has agent: 1 only when enabled", async () => {
    pve.addVm(NODE, 101, { agent: 'enabled=1,fstrim_cloned_disks=1' });
    pve.addVm(NODE, 102, { agent: null });
    pve.addVm(NODE, 103, { agent: '0' });
    const config = async (vmid: number) =>
      (await api('GET', vmPath('/config', vmid))).json.data as Record<string, unknown>;
    expect((await config(VMID)).agent).toBe('1');
    expect((await config(101)).agent).toBe('enabled=1,fstrim_cloned_disks=1');
    expect(await config(102)).not.toHaveProperty('agent');
    expect((await config(103)).agent).toBe('0');
    expect(await config(VMID)).toHaveProperty('digest');
    const status = async (vmid: number) =>
      (await api('GET', vmPath('/status/current', vmid))).json.data as Record<string, unknown>;
    expect((await status(101)).agent).toBe(1);
    expect(await status(103)).not.toHaveProperty('agent');
  });

  it('without an enabled option, a running VM or a running qemu-ga, every agent call is HTTP 500', async () => {
    pve.addVm(NODE, 101, { agent: null });
    pve.addVm(NODE, 102, { agent: '0' });
    pve.addVm(NODE, 103, { guestAgent: false });
    pve.addVm(NODE, 104, { status: 'stopped' });
    const ping = (vmid: number) => api('POST', vmPath('/agent/ping', vmid));
    expect((await ping(VMID)).json).toEqual({ data: {} });
    expect(pve.guestAgentRunning(NODE, VMID)).toBe(true);
    for (const [vmid, message] of [
      [101, 'No QEMU guest agent configured'],
      [102, 'QEMU guest agent is not enabled'],
      [103, 'QEMU guest agent is not running'],
      [104, 'VM 104 is not running'],
    ] as const) {
      const r = await ping(vmid);
      expect([r.status, r.statusText, r.json]).toEqual([
        500,
        message,
        { data: null, message: `${message}\n` },
      ]);
      expect(pve.guestAgentRunning(NODE, vmid)).toBe(false);
      const fileRead = await api('GET', vmPath('/agent/file-read', vmid), {
        query: { file: CANARY },
      });
      expect([fileRead.status, fileRead.statusText]).toEqual([500, message]);
    }
    // The agent stops with the VM: a rollback hard-stops it.
    expect(await task('POST', '/snapshot/base/rollback')).toBe('OK');
    expect(pve.guestAgentRunning(NODE, VMID)).toBe(false);
    expect((await ping(VMID)).statusText).toBe(`VM ${VMID} is not running`);
    pve.vm(NODE, VMID).status = 'running';
    pve.vm(NODE, VMID).guestAgent = false;
    expect((await ping(VMID)).statusText).toBe('QEMU guest agent is not running');
  });
});

describe('agent/file-write and agent/file-read', () => {
  it('round-trips content; a missing file is HTTP 500 naming the path and No such file or directory', async () => {
    expect((await write(CANARY, 'e2epool canary 1f2e')).status).toBe(200);
    expect((await read(CANARY)).json).toEqual({
      data: { content: 'e2epool canary 1f2e', 'bytes-read': 19 },
    });
    const missing = await read('/var/lib/e2epool/other');
    const message =
      "VM 100 qmp command 'guest-file-open' failed - Failed to open file '/var/lib/e2epool/other' (mode: 'r'): No such file or directory";
    expect([missing.status, missing.statusText, missing.json]).toEqual([
      500,
      message,
      { data: null, message: `${message}\n` },
    ]);
  });

  it('encode=0 takes base64; content is at most 61440 characters; the directory must exist', async () => {
    await write('/tmp/b64', Buffer.from('raw bytes').toString('base64'), [['encode', '0']]);
    expect(pve.vm(NODE, VMID).files.get('/tmp/b64')).toBe('raw bytes');
    const bad = await write('/tmp/b64', 'not base64!', [['encode', '0']]);
    expect([bad.status, bad.statusText]).toEqual([
      500,
      "VM 100 qmp command 'guest-file-write' failed - Invalid Base64 data",
    ]);
    expect((await write('/tmp/max', 'x'.repeat(61440))).status).toBe(200);
    const long = await write('/tmp/long', 'x'.repeat(61441));
    expect([long.status, long.json.errors]).toEqual([
      400,
      { content: 'value may only be 61440 characters long' },
    ]);
    const noDir = await write('/opt/none/canary', 'x');
    expect([noDir.status, noDir.statusText]).toEqual([
      500,
      "VM 100 qmp command 'guest-file-open' failed - Failed to open file '/opt/none/canary' (mode: 'wb'): No such file or directory",
    ]);
    const missingFile = await api('GET', vmPath('/agent/file-read'));
    expect(missingFile.json.errors).toEqual({ file: 'property is missing and it is not optional' });
  });
});

describe('agent/exec and agent/exec-status', () => {
  it('the default interpreter acts on the guest filesystem', async () => {
    expect(await run(['sh', '-c', `echo 'hello world' > /tmp/x && cat /tmp/x`])).toEqual({
      exited: 1,
      exitcode: 0,
      'out-data': 'hello world\n',
    });
    expect(pve.vm(NODE, VMID).files.get('/tmp/x')).toBe('hello world\n');
    expect(await run(['rm', '-f', '/tmp/x'])).toEqual({ exited: 1, exitcode: 0 });
    expect(pve.vm(NODE, VMID).files.has('/tmp/x')).toBe(false);
    expect(await run(['cat', '/tmp/x'])).toEqual({
      exited: 1,
      exitcode: 1,
      'err-data': 'cat: /tmp/x: No such file or directory\n',
    });
    expect(await run(['/bin/true'])).toEqual({ exited: 1, exitcode: 0 });
    expect(await run(['false'])).toEqual({ exited: 1, exitcode: 1 });
    expect(await run(['sh'], 'mkdir -p /opt/app; echo v2 > /opt/app/version; exit 3')).toEqual({
      exited: 1,
      exitcode: 3,
    });
    expect(pve.vm(NODE, VMID).files.get('/opt/app/version')).toBe('v2\n');
    expect(await run(['sh', '-c', 'apt-get upgrade'])).toMatchObject({
      exitcode: 127,
      'err-data': 'sh: 1: apt-get: not found\n',
    });
    const noProgram = await startExec(['apt-get', 'upgrade']);
    // The reason phrase carries only Latin-1 (the quotes become '?'); the JSON message is whole.
    expect([noProgram.status, noProgram.json.message]).toEqual([
      500,
      "VM 100 qmp command 'guest-exec' failed - Failed to execute child process “apt-get” (No such file or directory)\n",
    ]);
  });

  it('a handler the test sets runs the commands; exited stays 0 until it is done; a reported pid is forgotten', async () => {
    let finish!: (r: { exitCode: number; stdout?: string }) => void;
    const seen: Array<{ argv: string[]; input?: string }> = [];
    pve.setExecHandler(NODE, VMID, (argv, ctx) => {
      seen.push({ argv, input: ctx.input });
      ctx.files.set('/tmp/updated', 'yes');
      return new Promise((resolve) => (finish = resolve));
    });
    const started = await startExec(['/usr/local/bin/update', '--all'], 'stdin text');
    const { pid } = started.json.data as { pid: number };
    expect(seen).toEqual([{ argv: ['/usr/local/bin/update', '--all'], input: 'stdin text' }]);
    expect((await execStatus(pid)).json).toEqual({ data: { exited: 0 } });
    finish({ exitCode: 0, stdout: 'done' });
    await new Promise((r) => setImmediate(r));
    expect((await execStatus(pid)).json).toEqual({
      data: { exited: 1, exitcode: 0, 'out-data': 'done' },
    });
    const again = await execStatus(pid);
    expect([again.status, again.statusText]).toEqual([
      500,
      "VM 100 qmp command 'guest-exec-status' failed - Invalid parameter 'pid'",
    ]);
    expect(pve.vm(NODE, VMID).files.get('/tmp/updated')).toBe('yes');
    pve.setExecHandler(NODE, VMID, undefined);
    expect(await run(['true'])).toEqual({ exited: 1, exitcode: 0 });
  });
});

describe('agent/info and commands disabled in the guest', () => {
  it('GET agent/info lists the commands qemu-ga offers; a blocked one fails its endpoints', async () => {
    pve.addVm(NODE, 101, { blockedRpcs: ['guest-exec', 'guest-file-write'] });
    const res = await api('GET', vmPath('/agent/info', 101));
    const result = (
      res.json.data as {
        result: { version: string; supported_commands: Array<{ name: string; enabled: boolean }> };
      }
    ).result;
    expect(result.version).toBe('8.2.2');
    const enabled = Object.fromEntries(result.supported_commands.map((c) => [c.name, c.enabled]));
    expect(enabled).toMatchObject({
      'guest-exec': false,
      'guest-file-write': false,
      'guest-file-open': true,
      'guest-file-read': true,
    });
    const w = await api('POST', vmPath('/agent/file-write', 101), {
      form: [
        ['file', CANARY],
        ['content', 'x'],
      ],
    });
    expect([w.status, w.statusText]).toEqual([
      500,
      "VM 101 qmp command 'guest-file-write' failed - The command guest-file-write has been disabled for this instance",
    ]);
    const r = await api('GET', vmPath('/agent/file-read', 101), { query: { file: CANARY } });
    expect(r.statusText).toMatch(/No such file or directory$/);
    const x = await api('POST', vmPath('/agent/exec', 101), { form: [['command', 'true']] });
    expect(x.statusText).toBe(
      "VM 101 qmp command 'guest-exec' failed - The command guest-exec has been disabled for this instance",
    );
    expect((await api('GET', vmPath('/agent/info'))).status).toBe(200);
  });
});

describe('guest agent privileges', () => {
  it('PVE 8: every agent call needs VM.Monitor', async () => {
    pve.setPrivileges(PVE_VM_ADMIN_PRIVILEGES.filter((p) => p !== 'VM.Monitor'));
    for (const r of [
      await api('POST', vmPath('/agent/ping')),
      await write(CANARY, 'x'),
      await read(CANARY),
      await startExec(['true']),
      await execStatus(1),
    ]) {
      expect([r.status, r.statusText]).toEqual([
        403,
        `Permission check failed (/vms/${VMID}, VM.Monitor)`,
      ]);
    }
    pve.setPrivileges(['VM.Monitor']);
    expect((await api('POST', vmPath('/agent/ping'))).status).toBe(200);
  });

  it('PVE 9: VM.Monitor is gone; ping, file-read, file-write and exec each need their VM.GuestAgent privilege', async () => {
    const pve9 = await startProxmoxStandIn({ pveVersion: 9 });
    try {
      pve9.addVm(NODE, VMID);
      expect(pve9.pveVersion).toBe(9);
      expect(
        ((await api('GET', '/version', {}, pve9)).json.data as { release: string }).release,
      ).toBe('9.0');
      const perms = await api('GET', '/access/permissions', { query: { path: '/vms' } }, pve9);
      expect(Object.keys((perms.json.data as Record<string, object>)['/vms']!)).toEqual(
        PVE9_VM_ADMIN_PRIVILEGES,
      );
      const calls: Array<[string, () => Promise<Reply>]> = [
        ['VM.GuestAgent.Audit', () => api('POST', vmPath('/agent/ping'), {}, pve9)],
        [
          'VM.GuestAgent.FileWrite',
          () =>
            api(
              'POST',
              vmPath('/agent/file-write'),
              {
                form: [
                  ['file', CANARY],
                  ['content', 'x'],
                ],
              },
              pve9,
            ),
        ],
        [
          'VM.GuestAgent.FileRead',
          () => api('GET', vmPath('/agent/file-read'), { query: { file: CANARY } }, pve9),
        ],
        [
          'VM.GuestAgent.Unrestricted',
          () => api('POST', vmPath('/agent/exec'), { form: [['command', 'true']] }, pve9),
        ],
      ];
      for (const [priv, call] of calls) {
        pve9.setPrivileges(['VM.Monitor', 'VM.Audit']);
        const denied = await call();
        expect([denied.status, denied.statusText]).toEqual([
          403,
          `Permission check failed (/vms/${VMID}, ${priv})`,
        ]);
        pve9.setPrivileges([priv]);
        expect((await call()).status).toBe(200);
      }
    } finally {
      await pve9.close();
    }
  });
});
