import { request as httpRequest } from 'node:http';
import { startProxmoxStandIn, type ProxmoxStandIn } from './proxmox';

/**
 * The Proxmox stand-in must behave like pveproxy as described in
 * /work/shared/reference/external-apis.md section 1; these tests pin that behaviour.
 */

const NODE = 'pve1';
const VMID = 100;
const UPID_RE =
  /^UPID:([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?):([0-9A-F]{8}):([0-9A-F]{8,9}):([0-9A-F]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$/;

interface Reply {
  status: number;
  statusText: string;
  headers: Headers;
  text: string;
  json: { data?: unknown; message?: string; errors?: Record<string, string>; total?: number };
}

interface CallOpts {
  form?: Record<string, string>;
  json?: unknown;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  auth?: string | null;
}

let pve: ProxmoxStandIn;

function authHeader(s: ProxmoxStandIn = pve): string {
  return `PVEAPIToken=${s.tokenId}=${s.tokenSecret}`;
}

async function api(method: string, path: string, opts: CallOpts = {}, s = pve): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers };
  const auth = opts.auth === undefined ? authHeader(s) : opts.auth;
  if (auth !== null) headers.Authorization = auth;
  let body: string | undefined;
  if (opts.form) {
    body = new URLSearchParams(opts.form).toString();
    headers['Content-Type'] = 'application/x-www-form-urlencoded';
  } else if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers['Content-Type'] = 'application/json';
  }
  const qs = opts.query ? `?${new URLSearchParams(opts.query).toString()}` : '';
  const res = await fetch(`${s.url}/api2/json${path}${qs}`, { method, headers, body });
  const text = await res.text();
  return {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
    text,
    json: text ? (JSON.parse(text) as Reply['json']) : {},
  };
}

