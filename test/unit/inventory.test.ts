import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import {
  InventoryError,
  InventoryStore,
  loadInventoryFile,
  parseInventory,
  proxmoxBaseUrl,
} from '../../config/inventory';
import { waitFor } from '../helpers/wait';

const proxmox = `
  - runner_id: vm-1
    backend: proxmox
    token: tok-vm-1
    proxmox_host: pve.example.com
    proxmox_user: ci@pve
    proxmox_token_name: e2epool
    proxmox_token_value: secret-uuid
    proxmox_node: pve1
    proxmox_vmid: 101
    gitlab_runner_id: 42`;
const bare = `
  - runner_id: metal-1
    backend: bare_metal
    token: tok-metal-1
    reset_cmd: /usr/local/bin/reset`;

function errorOf(text: string): string {
  try {
    parseInventory(text, 'inv.yml');
  } catch (e) {
    expect(e).toBeInstanceOf(InventoryError);
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
  throw new Error('expected the inventory to be rejected');
}

describe('parseInventory', () => {
  it('accepts both backends and applies defaults', () => {
    const { inventory } = parseInventory(`runners:${proxmox}${bare}`);
    const vm = inventory.get('vm-1');
    expect(vm).toMatchObject({
      backend: 'proxmox',
      proxmox_vmid: 101,
      proxmox_verify_tls: true,
      reset_on_success: false,
      tags: [],
    });
    expect(inventory.get('metal-1')).toMatchObject({
      backend: 'bare_metal',
      reset_cmd: '/usr/local/bin/reset',
    });
    expect(inventory.size).toBe(2);
  });

  it('accepts an empty file or a missing runners key as no runners', () => {
    expect(parseInventory('').inventory.size).toBe(0);
    expect(parseInventory('other: 1').inventory.size).toBe(0);
  });

  it('parses the shipped inventory.example.yml', () => {
    const { inventory, warnings } = loadInventoryFile(
      join(__dirname, '..', '..', 'inventory.example.yml'),
    );
    expect(inventory.runners.map((r) => r.runner_id)).toEqual(['ci-vm-1', 'ci-metal-1']);
    expect(warnings).toEqual([]);
  });

  it.each([
    [
      'a missing proxmox field',
      proxmox.replace('    proxmox_node: pve1\n', ''),
      "runner 'vm-1': proxmox_node: required for backend proxmox",
    ],
    [
      'a bad VMID',
      proxmox.replace('101', '7'),
      "runner 'vm-1': proxmox_vmid: expected a VMID between 100 and 999999999",
    ],
    [
      'a string VMID',
      proxmox.replace('101', 'abc'),
      "runner 'vm-1': proxmox_vmid: expected an integer",
    ],
    [
      'a bad user',
      proxmox.replace('ci@pve', 'ci'),
      "runner 'vm-1': proxmox_user: expected user@realm",
    ],
    [
      'a bare-metal runner without reset_cmd',
      bare.replace('    reset_cmd: /usr/local/bin/reset', ''),
      "runner 'metal-1': reset_cmd: required for backend bare_metal",
    ],
    [
      'an unknown backend',
      bare.replace('bare_metal', 'docker'),
      "runner 'metal-1': backend: must be 'proxmox' or 'bare_metal' (got 'docker')",
    ],
    [
      'a bad runner id',
      bare.replace('metal-1', 'metal 1'),
      "runner 'metal 1': runner_id: expected 1-255 of letters",
    ],
    [
      'a bad gitlab runner id',
      proxmox.replace('42', '-1'),
      "runner 'vm-1': gitlab_runner_id: must be positive",
    ],
  ])('rejects %s, naming the runner and the field', (_what, entry, expected) => {
    expect(errorOf(`runners:${entry}`)).toContain(expected);
  });

  it('names the position of an entry without a runner_id', () => {
    expect(errorOf('runners:\n  - backend: bare_metal\n    token: x\n    reset_cmd: y')).toBe(
      'inv.yml: runners[0]: runner_id: required',
    );
  });

  it('rejects duplicate runner ids and shared tokens', () => {
    expect(errorOf(`runners:${bare}${bare}`)).toContain("runner 'metal-1': runner_id: duplicate");
    expect(
      errorOf(`runners:${bare}${bare.replace('runner_id: metal-1', 'runner_id: metal-2')}`),
    ).toContain("runner 'metal-2': token: same token as runner 'metal-1'");
  });

  it('rejects YAML that is not an inventory', () => {
    expect(errorOf('runners: [1')).toMatch(/^inv\.yml: not valid YAML/);
    expect(errorOf('runners: 3')).toBe('inv.yml: runners: expected a list');
  });

  it('warns about unknown fields instead of failing (old inventories carry ssh_* keys)', () => {
    const { warnings } = parseInventory(`runners:${bare}\n    ssh_user: root`, 'inv.yml');
    expect(warnings).toEqual(["inv.yml: runner 'metal-1': ignoring unknown fields: ssh_user"]);
  });

  it('finds the runner a token belongs to, and nothing for a wrong or prefix token', () => {
    const { inventory } = parseInventory(`runners:${proxmox}${bare}`);
    expect(inventory.runnerIdForToken('tok-metal-1')).toBe('metal-1');
    expect(inventory.runnerIdForToken('tok-vm-1')).toBe('vm-1');
    expect(inventory.runnerIdForToken('tok-metal')).toBeUndefined();
    expect(inventory.runnerIdForToken('')).toBeUndefined();
  });
});

describe('proxmoxBaseUrl', () => {
  it.each([
    ['pve1', 'https://pve1:8006'],
    ['pve1:8443', 'https://pve1:8443'],
    ['https://pve1.example.com', 'https://pve1.example.com'],
    ['http://127.0.0.1:9999', 'http://127.0.0.1:9999'],
  ])('%s → %s', (host, url) => {
    expect(proxmoxBaseUrl({ proxmox_host: host })).toBe(url);
  });
});

describe('InventoryStore', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'inv-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function capturingLogger() {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    return { log, lines };
  }

  it('picks up a valid change without a restart and refuses an invalid one, keeping the old inventory', async () => {
    const path = join(dir, 'inventory.yml');
    writeFileSync(path, `runners:${bare}`);
    const { log, lines } = capturingLogger();
    const store = InventoryStore.load(path, log);
    store.watch(50);
    try {
      writeFileSync(path, `runners:${bare}${proxmox}`);
      await waitFor('the new runner to appear', () => store.inventory.get('vm-1'));
      expect(store.inventory.size).toBe(2);

      writeFileSync(
        path,
        `runners:${bare}\n  - runner_id: broken\n    backend: proxmox\n    token: t`,
      );
      await waitFor('the refusal to be logged', () =>
        lines.find((l) => String(l.msg).startsWith('inventory change refused')),
      );
      expect(store.inventory.size).toBe(2);
      expect(store.inventory.get('vm-1')).toBeDefined();
      const refusal = lines.find((l) => String(l.msg).startsWith('inventory change refused'))!;
      expect(refusal.msg).toContain("runner 'broken': proxmox_host: required for backend proxmox");
      expect(refusal.level).toBe(50);
    } finally {
      store.close();
    }
  });

  it('tells change listeners about each new inventory, not about a refused change', () => {
    const path = join(dir, 'inventory.yml');
    writeFileSync(path, `runners:${bare}`);
    const store = InventoryStore.load(path, pino({ level: 'silent' }));
    const seen: number[] = [];
    const stop = store.onChange((inv) => seen.push(inv.size));
    writeFileSync(path, `runners:${bare}${proxmox}`);
    expect(store.reload()).toBe(true);
    writeFileSync(path, 'runners: 3');
    expect(store.reload()).toBe(false);
    stop();
    writeFileSync(path, `runners:${bare}`);
    expect(store.reload()).toBe(true);
    expect(seen).toEqual([2]);
  });

  it('fails to load a missing file with a clear message', () => {
    const { log } = capturingLogger();
    expect(() => InventoryStore.load(join(dir, 'nope.yml'), log)).toThrow(
      /inventory .*nope\.yml: file not found/,
    );
  });
});
