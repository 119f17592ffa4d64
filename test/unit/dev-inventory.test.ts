import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadInventoryFile } from '../../config/inventory';
import { DEMO_RUNNER, ensureDevInventory } from '../../dev/dev-inventory';

/** The demo inventory `npm run dev` generates: its runner's agent has a credential of its own. */
describe('the dev demo inventory', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'e2epool-devinv-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('gives the demo runner an agent_token unlike its token, and keeps both across restarts', () => {
    const { path, created } = ensureDevInventory(dir);
    expect(created).toBe(true);
    expect((statSync(path).mode & 0o777).toString(8)).toBe('600');
    const text = readFileSync(path, 'utf8');
    const { inventory } = loadInventoryFile(path);
    expect(inventory.hasAgentToken(DEMO_RUNNER)).toBe(true);
    expect(inventory.sharedCredentialRunners()).toEqual([]);
    expect(ensureDevInventory(dir)).toEqual({ path, created: false });
    expect(readFileSync(path, 'utf8')).toBe(text);
  });

  it('adds an agent_token to a demo inventory generated before, keeping its REST token', () => {
    const path = join(dir, 'inventory.dev.yml');
    const old = [
      'runners:',
      `  - runner_id: ${DEMO_RUNNER}`,
      '    backend: bare_metal',
      '    token: the-old-rest-token',
      '    reset_cmd: echo reset',
      '',
    ].join('\n');
    writeFileSync(path, old, { mode: 0o600 });
    ensureDevInventory(dir);
    const { inventory } = loadInventoryFile(path);
    expect(inventory.get(DEMO_RUNNER)?.token).toBe('the-old-rest-token');
    expect(inventory.hasAgentToken(DEMO_RUNNER)).toBe(true);
  });
});