/** A raw request, for what fetch refuses to send (GET/DELETE bodies, chunked uploads). */
function raw(
  method: string,
  path: string,
  opts: { body?: string; headers?: Record<string, string>; chunked?: boolean } = {},
): Promise<{ status: number; statusMessage: string; body: string }> {
  const url = new URL(`${pve.url}/api2/json${path}`);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { Authorization: authHeader(), ...opts.headers };
    if (opts.body !== undefined && !opts.chunked) {
      headers['Content-Length'] = String(Buffer.byteLength(opts.body));
    }
    const req = httpRequest(
      { host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            statusMessage: res.statusMessage ?? '',
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

interface TaskStatus {
  upid: string;
  node: string;
  status: 'running' | 'stopped';
  exitstatus?: string;
  type: string;
  id: string;
  user: string;
  tokenid: string;
  pid: number;
  pstart: number;
  starttime: number;
}

async function taskStatus(upid: string, s = pve): Promise<TaskStatus> {
  const node = upid.split(':')[1]!;
  const r = await api('GET', `/nodes/${node}/tasks/${encodeURIComponent(upid)}/status`, {}, s);
  expect(r.status).toBe(200);
  return r.json.data as TaskStatus;
}

/** Polls the task the way clients do, until it has stopped. */
async function waitTask(upid: string, s = pve): Promise<TaskStatus> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const st = await taskStatus(upid, s);
    if (st.status === 'stopped') return st;
    if (Date.now() > deadline) throw new Error(`task ${upid} still running`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function mutate(method: string, path: string, opts: CallOpts = {}): Promise<string> {
  const r = await api(method, path, opts);
  expect(r.status).toBe(200);
  const upid = r.json.data as string;
  expect(upid).toMatch(UPID_RE);
  return upid;
}

const vmPath = (rest: string, vmid = VMID, node = NODE): string =>
  `/nodes/${node}/qemu/${vmid}${rest}`;

async function snapshotList(): Promise<Array<Record<string, unknown>>> {
  const r = await api('GET', vmPath('/snapshot'));
  expect(r.status).toBe(200);
  return r.json.data as Array<Record<string, unknown>>;
}

async function statusCurrent(): Promise<Record<string, unknown>> {
  const r = await api('GET', vmPath('/status/current'));
  expect(r.status).toBe(200);
  return r.json.data as Record<string, unknown>;
}

beforeEach(async () => {
  pve = await startProxmoxStandIn();
  pve.addVm(NODE, VMID, {
    status: 'running',
    snapshots: [{ name: 'base', description: 'golden' }],
  });
});

afterEach(async () => {
  await pve.close();
});

describe('authentication', () => {
  it('answers 401 "No ticket" with an empty body when no credentials are sent', async () => {
    const r = await api('GET', vmPath('/status/current'), { auth: null });
    expect(r.status).toBe(401);
    expect(r.statusText).toBe('No ticket');
    expect(r.text).toBe('');
    expect(r.headers.get('connection')).toBe('close');
  });

  it('answers 401 "Authentication failed!" for a wrong secret, a wrong token id or a ticket', async () => {
    for (const auth of [
      `PVEAPIToken=${pve.tokenId}=00000000-0000-0000-0000-000000000000`,
      `PVEAPIToken=other@pve!e2epool=${pve.tokenSecret}`,
      'PVEAuthCookie=PVE:root@pam:4EEC61E2::sig',
    ]) {
      const r = await api('GET', vmPath('/status/current'), { auth });
      expect([r.status, r.statusText, r.text]).toEqual([401, 'Authentication failed!', '']);
    }
  });

  it('accepts a space after PVEAPIToken and a URI-escaped value', async () => {
    const spaced = await api('GET', vmPath('/status/current'), {
      auth: `PVEAPIToken ${pve.tokenId}=${pve.tokenSecret}`,
    });
    expect(spaced.status).toBe(200);
    const escaped = await api('GET', vmPath('/status/current'), {
      auth: `PVEAPIToken=${encodeURIComponent(pve.tokenId)}=${pve.tokenSecret}`,
    });
    expect(escaped.status).toBe(200);
  });

  it('splits token id and secret on the last "="', async () => {
    const s = await startProxmoxStandIn({ tokenId: 'ci@pve!ctl', tokenSecret: 'a=b' });
    try {
      const r = await api('GET', '/version', { auth: 'PVEAPIToken=ci@pve!ctl=a=b' }, s);
      // "ci@pve!ctl=a" + "b" is not our token: the last '=' separates the secret.
      expect(r.status).toBe(401);
    } finally {
      await s.close();
    }
  });

  it('delays 401s by authFailureDelayMs', async () => {
    const s = await startProxmoxStandIn({ authFailureDelayMs: 150 });
    try {
      const t0 = Date.now();
      const r = await api('GET', '/version', { auth: 'PVEAPIToken=x@pve!y=z' }, s);
      expect(r.status).toBe(401);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    } finally {
      await s.close();
    }
  });
});

describe('envelope and errors', () => {
  it('wraps results in {"data": ...} with the pveproxy content type', async () => {
    const r = await api('GET', '/version');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/json;charset=UTF-8');
    expect(r.headers.get('server')).toBe('pve-api-daemon/3.0');
    expect(r.json).toEqual({ data: expect.objectContaining({ release: expect.any(String) }) });
  });

  it('answers 501 for an unknown path or method, naming it without the /api2/json prefix', async () => {
    const r = await api('GET', '/nodes/pve1/bogus');
    expect(r.status).toBe(501);
    expect(r.statusText).toBe("Method 'GET /nodes/pve1/bogus' not implemented");
    expect(r.json).toEqual({
      data: null,
      message: "Method 'GET /nodes/pve1/bogus' not implemented",
    });
    const put = await api('PUT', vmPath('/snapshot'));
    expect(put.statusText).toBe(`Method 'PUT /nodes/pve1/qemu/100/snapshot' not implemented`);
  });

  it('answers 500 "Configuration file ... does not exist" for an unknown VM or one on another node', async () => {
    const unknown = await api('GET', vmPath('/status/current', 999));
    expect(unknown.status).toBe(500);
    expect(unknown.statusText).toBe(
      "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist",
    );
    expect(unknown.json).toEqual({
      data: null,
      message: "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist\n",
    });
    const elsewhere = await api('POST', vmPath('/snapshot', VMID, 'pve2'), {
      form: { snapname: 'x1' },
    });
    expect(elsewhere.status).toBe(500);
    expect(elsewhere.statusText).toBe(
      "Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist",
    );
  });

  it('rejects a body on DELETE and GET with 501 and no content', async () => {
    const del = await raw('DELETE', vmPath('/snapshot/base'), {
      body: 'force=1',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect([del.status, del.statusMessage, del.body]).toEqual([
      501,
      "Unexpected content for method 'DELETE'",
      '',
    ]);
    const get = await raw('GET', vmPath('/snapshot'), { body: '{}' });
    expect(get.statusMessage).toBe("Unexpected content for method 'GET'");
    expect(pve.vm(NODE, VMID).snapshots.map((s) => s.name)).toEqual(['base']);
  });

  it('rejects chunked uploads and content types other than form and JSON', async () => {
    const chunked = await raw('POST', vmPath('/snapshot'), {
      body: 'snapname=x1',
      chunked: true,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect([chunked.status, chunked.statusMessage]).toEqual([
      501,
      'chunked transfer encoding not supported',
    ]);
    const text = await raw('POST', vmPath('/snapshot'), {
      body: 'snapname=x1',
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
    });
    expect(text.status).toBe(506);
  });

  it('gzips bodies over 1 KiB for clients that accept it', async () => {
    pve.addVm(NODE, 300, {
      snapshots: Array.from({ length: 20 }, (_, i) => ({ name: `snap${i}`, description: 'x' })),
    });
    const r = await api('GET', '/nodes/pve1/qemu/300/snapshot', {
      headers: { 'Accept-Encoding': 'gzip' },
    });
    expect(r.headers.get('content-encoding')).toBe('gzip');
    expect(r.json.data).toHaveLength(21);
  });

  it('rejects parameters the endpoint does not define', async () => {
    const r = await api('GET', vmPath('/status/current'), { query: { full: '1' } });
    expect(r.status).toBe(400);
    expect(r.json.errors).toEqual({
      full: 'property is not defined in schema and the schema does not allow additional properties',
    });
  });
});

describe('parameter validation', () => {
  it.each([
    ['a.b', "invalid format - invalid configuration ID 'a.b'\n"],
    ['1abc', "invalid format - invalid configuration ID '1abc'\n"],
    ['a', "invalid format - invalid configuration ID 'a'\n"],
    ['has space', "invalid format - invalid configuration ID 'has space'\n"],
    ['a'.repeat(41), 'value may only be 40 characters long'],
  ])('rejects snapname %j with 400', async (snapname, message) => {
    const r = await api('POST', vmPath('/snapshot'), { form: { snapname } });
    expect(r.status).toBe(400);
    expect(r.statusText).toBe('Parameter verification failed.');
    expect(r.json).toEqual({
      data: null,
      message: 'Parameter verification failed.\n',
      errors: { snapname: message },
    });
  });

  it('checks the format before the length, and path segments too', async () => {
    const long = await api('POST', vmPath('/snapshot'), {
      form: { snapname: `x.${'a'.repeat(45)}` },
    });
    expect(long.json.errors?.snapname).toMatch(/^invalid format/);
    const del = await api('DELETE', vmPath('/snapshot/a.b'));
    expect(del.json.errors).toEqual({
      snapname: "invalid format - invalid configuration ID 'a.b'\n",
    });
  });

  it('accepts 40 characters, and case-insensitive names with - and _', async () => {
    for (const snapname of ['a'.repeat(40), 'Ab_c-1']) {
      const upid = await mutate('POST', vmPath('/snapshot'), { form: { snapname } });
      expect((await waitTask(upid)).exitstatus).toBe('OK');
    }
  });

  it('requires snapname', async () => {
    const r = await api('POST', vmPath('/snapshot'), { form: { description: 'x' } });
    expect(r.json.errors).toEqual({ snapname: 'property is missing and it is not optional' });
  });

  it('refuses the reserved names current and pending with 500', async () => {
    const current = await api('POST', vmPath('/snapshot'), { form: { snapname: 'current' } });
    expect([current.status, current.statusText]).toEqual([
      500,
      "unable to use snapshot name 'current' (reserved name)",
    ]);
    const pending = await api('POST', vmPath('/snapshot'), { form: { snapname: 'PENDING' } });
    expect([pending.status, pending.statusText]).toEqual([
      500,
      "unable to use snapshot name 'pending' (reserved name)",
    ]);
  });

  it('accepts only 1/0 as form or query booleans, and JSON true/false', async () => {
    const bad = await api('POST', vmPath('/snapshot'), {
      form: { snapname: 'x1', vmstate: 'true' },
    });
    expect(bad.status).toBe(400);
    expect(bad.json.errors).toEqual({ vmstate: "type check ('boolean') failed - got 'true'" });
    const badQuery = await api('DELETE', vmPath('/snapshot/base'), { query: { force: 'yes' } });
    expect(badQuery.json.errors).toEqual({ force: "type check ('boolean') failed - got 'yes'" });

    const ok = await mutate('POST', vmPath('/snapshot'), {
      form: { snapname: 'x1', vmstate: '1' },
    });
    expect((await waitTask(ok)).exitstatus).toBe('OK');
    const json = await mutate('POST', vmPath('/snapshot'), {
      json: { snapname: 'x2', vmstate: true },
    });
    expect((await waitTask(json)).exitstatus).toBe('OK');
    expect(pve.vm(NODE, VMID).snapshots.find((s) => s.name === 'x1')?.vmstate).toBe(1);
  });

  it('refuses root-only options for a token', async () => {
    const r = await api('POST', vmPath('/status/stop'), { form: { skiplock: '1' } });
    expect(r.status).toBe(400);
    expect(r.json.errors).toEqual({ skiplock: 'Only root may use this option.' });
  });
});

describe('privileges', () => {
  it('checks the privilege of each call on /vms/{vmid} before handling it: 403 naming path and privilege', async () => {
    pve.setPrivileges(['VM.Audit', 'VM.Snapshot', 'VM.Snapshot.Rollback']);
    const stop = await api('POST', `/nodes/${NODE}/qemu/${VMID}/status/stop`);
    expect([stop.status, stop.statusText, stop.json]).toEqual([
      403,
      `Permission check failed (/vms/${VMID}, VM.PowerMgmt)`,
      { data: null, message: `Permission check failed (/vms/${VMID}, VM.PowerMgmt)\n` },
    ]);
    expect(pve.vm(NODE, VMID).stops).toBe(0);
    expect((await api('GET', `/nodes/${NODE}/qemu/${VMID}/status/current`)).status).toBe(200);
    pve.setPrivileges(['VM.Audit']);
    const snap = await api('POST', `/nodes/${NODE}/qemu/${VMID}/snapshot`, {
      form: { snapname: 'x1' },
    });
    expect([snap.status, snap.statusText]).toEqual([
      403,
      `Permission check failed (/vms/${VMID}, VM.Snapshot)`,
    ]);
    const rb = await api('POST', `/nodes/${NODE}/qemu/${VMID}/snapshot/x1/rollback`);
    expect(rb.statusText).toBe(
      `Permission check failed (/vms/${VMID}, VM.Snapshot|VM.Snapshot.Rollback)`,
    );
    pve.setPrivileges([]);
    expect((await api('GET', `/nodes/${NODE}/qemu/${VMID}/snapshot`)).status).toBe(403);
  });

  it("GET /access/permissions: the token's own privileges per path, propagate flag as the value", async () => {
    pve.setPrivileges(['VM.Audit', 'VM.PowerMgmt']);
    const one = await api('GET', '/access/permissions', { query: { path: `/vms/${VMID}` } });
    expect(one.status).toBe(200);
    expect(one.json.data).toEqual({ [`/vms/${VMID}`]: { 'VM.Audit': 1, 'VM.PowerMgmt': 1 } });
    const root = await api('GET', '/access/permissions', { query: { path: '/' } });
    expect(root.json.data).toEqual({ '/': {} });
    const tree = await api('GET', '/access/permissions');
    expect(tree.json.data).toEqual({ '/vms': { 'VM.Audit': 1, 'VM.PowerMgmt': 1 } });
    const self = await api('GET', '/access/permissions', { query: { userid: pve.tokenId } });
    expect(self.status).toBe(200);
    const other = await api('GET', '/access/permissions', { query: { userid: 'root@pam' } });
    expect([other.status, other.statusText]).toEqual([
      403,
      'Permission check failed (/access, Sys.Audit)',
    ]);
  });
});

describe('asynchronous tasks', () => {
  it('returns a UPID at once; the task runs, then stops with OK and its effect', async () => {
    // Held running (a task lasts 30 ms: a loaded machine could not look at it in time), then let go.
    pve.failNext({ taskType: 'qmsnapshot' }, { kind: 'hang' });
    const upid = await mutate('POST', vmPath('/snapshot'), {
      form: { snapname: 'clean', description: 'before job 7' },
    });
    // UPID:node:pid:pstart:starttime:type:id:user: (9 fields, trailing colon)
    const fields = upid.split(':');
    expect(fields).toHaveLength(9);
    expect(fields[8]).toBe('');
    expect([fields[1], fields[5], fields[6], fields[7]]).toEqual([
      NODE,
      'qmsnapshot',
      '100',
      pve.tokenId,
    ]);

    const running = await taskStatus(upid);
    expect(running).toMatchObject({
      upid,
      node: NODE,
      status: 'running',
      type: 'qmsnapshot',
      id: '100',
      user: 'ci@pve',
      tokenid: 'e2epool',
    });
    expect(running).not.toHaveProperty('exitstatus');
    expect((await statusCurrent()).lock).toBe('snapshot');
    expect((await snapshotList()).find((s) => s.name === 'clean')).toMatchObject({
      snapstate: 'prepare',
    });

    pve.clearFaults();
    const done = await waitTask(upid);
    expect(done).toMatchObject({ status: 'stopped', exitstatus: 'OK' });
    expect(await statusCurrent()).not.toHaveProperty('lock');
    const list = await snapshotList();
    expect(list.find((s) => s.name === 'clean')).toEqual({
      name: 'clean',
      description: 'before job 7',
      snaptime: expect.any(Number),
      vmstate: 0,
      parent: 'base',
    });
    expect(list[list.length - 1]).toEqual({
      name: 'current',
      digest: expect.stringMatching(/^[0-9a-f]{40}$/),
      running: 1,
      description: 'You are here!',
      parent: 'clean',
    });

    const log = await api('GET', `/nodes/${NODE}/tasks/${encodeURIComponent(upid)}/log`);
    const lines = log.json.data as Array<{ n: number; t: string }>;
    expect(lines[lines.length - 1]).toEqual({ n: lines.length, t: 'TASK OK' });
    expect(log.json.total).toBe(lines.length);
  });

  it('lists snapshots unsorted (not in creation order) with current last', async () => {
    for (const snapname of ['s1', 's2']) {
      await waitTask(await mutate('POST', vmPath('/snapshot'), { form: { snapname } }));
    }
    const names = (await snapshotList()).map((s) => s.name);
    expect(names[names.length - 1]).toBe('current');
    expect(new Set(names)).toEqual(new Set(['base', 's1', 's2', 'current']));
    expect(names.slice(0, 3)).not.toEqual(['base', 's1', 's2']);
  });

  it('fails a duplicate snapshot name in the task, not in HTTP', async () => {
    const upid = await mutate('POST', vmPath('/snapshot'), { form: { snapname: 'base' } });
    expect((await waitTask(upid)).exitstatus).toBe("snapshot name 'base' already used");
    const log = await api('GET', `/nodes/${NODE}/tasks/${encodeURIComponent(upid)}/log`);
    const lines = log.json.data as Array<{ t: string }>;
    expect(lines[lines.length - 1]!.t).toBe("TASK ERROR: snapshot name 'base' already used");
  });

  it('fails an operation that needs the config lock while another task holds it', async () => {
    pve.failNext({ taskType: 'qmsnapshot' }, { kind: 'hang' }); // the first task holds the lock
    const first = await mutate('POST', vmPath('/snapshot'), { form: { snapname: 'one' } });
    const second = await mutate('POST', vmPath('/snapshot'), { form: { snapname: 'two' } });
    const rollback = await mutate('POST', vmPath('/snapshot/base/rollback'));
    expect((await waitTask(second)).exitstatus).toBe('VM is locked (snapshot)');
    expect((await waitTask(rollback)).exitstatus).toBe('VM is locked (snapshot)');
    pve.clearFaults();
    expect((await waitTask(first)).exitstatus).toBe('OK');
    expect(pve.vm(NODE, VMID).snapshots.map((s) => s.name)).toEqual(['base', 'one']);
  });

  it('honours a lock set by the test (e.g. a backup)', async () => {
    pve.vm(NODE, VMID).lock = 'backup';
    expect((await statusCurrent()).lock).toBe('backup');
    const upid = await mutate('DELETE', vmPath('/snapshot/base'));
    expect((await waitTask(upid)).exitstatus).toBe('VM is locked (backup)');
  });

  it('rollback hard-stops a running VM and leaves it stopped', async () => {
    pve.failNext({ taskType: 'qmrollback' }, { kind: 'hang' }); // seen while it runs
    const upid = await mutate('POST', vmPath('/snapshot/base/rollback'));
    expect(await statusCurrent()).toMatchObject({ status: 'stopped', lock: 'rollback' });
    pve.clearFaults();
    expect((await waitTask(upid)).exitstatus).toBe('OK');
    const vm = pve.vm(NODE, VMID);
    expect(vm).toMatchObject({ status: 'stopped', currentParent: 'base', rollbacks: 1, stops: 1 });
    expect(vm.lock).toBeUndefined();
    const st = await statusCurrent();
    expect(st).toMatchObject({ status: 'stopped', qmpstatus: 'stopped', uptime: 0 });
    expect(st).not.toHaveProperty('pid');
  });

  it('rollback with start=1 starts the VM again', async () => {
    const upid = await mutate('POST', vmPath('/snapshot/base/rollback'), { form: { start: '1' } });
    expect((await waitTask(upid)).exitstatus).toBe('OK');
    expect(pve.vm(NODE, VMID)).toMatchObject({ status: 'running', starts: 1, rollbacks: 1 });
    expect(await statusCurrent()).toMatchObject({
      status: 'running',
      qmpstatus: 'running',
      pid: expect.any(Number),
    });
  });

  it('fails rollback and delete of a missing snapshot in the task', async () => {
    const rb = await mutate('POST', vmPath('/snapshot/nope/rollback'));
    expect((await waitTask(rb)).exitstatus).toBe("snapshot 'nope' does not exist");
    const del = await mutate('DELETE', vmPath('/snapshot/nope'), { query: { force: '1' } });
    expect((await waitTask(del)).exitstatus).toBe("snapshot 'nope' does not exist");
    expect(pve.vm(NODE, VMID)).toMatchObject({ status: 'running', rollbacks: 0 });
  });

  it('deletes a snapshot and re-parents the current state', async () => {
    await waitTask(await mutate('POST', vmPath('/snapshot'), { form: { snapname: 'child' } }));
    pve.failNext({ taskType: 'qmdelsnapshot' }, { kind: 'hang' }); // seen while it runs
    const upid = await mutate('DELETE', vmPath('/snapshot/child'));
    expect((await statusCurrent()).lock).toBe('snapshot-delete');
    expect((await snapshotList()).find((s) => s.name === 'child')?.snapstate).toBe('delete');
    pve.clearFaults();
    expect((await waitTask(upid)).exitstatus).toBe('OK');
    const vm = pve.vm(NODE, VMID);
    expect(vm.snapshots.map((s) => s.name)).toEqual(['base']);
    expect(vm.currentParent).toBe('base');
  });

  it('takes each task type its own time when taskDurationsMs says so (bench/reset.ts)', async () => {
    const s = await startProxmoxStandIn({
      taskDurationMs: 0,
      taskDurationsMs: { qmsnapshot: 60_000 },
    });
    try {
      s.addVm(NODE, VMID, { status: 'running' });
      const post = async (rest: string, form?: Record<string, string>) =>
        (await api('POST', vmPath(rest), { form }, s)).json.data as string;
      const snap = await post('/snapshot', { snapname: 'slow' });
      const stop = await post('/status/stop');
      // The stop (default duration) ends while the snapshot started before it still runs.
      expect((await waitTask(stop, s)).exitstatus).toBe('VM is locked (snapshot)');
      expect((await taskStatus(snap, s)).status).toBe('running');
    } finally {
      await s.close();
    }
  });

  it('fails start of a running VM; stop of a stopped VM is a successful no-op', async () => {
    const start = await mutate('POST', vmPath('/status/start'));
    expect((await waitTask(start)).exitstatus).toBe('VM 100 already running');

    const stop = await mutate('POST', vmPath('/status/stop'));
    expect((await waitTask(stop)).exitstatus).toBe('OK');
    expect(pve.vm(NODE, VMID)).toMatchObject({ status: 'stopped', stops: 1 });

    const again = await mutate('POST', vmPath('/status/stop'));
    expect((await waitTask(again)).exitstatus).toBe('OK');
    expect(pve.vm(NODE, VMID).stops).toBe(1);

    const shutdown = await mutate('POST', vmPath('/status/shutdown'), { form: { forceStop: '1' } });
    expect((await waitTask(shutdown)).exitstatus).toBe('OK');

    const restart = await mutate('POST', vmPath('/status/start'));
    expect((await waitTask(restart)).exitstatus).toBe('OK');
    expect(pve.vm(NODE, VMID)).toMatchObject({ status: 'running', starts: 1 });
  });

  it('fails power operations on an unknown VM inside the task, like the real handlers', async () => {
    const start = await mutate('POST', vmPath('/status/start', 555));
    expect((await waitTask(start)).exitstatus).toBe(
      "Configuration file 'nodes/pve1/qemu-server/555.conf' does not exist",
    );
  });

  it('answers 400 for an unparsable or unknown UPID, and for a task asked on another node', async () => {
    const bad = await api('GET', `/nodes/${NODE}/tasks/not-a-upid/status`);
    expect([bad.status, bad.json.errors]).toEqual([400, { upid: 'unable to parse worker upid' }]);
    const unknown = await api(
      'GET',
      `/nodes/${NODE}/tasks/${encodeURIComponent(`UPID:${NODE}:00000001:00000002:00000003:qmstart:100:root@pam:`)}/status`,
    );
    expect([unknown.status, unknown.json.errors]).toEqual([400, { upid: 'no such task' }]);
    const upid = await mutate('POST', vmPath('/status/stop'));
    const wrongNode = await api('GET', `/nodes/pve2/tasks/${encodeURIComponent(upid)}/status`);
    expect(wrongNode.json.errors).toEqual({ upid: 'no such task' });
  });

  it('answers the snapshot index without checking existence, and 500 for a missing snapshot config', async () => {
    const idx = await api('GET', vmPath('/snapshot/ghost'));
    expect(idx.json.data).toEqual([{ cmd: 'rollback' }, { cmd: 'config' }]);
    const cfg = await api('GET', vmPath('/snapshot/ghost/config'));
    expect([cfg.status, cfg.statusText]).toEqual([500, "snapshot 'ghost' does not exist"]);
    const base = await api('GET', vmPath('/snapshot/base/config'));
    expect(base.json.data).toMatchObject({ description: 'golden', snaptime: expect.any(Number) });
  });
});

describe('faults', () => {
  it('http: answers with the status and reason instead of handling, once', async () => {
    pve.failNext(
      { pathIncludes: '/snapshot' },
      { kind: 'http', status: 596, reason: 'Broken pipe' },
    );
    const r = await api('POST', vmPath('/snapshot'), { form: { snapname: 'x1' } });
    expect([r.status, r.statusText]).toEqual([596, 'Broken pipe']);
    expect(r.json).toEqual({ data: null, message: 'Broken pipe\n' });
    expect(pve.vm(NODE, VMID).snapshots).toHaveLength(1);
    const again = await api('POST', vmPath('/snapshot'), { form: { snapname: 'x1' } });
    expect(again.status).toBe(200);
  });

  it('http: matches by method and task type, and repeats `times` times', async () => {
    pve.failNext(
      { method: 'POST', taskType: 'qmrollback' },
      { kind: 'http', status: 595, reason: 'No route to host' },
      2,
    );
    expect((await api('POST', vmPath('/snapshot'), { form: { snapname: 'x1' } })).status).toBe(200);
    expect((await api('POST', vmPath('/snapshot/base/rollback'))).status).toBe(595);
    expect((await api('POST', vmPath('/snapshot/base/rollback'))).status).toBe(595);
    expect((await api('POST', vmPath('/snapshot/base/rollback'))).status).toBe(200);
  });

  it('task: accepts the call but the task fails without effect', async () => {
    pve.failNext({ taskType: 'qmsnapshot' }, { kind: 'task', exitstatus: 'VM is locked (backup)' });
    const upid = await mutate('POST', vmPath('/snapshot'), { form: { snapname: 'x1' } });
    // Accepted: a task exists (running, or already stopped on a slow machine: it lasts 30 ms).
    expect(await taskStatus(upid)).toMatchObject({ upid, type: 'qmsnapshot' });
    expect((await waitTask(upid)).exitstatus).toBe('VM is locked (backup)');
    expect(pve.vm(NODE, VMID).snapshots.map((s) => s.name)).toEqual(['base']);
  });

  it('warnings: the task succeeds with its effect and exitstatus WARNINGS: n', async () => {
    pve.failNext({ taskType: 'qmsnapshot' }, { kind: 'warnings', count: 2 });
    const upid = await mutate('POST', vmPath('/snapshot'), { form: { snapname: 'x1' } });
    expect((await waitTask(upid)).exitstatus).toBe('WARNINGS: 2');
    expect(pve.vm(NODE, VMID).currentParent).toBe('x1');
    const log = await api('GET', `/nodes/${NODE}/tasks/${encodeURIComponent(upid)}/log`);
    const lines = (log.json.data as Array<{ t: string }>).map((l) => l.t);
    expect(lines.filter((t) => t.startsWith('WARN: '))).toHaveLength(2);
    expect(lines[lines.length - 1]).toBe('TASK WARNINGS: 2');
  });

  it('delay: holds the response, then handles the request', async () => {
    pve.failNext({ method: 'GET', pathIncludes: '/status/current' }, { kind: 'delay', ms: 120 });
    const t0 = Date.now();
    const r = await api('GET', vmPath('/status/current'));
    expect(r.status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(110);
  });

  it('hang: the task runs (holding its lock) until faults are cleared, then completes', async () => {
    const s = await startProxmoxStandIn({ taskDurationMs: 5 });
    try {
      s.addVm(NODE, 200, { status: 'running' });
      s.failNext({ taskType: 'qmsnapshot' }, { kind: 'hang' });
      const r = await api('POST', '/nodes/pve1/qemu/200/snapshot', { form: { snapname: 'h1' } }, s);
      const upid = r.json.data as string;
      // Outlast ten task durations by polling, never by sleeping a fixed time.
      const t0 = Date.now();
      while (Date.now() - t0 < 50) expect((await taskStatus(upid, s)).status).toBe('running');
      expect(s.vm(NODE, 200).lock).toBe('snapshot');
      s.clearFaults();
      expect((await waitTask(upid, s)).exitstatus).toBe('OK');
      expect(s.vm(NODE, 200)).toMatchObject({ currentParent: 'h1' });
      expect(s.vm(NODE, 200).lock).toBeUndefined();
    } finally {
      await s.close();
    }
  });
});

describe('call log', () => {
  it('records every request in order, with query, body and final status', async () => {
    await api('GET', vmPath('/status/current'), { auth: null });
    await api('POST', vmPath('/snapshot'), { form: { snapname: 'x1', description: 'd' } });
    await api('DELETE', vmPath('/snapshot/x1'), { query: { force: '1' } });
    await api('POST', vmPath('/snapshot'), { json: { snapname: 'a.b', vmstate: true } });
    expect(
      pve.calls.map(({ method, path, query, body, status }) => ({
        method,
        path,
        query,
        body,
        status,
      })),
    ).toEqual([
      {
        method: 'GET',
        path: '/api2/json/nodes/pve1/qemu/100/status/current',
        query: {},
        body: {},
        status: 401,
      },
      {
        method: 'POST',
        path: '/api2/json/nodes/pve1/qemu/100/snapshot',
        query: {},
        body: { snapname: 'x1', description: 'd' },
        status: 200,
      },
      {
        method: 'DELETE',
        path: '/api2/json/nodes/pve1/qemu/100/snapshot/x1',
        query: { force: '1' },
        body: {},
        status: 200,
      },
      {
        method: 'POST',
        path: '/api2/json/nodes/pve1/qemu/100/snapshot',
        query: {},
        body: { snapname: 'a.b', vmstate: '1' },
        status: 400,
      },
    ]);
    expect(pve.calls.every((c) => typeof c.at === 'number')).toBe(true);
  });
});
