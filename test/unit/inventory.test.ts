import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { budgetedPollIntervalSeconds, checkpointInput } from '../../config/checkpoint-input';
import { loadSettings } from '../../config/settings';
import { InventoryStore, loadInventoryFile, parseInventory } from '../../config/inventory';
import { noState } from '../../config/runner-state';
import {
  canaryPathOf,
  HOLD_ON_FAILURE_MAX,
  InventoryError,
  proxmoxBaseUrl,
  verifyModeOf,
} from '../../config/runner-schema';
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

/** A fleet of no GitLab runners: the configured poll interval stands. */
const NO_FLEET = { gitlabRunnerCount: 0 };

describe('parseInventory', () => {
  it('accepts both backends and applies defaults', () => {
    const { inventory } = parseInventory(`runners:${proxmox}${bare}`);
    const vm = inventory.get('vm-1');
    expect(vm).toMatchObject({
      backend: 'proxmox',
      proxmox_vmid: 101,
      proxmox_verify_tls: true,
      reset_on_success: false,
      hold_on_failure_seconds: 0,
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
    expect(inventory.runners.map((r) => r.runner_id)).toEqual([
      'ci-vm-1',
      'ci-metal-1',
      'gh-metal-1',
    ]);
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

  it.each([
    ['a NUL byte', '"metal\\0x"', 'must not contain control characters'],
    ['a newline', '"metal\\nx"', 'must not contain control characters'],
    ['a tab', '"metal\\tx"', 'must not contain control characters'],
    ['a DEL', '"metal\\x7fx"', 'must not contain control characters'],
    ['256 characters', 'a'.repeat(256), 'at most 255 characters'],
  ])(
    'rejects a runner_id the database or Temporal cannot hold (%s), naming the runner on one line',
    (_what, id, expected) => {
      const msg = errorOf(`runners:${bare.replace('metal-1', id)}`);
      expect(msg).toMatch(/^inv\.yml: runner '[^']*': runner_id: /);
      expect(msg).toContain(`runner_id: ${expected}`);
      // The id is shown escaped and shortened: no raw control character, no 256-character line.
      // eslint-disable-next-line no-control-regex
      expect(msg).not.toMatch(/[\u0000-\u001f\u007f]/);
      expect(msg.length).toBeLessThan(200);
    },
  );

  it('accepts a runner_id of exactly 255 characters (the column length)', () => {
    const id = 'r'.repeat(255);
    expect(
      parseInventory(`runners:${bare.replace('metal-1', id)}`).inventory.get(id),
    ).toBeDefined();
  });

  it('rejects two runners on the same Proxmox VM, naming both', () => {
    const second = proxmox
      .replace('runner_id: vm-1', 'runner_id: vm-2')
      .replace('tok-vm-1', 'tok-vm-2')
      .replace('42', '43')
      .replace('pve.example.com', 'https://PVE.example.com:8006');
    expect(errorOf(`runners:${proxmox}${second}`)).toBe(
      "inv.yml: runner 'vm-2': proxmox_vmid: same VM as runner 'vm-1' (https://pve.example.com:8006, node pve1, VMID 101)",
    );
    // Another VMID, node or host is another VM.
    for (const other of [
      second.replace('101', '102'),
      second.replace('proxmox_node: pve1', 'proxmox_node: pve2'),
      second.replace('https://PVE.example.com:8006', 'pve2.example.com'),
    ]) {
      expect(parseInventory(`runners:${proxmox}${other}`).inventory.size).toBe(2);
    }
  });

  it('takes hold_on_failure_seconds (default 0) into the checkpoint input', () => {
    const { inventory } = parseInventory(
      `runners:${bare}\n    hold_on_failure_seconds: 900${proxmox}`,
    );
    expect(inventory.get('metal-1')!.hold_on_failure_seconds).toBe(900);
    expect(inventory.get('vm-1')!.hold_on_failure_seconds).toBe(0);
    const settings = loadSettings({});
    expect(
      checkpointInput(inventory.get('metal-1')!, settings, inventory).runner.holdOnFailureSeconds,
    ).toBe(900);
    expect(
      checkpointInput(inventory.get('vm-1')!, settings, inventory).runner.holdOnFailureSeconds,
    ).toBe(0);
    expect(
      parseInventory(`runners:${bare}\n    hold_on_failure_seconds: ${HOLD_ON_FAILURE_MAX}`)
        .inventory.size,
    ).toBe(1);
  });

  it.each([
    ['-1', 'must be 0 (no hold) or more'],
    ['1.5', 'expected a whole number of seconds'],
    ['"60"', 'expected a whole number of seconds'],
    ['true', 'expected a whole number of seconds'],
    [String(HOLD_ON_FAILURE_MAX + 1), `at most ${HOLD_ON_FAILURE_MAX} (7 days)`],
  ])('rejects hold_on_failure_seconds: %s, naming the runner and the field', (value, expected) => {
    expect(errorOf(`runners:${bare}\n    hold_on_failure_seconds: ${value}`)).toBe(
      `inv.yml: runner 'metal-1': hold_on_failure_seconds: ${expected}`,
    );
  });

  describe('ci_adapter and the GitHub fields', () => {
    const github = (extra: string) =>
      `runners:${bare}\n    ci_adapter: github${extra ? `\n    ${extra.trim().split('\n').join('\n    ')}` : ''}`;
    const settings = loadSettings({});

    it('defaults to gitlab; a GitLab runner with gitlab_runner_id gets the GitLab pause target', () => {
      const { inventory } = parseInventory(`runners:${proxmox}${bare}`);
      expect(inventory.get('vm-1')!.ci_adapter).toBe('gitlab');
      expect(checkpointInput(inventory.get('vm-1')!, settings, inventory).runner).toMatchObject({
        pause: { kind: 'gitlab', gitlabRunnerId: 42 },
      });
      expect(checkpointInput(inventory.get('metal-1')!, settings, inventory).runner).toMatchObject({
        pause: null,
      });
    });

    it('a GitHub repository runner: its id, repository and pause labels make its pause target', () => {
      const { inventory } = parseInventory(
        github('github_repo: acme/app\ngithub_runner_id: 7\ngithub_pause_labels: [e2e, gpu]'),
      );
      const r = inventory.get('metal-1')!;
      expect(r).toMatchObject({ ci_adapter: 'github', github_repo: 'acme/app' });
      expect(checkpointInput(r, settings, NO_FLEET).runner).toMatchObject({
        pause: {
          kind: 'github',
          githubRunnerId: 7,
          scope: { repo: 'acme/app' },
          labels: ['e2e', 'gpu'],
        },
      });
    });

    it('an organization runner; and a GitHub runner without a runner id is polled but never "paused"', () => {
      const org = parseInventory(
        github('github_org: acme\ngithub_runner_id: 8\ngithub_pause_labels: [e2e]'),
      ).inventory.get('metal-1')!;
      expect(checkpointInput(org, settings, NO_FLEET).runner.pause).toEqual({
        kind: 'github',
        githubRunnerId: 8,
        scope: { org: 'acme' },
        labels: ['e2e'],
      });
      const plain = parseInventory(github('github_repo: acme/app')).inventory.get('metal-1')!;
      expect(checkpointInput(plain, settings, NO_FLEET).runner.pause).toBeNull();
    });

    it.each([
      ['ci_adapter: jenkins', "ci_adapter: expected 'gitlab' or 'github'", false],
      ['github_runner_id: 7', 'github_runner_id: only for ci_adapter: github', false],
      ['github_repo: acme/app', 'github_repo: only for ci_adapter: github', false],
      [
        'gitlab_runner_id: 5',
        'gitlab_runner_id: only for ci_adapter: gitlab (a GitHub runner has github_runner_id)',
        true,
      ],
      ['github_repo: acme', 'github_repo: expected owner/name (letters, digits, _ . -)', true],
      ['github_repo: acme/..', "github_repo: expected owner/name, not '.' or '..'", true],
      ['github_repo: a/b/c', 'github_repo: expected owner/name (letters, digits, _ . -)', true],
      [
        'github_org: acme/app',
        'github_org: expected an organization name (letters, digits, _ . -)',
        true,
      ],
      [
        'github_repo: acme/app\ngithub_org: acme',
        "github_org: set github_repo (a repository's runner) or github_org (an organization's runner), not both",
        true,
      ],
      [
        'github_runner_id: 7\ngithub_pause_labels: [e2e]',
        'github_runner_id: needs github_repo or github_org (where the runner is registered)',
        true,
      ],
      [
        'github_repo: acme/app\ngithub_runner_id: 7',
        'github_pause_labels: required with github_runner_id: the labels the e2e jobs select (runs-on), removed during a reset',
        true,
      ],
      [
        'github_repo: acme/app\ngithub_runner_id: 7\ngithub_pause_labels: []',
        'github_pause_labels: required with github_runner_id: the labels the e2e jobs select (runs-on), removed during a reset',
        true,
      ],
      [
        'github_repo: acme/app\ngithub_pause_labels: [e2e]',
        'github_pause_labels: needs github_runner_id (the runner whose labels they are)',
        true,
      ],
      ['github_repo: acme/app\ngithub_runner_id: 0', 'github_runner_id: must be positive', true],
      [
        'github_repo: acme/app\ngithub_runner_id: 7\ngithub_pause_labels: [e2e, Self-Hosted]',
        "github_pause_labels.1: 'Self-Hosted' is a default label of self-hosted runners: GitHub does not let it be removed",
        true,
      ],
      [
        'github_repo: acme/app\ngithub_runner_id: 7\ngithub_pause_labels: [X64]',
        "github_pause_labels.0: 'X64' is a default label of self-hosted runners: GitHub does not let it be removed",
        true,
      ],
      [
        'github_repo: acme/app\ngithub_runner_id: 7\ngithub_pause_labels: ["e2e,gpu"]',
        'github_pause_labels.0: a label has no spaces or commas',
        true,
      ],
      [
        'github_repo: acme/app\ngithub_runner_id: 7\ngithub_pause_labels: [e2e, E2E]',
        "github_pause_labels: 'E2E' is listed twice",
        true,
      ],
      [
        'github_repo: acme/app\ngithub_runner_id: 7\ngithub_pause_labels: e2e',
        'github_pause_labels: expected a list of label names',
        true,
      ],
    ])('rejects %j, naming the runner and the field', (fields, expected, onGithub) => {
      const text = onGithub
        ? github(fields)
        : `runners:${bare}\n    ${fields.split('\n').join('\n    ')}`;
      expect(errorOf(text)).toBe(`inv.yml: runner 'metal-1': ${expected}`);
    });
  });

  describe('the reset proof fields (baseline_snapshot, verify_reset, canary_path, verify_cmd)', () => {
    const onVm = (extra: string): string =>
      `runners:${proxmox}\n    ${extra.split('\n').join('\n    ')}`;
    const onMetal = (extra: string): string =>
      `runners:${bare}\n    ${extra.split('\n').join('\n    ')}`;

    it('takes them on their backend; unset, verify_reset follows the backend', () => {
      const { inventory } = parseInventory(
        `${onVm('baseline_snapshot: golden-1\nverify_reset: required\ncanary_path: /srv/canary')}${bare}`,
      );
      const vm = inventory.get('vm-1')!;
      expect(vm).toMatchObject({ baseline_snapshot: 'golden-1', verify_reset: 'required' });
      expect(verifyModeOf(vm)).toBe('required');
      expect(canaryPathOf(vm)).toBe('/srv/canary');
      const metal = inventory.get('metal-1')!;
      expect(metal.verify_reset).toBeUndefined();
      expect(verifyModeOf(metal)).toBe('off');
      const plain = parseInventory(`runners:${proxmox}`).inventory.get('vm-1')!;
      expect(verifyModeOf(plain)).toBe('canary');
      expect(canaryPathOf(plain)).toBe('/var/lib/e2epool/canary');
      expect(plain).not.toHaveProperty('baseline_snapshot');
    });

    it('a bare-metal runner with verify_cmd verifies with it by default; off turns that off', () => {
      const cmd = parseInventory(onMetal('verify_cmd: /usr/local/bin/clean?')).inventory;
      expect(cmd.get('metal-1')!).toMatchObject({ verify_cmd: '/usr/local/bin/clean?' });
      expect(verifyModeOf(cmd.get('metal-1')!)).toBe('required');
      const off = parseInventory(onMetal('verify_cmd: /bin/true\nverify_reset: off')).inventory;
      expect(verifyModeOf(off.get('metal-1')!)).toBe('off');
    });

    it('verifyModeOf reads registry fields too (no verify_reset: the default)', () => {
      expect(verifyModeOf({ backend: 'proxmox' })).toBe('canary');
      expect(verifyModeOf({ backend: 'proxmox', verify_reset: 'off' })).toBe('off');
      expect(verifyModeOf({ backend: 'bare_metal', verify_cmd: ' ' })).toBe('off');
      expect(
        verifyModeOf({ backend: 'bare_metal', verify_cmd: 'x', verify_reset: 'required' }),
      ).toBe('required');
    });

    it.each([
      [
        'bare metal',
        'baseline_snapshot: golden',
        onMetal('baseline_snapshot: golden'),
        "runner 'metal-1': baseline_snapshot: only for backend proxmox (a bare-metal runner is reset by its reset_cmd, not to a snapshot)",
      ],
      [
        'bare metal',
        'canary_path: /x',
        onMetal('canary_path: /x'),
        "runner 'metal-1': canary_path: only for backend proxmox",
      ],
      [
        'bare metal',
        'verify_reset: canary',
        onMetal('verify_reset: canary'),
        "runner 'metal-1': verify_reset: 'canary' needs the Proxmox guest agent; a bare-metal runner verifies with verify_cmd (use required or off)",
      ],
      [
        'bare metal',
        'verify_reset: required',
        onMetal('verify_reset: required'),
        "runner 'metal-1': verify_reset: required needs verify_cmd (the command that proves the reset)",
      ],
      [
        'Proxmox',
        'verify_cmd: /bin/true',
        onVm('verify_cmd: /bin/true'),
        "runner 'vm-1': verify_cmd: only for backend bare_metal (a Proxmox runner proves its reset with the canary (verify_reset, canary_path))",
      ],
      [
        'Proxmox',
        'verify_reset: always',
        onVm('verify_reset: always'),
        "runner 'vm-1': verify_reset: expected 'canary', 'required' or 'off'",
      ],
      [
        'Proxmox',
        'baseline_snapshot: 1golden',
        onVm('baseline_snapshot: 1golden'),
        "runner 'vm-1': baseline_snapshot: expected a Proxmox snapshot name (a letter, then letters, digits, _ or -; at least 2 characters)",
      ],
      [
        'Proxmox',
        'baseline_snapshot: gold.en',
        onVm('baseline_snapshot: gold.en'),
        "runner 'vm-1': baseline_snapshot: expected a Proxmox snapshot name",
      ],
      [
        'Proxmox',
        `baseline_snapshot: ${'g'.repeat(41)}`,
        onVm(`baseline_snapshot: ${'g'.repeat(41)}`),
        "runner 'vm-1': baseline_snapshot: a Proxmox snapshot name has at most 40 characters",
      ],
      [
        'Proxmox',
        'baseline_snapshot: Current',
        onVm('baseline_snapshot: Current'),
        "runner 'vm-1': baseline_snapshot: 'Current' is reserved by Proxmox",
      ],
      [
        'Proxmox',
        'canary_path: var/lib/canary',
        onVm('canary_path: var/lib/canary'),
        "runner 'vm-1': canary_path: expected an absolute path to a file (starting with /)",
      ],
      [
        'Proxmox',
        'canary_path: /var/lib/',
        onVm('canary_path: /var/lib/'),
        "runner 'vm-1': canary_path: expected an absolute path to a file (starting with /)",
      ],
      [
        'Proxmox',
        'canary_path: /var/../etc/passwd',
        onVm('canary_path: /var/../etc/passwd'),
        "runner 'vm-1': canary_path: must not contain '..'",
      ],
    ])('rejects on %s: %s, naming the runner and the field', (_backend, _field, text, expected) => {
      expect(errorOf(text)).toContain(`inv.yml: ${expected}`);
    });
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

  it('agent_token: its own credential for /ws/agent; the REST token is then refused there; errors name runner and field, never the value', () => {
    const guarded = `${bare}\n    agent_token: agent-secret-1`;
    const { inventory } = parseInventory(`runners:${guarded}${proxmox}`, 'inv.yml');
    expect(inventory.agentCredential('metal-1', 'agent-secret-1')).toBe('ok');
    expect(inventory.agentCredential('metal-1', 'tok-metal-1')).toBe('rest-token');
    expect(inventory.agentCredential('metal-1', 'tok-vm-1')).toBe('invalid');
    expect(inventory.agentCredential('vm-1', 'agent-secret-1')).toBe('invalid');
    // Without one, the old single-token behaviour.
    expect(inventory.agentCredential('vm-1', 'tok-vm-1')).toBe('ok');
    expect(inventory.agentCredential('nope', 'tok-vm-1')).toBe('invalid');
    // The agent token is not a REST credential.
    expect(inventory.runnerIdForToken('agent-secret-1')).toBeUndefined();
    expect(inventory.hasAgentToken('metal-1')).toBe(true);
    expect(inventory.sharedCredentialRunners()).toEqual(['vm-1']);

    expect(errorOf(`runners:${bare}\n    agent_token: tok-metal-1`)).toBe(
      "inv.yml: runner 'metal-1': agent_token: must differ from token",
    );
    expect(errorOf(`runners:${bare}\n    agent_token: ''`)).toBe(
      "inv.yml: runner 'metal-1': agent_token: must not be empty",
    );
    expect(errorOf(`runners:${bare}\n    agent_token: 'a b'`)).toBe(
      "inv.yml: runner 'metal-1': agent_token: must not contain white space",
    );
    expect(errorOf(`runners:${bare}\n    agent_token: tok-vm-1${proxmox}`)).toBe(
      "inv.yml: runner 'vm-1': token: same value as the agent_token of runner 'metal-1' (a token must identify one runner)",
    );
    const other = bare
      .replace('runner_id: metal-1', 'runner_id: metal-2')
      .replace('tok-metal-1', 'tok-metal-2');
    expect(errorOf(`runners:${guarded}${other}\n    agent_token: agent-secret-1`)).toBe(
      "inv.yml: runner 'metal-2': agent_token: same value as the agent_token of runner 'metal-1' (a token must identify one runner)",
    );
    expect(errorOf(`runners:${guarded}${other}\n    agent_token: agent-secret-1`)).not.toContain(
      'agent-secret-1',
    );
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

describe("runner_state of inventory-file runners (quarantine, current baseline, a refresh's drain)", () => {
  const file = parseInventory(
    `runners:${proxmox}\n    baseline_snapshot: golden-1${bare}`,
  ).inventory;
  const at = new Date('2026-12-01T00:00:00Z');

  it('reads them by runner id: quarantined, drained by a refresh, refreshed baseline', () => {
    const inv = file.withRegistry(
      [],
      [
        {
          ...noState('vm-1'),
          quarantine: { reason: 'proof failed', source: 'verification', at },
          refreshedBaseline: 'e2epool-baseline-20261201000000',
          baselineFrom: 'golden-1',
          draining: true,
        },
        { ...noState('gone'), quarantine: { reason: 'x', source: 'operator', at } },
      ],
    );
    expect(inv.isQuarantined('vm-1')).toBe(true);
    expect(inv.isDraining('vm-1')).toBe(true);
    expect(inv.isQuarantined('metal-1')).toBe(false);
    // A state row of a runner no longer defined is not counted.
    expect(inv.quarantinedCount).toBe(1);
    expect(inv.currentBaseline('vm-1')).toBe('e2epool-baseline-20261201000000');
    expect(checkpointInput(inv.get('vm-1')!, loadSettings({}), inv).runner).toMatchObject({
      baselineSnapshot: 'e2epool-baseline-20261201000000',
    });
    // The file's runners keep their state across a file reload (withRegistry keeps it).
    expect(inv.withRegistry([]).isQuarantined('vm-1')).toBe(true);
  });

  it('a changed baseline_snapshot is current: the refresh only while its configured value stands', () => {
    const refreshed = {
      ...noState('vm-1'),
      refreshedBaseline: 'e2epool-baseline-20261201000000',
      baselineFrom: 'golden-0',
    };
    expect(file.withRegistry([], [refreshed]).currentBaseline('vm-1')).toBe('golden-1');
    expect(file.currentBaseline('vm-1')).toBe('golden-1');
    expect(file.currentBaseline('metal-1')).toBeUndefined();
  });
});

describe('the GitLab poll interval of a checkpoint', () => {
  /** n bare-metal runners `<prefix>-0`…, each entry followed by `extra` lines. */
  const entries = (n: number, prefix: string, extra = '') =>
    Array.from({ length: n }, (_, i) => bare.replaceAll('metal-1', `${prefix}-${i}`) + extra).join(
      '',
    );
  const many = (n: number) => `runners:${entries(n, 'metal')}`;

  it("is E2EPOOL_POLLER_INTERVAL_SECONDS while the fleet polls within the polls' share of the budget", () => {
    const s = loadSettings({ E2EPOOL_POLLER_INTERVAL_SECONDS: '20' });
    // 10 requests/s, 35 % of them for polls: 70 runners every 20 s is exactly 3.5/s.
    expect(budgetedPollIntervalSeconds(s, 70)).toBe(20);
    expect(budgetedPollIntervalSeconds(s, 71)).toBeGreaterThan(20);
    const { inventory } = parseInventory(many(3));
    expect(inventory.gitlabRunnerCount).toBe(3);
    expect(
      checkpointInput(inventory.get('metal-0')!, s, inventory).timing.pollerIntervalSeconds,
    ).toBe(20);
  });

  it('stretches with the fleet so that its polls fit the share: 1,000 runners at 3.5 polls/s poll every ~286 s', () => {
    const s = loadSettings({ E2EPOOL_POLLER_INTERVAL_SECONDS: '20' });
    expect(budgetedPollIntervalSeconds(s, 1000)).toBeCloseTo(1000 / 3.5);
    const slow = loadSettings({
      E2EPOOL_POLLER_INTERVAL_SECONDS: '20',
      E2EPOOL_GITLAB_MAX_RPS: '2',
      E2EPOOL_GITLAB_POLL_SHARE: '0.25',
    });
    expect(budgetedPollIntervalSeconds(slow, 3)).toBe(20);
    expect(budgetedPollIntervalSeconds(slow, 30)).toBe(60);
  });

  it('counts only GitLab runners; a GitHub runner keeps the configured interval', () => {
    const s = loadSettings({ E2EPOOL_POLLER_INTERVAL_SECONDS: '0.1', E2EPOOL_GITLAB_MAX_RPS: '1' });
    const github = '\n    ci_adapter: github\n    github_repo: acme/app';
    const { inventory } = parseInventory(`${many(4)}${entries(2, 'gh', github)}`);
    expect(inventory.gitlabRunnerCount).toBe(4);
    expect(
      checkpointInput(inventory.get('metal-0')!, s, inventory).timing.pollerIntervalSeconds,
    ).toBeCloseTo(4 / 0.35);
    expect(checkpointInput(inventory.get('gh-0')!, s, inventory).timing.pollerIntervalSeconds).toBe(
      0.1,
    );
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

  it('refuses a reload that puts two runners on one VM or gives a runner_id the database cannot hold', () => {
    const path = join(dir, 'inventory.yml');
    writeFileSync(path, `runners:${proxmox}`);
    const { log, lines } = capturingLogger();
    const store = InventoryStore.load(path, log);
    const before = store.inventory;
    const twin = proxmox.replace('runner_id: vm-1', 'runner_id: vm-2').replace('tok-vm-1', 't2');
    writeFileSync(path, `runners:${proxmox}${twin}`);
    expect(store.reload()).toBe(false);
    writeFileSync(path, `runners:${proxmox}${bare.replace('metal-1', '"m\\0"')}`);
    expect(store.reload()).toBe(false);
    expect(store.inventory).toBe(before);
    const refusals = lines.filter((l) => String(l.msg).startsWith('inventory change refused'));
    expect(refusals.map((l) => l.level)).toEqual([50, 50]);
    expect(refusals[0]!.msg).toContain("runner 'vm-2': proxmox_vmid: same VM as runner 'vm-1'");
    expect(refusals[1]!.msg).toContain(
      "runner 'm\\u0000': runner_id: must not contain control characters",
    );
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
