import { createHash } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import type { DataSource } from 'typeorm';
import { exportInventory, importInventory } from '../../cli/registry';
import { SecretBox } from '../../config/secret-box';
import { createMigratedDatabase } from '../helpers/db';
import {
  bareMetalRunnerYaml,
  proxmoxRunnerYaml,
  testRunners,
  writeInventory,
} from '../helpers/env';

const R = testRunners(['metal', 'pve', 'clash']);
const METAL_AGENT_TOKEN = `agent-${R.metal.id}-secret`;
const PVE = {
  url: 'https://pve.example.com:8006',
  tokenId: 'e2epool@pve!ci',
  tokenSecret: 'pve-secret-xyz',
};
const FILE_YAML = `runners:\n${bareMetalRunnerYaml(R.metal, { cleanup_cmd: '/opt/clean.sh', agent_token: METAL_AGENT_TOKEN })}${proxmoxRunnerYaml(PVE, { runnerId: R.pve.id, token: R.pve.token, vmid: 321 })}`;
const secrets = new SecretBox('the-import-test-secret-key');

describe('e2epool import-inventory / export-inventory', () => {
  let ds: DataSource;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ ds, close } = await createMigratedDatabase('import'));
  });
  afterAll(async () => close());

  it('--dry-run prints what it would do and writes nothing', async () => {
    const lines = await importInventory({
      ds,
      file: writeInventory(FILE_YAML),
      secrets,
      dryRun: true,
    });
    expect(lines).toEqual([
      `would import ${R.metal.id} (bare_metal)`,
      `would import ${R.pve.id} (proxmox)`,
      expect.stringMatching(/^would import 2 runner\(s\) from .* \(dry run: nothing written\)$/),
    ]);
    expect(await ds.query(`SELECT 1 FROM runners`)).toEqual([]);
  });

  it('refuses Proxmox runners without E2EPOOL_SECRET_KEY', async () => {
    await expect(
      importInventory({ ds, file: writeInventory(FILE_YAML), secrets: null, dryRun: false }),
    ).rejects.toThrow(/E2EPOOL_SECRET_KEY/);
    expect(await ds.query(`SELECT 1 FROM runners`)).toEqual([]);
  });

  it('imports: tokens as SHA-256 (agents keep theirs), Proxmox tokens sealed, audit rows without secrets', async () => {
    const lines = await importInventory({
      ds,
      file: writeInventory(FILE_YAML),
      secrets,
      dryRun: false,
    });
    expect(lines[0]).toBe(`imported ${R.metal.id} (bare_metal)`);
    const rows: Array<{
      runner_id: string;
      token_hash: Buffer;
      agent_token_hash: Buffer | null;
      proxmox_token_value: string | null;
      cleanup_cmd: string | null;
    }> = await ds.query(
      `SELECT runner_id, token_hash, agent_token_hash, proxmox_token_value, cleanup_cmd FROM runners ORDER BY runner_id`,
    );
    const byId = new Map(rows.map((r) => [r.runner_id, r]));
    const sha = (t: string) => createHash('sha256').update(t).digest();
    expect(Buffer.from(byId.get(R.metal.id)!.token_hash)).toEqual(sha(R.metal.token));
    // The agent keeps its agent token too; a runner without one stays without.
    expect(Buffer.from(byId.get(R.metal.id)!.agent_token_hash!)).toEqual(sha(METAL_AGENT_TOKEN));
    expect(byId.get(R.pve.id)!.agent_token_hash).toBeNull();
    expect(byId.get(R.metal.id)!.cleanup_cmd).toBe('/opt/clean.sh');
    const sealed = byId.get(R.pve.id)!.proxmox_token_value!;
    expect(sealed).toMatch(/^v1:/);
    expect(sealed).not.toContain(PVE.tokenSecret);
    expect(secrets.open(sealed)).toBe(PVE.tokenSecret);
    const audit = await ds.query(
      `SELECT actor, action, runner_id, detail FROM admin_audit ORDER BY id`,
    );
    expect(audit.map((a: { actor: string; action: string }) => [a.actor, a.action])).toEqual([
      ['import-inventory', 'import'],
      ['import-inventory', 'import'],
    ]);
    const text = JSON.stringify(audit);
    for (const secret of [PVE.tokenSecret, R.metal.token, R.pve.token, METAL_AGENT_TOKEN])
      expect(text).not.toContain(secret);
  });

  it('refuses a runner id already in the registry, importing nothing', async () => {
    const yaml = `runners:\n${bareMetalRunnerYaml(R.clash)}${bareMetalRunnerYaml(R.metal)}`;
    await expect(
      importInventory({ ds, file: writeInventory(yaml), secrets, dryRun: false }),
    ).rejects.toThrow(`already in the registry: ${R.metal.id} (nothing imported)`);
    expect(await ds.query(`SELECT 1 FROM runners WHERE runner_id = $1`, [R.clash.id])).toEqual([]);
  });

  it('exports the active runners as inventory YAML without secrets', async () => {
    const text = await exportInventory(ds);
    for (const secret of [PVE.tokenSecret, R.metal.token, R.pve.token, METAL_AGENT_TOKEN])
      expect(text).not.toContain(secret);
    const doc = parseYaml(text) as { runners: Array<Record<string, unknown>> };
    expect(doc.runners.map((r) => r.runner_id).sort()).toEqual([R.metal.id, R.pve.id].sort());
    const pve = doc.runners.find((r) => r.runner_id === R.pve.id)!;
    expect(pve).toMatchObject({ backend: 'proxmox', proxmox_vmid: 321, proxmox_node: 'pve1' });
    expect(pve).not.toHaveProperty('token');
    expect(pve).not.toHaveProperty('proxmox_token_value');
  });
});
