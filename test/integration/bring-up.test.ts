import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { databaseUrlOf } from '../../api/server';
import { MIGRATIONS } from '../../store/migrations';
import { freePort } from '../../dev/ports';
import { spawnAgent, stopProcess } from '../helpers/agent-process';
import { startAgentController, type AgentController } from '../helpers/controller';
import {
  bareMetalRunnerYaml,
  controllerEnv,
  proxmoxRunnerYaml,
  testRunners,
  writeInventory,
} from '../helpers/env';
import { runCli } from '../helpers/processes';
import { shared } from '../helpers/shared';
import { createNamespace } from '../helpers/temporal';
import { startTlsFront, type TlsFront } from '../helpers/tls-front';
import { waitFor } from '../helpers/wait';
import { startGitHubStandIn } from '../stand-ins/github';
import { startGitLabStandIn, type GitLabStandIn } from '../stand-ins/gitlab';
import {
  PVE9_VM_ADMIN_PRIVILEGES,
  PVE_VM_ADMIN_PRIVILEGES,
  startProxmoxStandIn,
  type ProxmoxStandIn,
} from '../stand-ins/proxmox';

const R = testRunners([
  'pve',
  'metal',
  'lonely',
  'tls',
  'gh',
  'gaDown',
  'gaUnset',
  'gaOff',
  'gaBlocked',
]);
/** The agent tokens of the healthy stack's runners (each agent has a credential of its own). */
const AGENT_TOKENS = {
  pve: `agent-${randomBytes(16).toString('hex')}`,
  metal: `agent-${randomBytes(16).toString('hex')}`,
};
const VMID = 4101;
const GITLAB_RUNNER = 6001;

/**
 * `e2epool doctor` and `e2epool ping` as an operator runs them: real
 * processes against a real controller (Temporal, Postgres, agents over the
 * WebSocket) and the GitLab and Proxmox stand-ins.
 */
describe('bring-up check', () => {
  let dir: string;
  let c: AgentController;
  let gl: GitLabStandIn;
  let pve: ProxmoxStandIn;
  let front: TlsFront;
  const agents: ChildProcess[] = [];

  const pveYaml = (r: typeof R.pve, url = pve.url, extra: Record<string, string | number> = {}) =>
    proxmoxRunnerYaml(
      { url, tokenId: pve.tokenId, tokenSecret: pve.tokenSecret },
      { runnerId: r.id, token: r.token, vmid: VMID, extra },
    );
  const metalYaml = () => bareMetalRunnerYaml(R.metal, { agent_token: AGENT_TOKENS.metal });
  const healthyInventory = () =>
    `runners:\n${pveYaml(R.pve, pve.url, { gitlab_runner_id: GITLAB_RUNNER, agent_token: AGENT_TOKENS.pve })}${metalYaml()}`;

  const doctorEnv = (extra: Record<string, string> = {}) =>
    controllerEnv({
      E2EPOOL_DATABASE_URL: databaseUrlOf(c.ds),
      E2EPOOL_TASK_QUEUE: c.taskQueue,
      E2EPOOL_INVENTORY_PATH: writeInventory(healthyInventory()),
      E2EPOOL_GITLAB_URL: gl.url,
      E2EPOOL_GITLAB_TOKEN: gl.token,
      ...extra,
    });
  const doctor = async (env: Record<string, string>, ...args: string[]) => {
    const res = await runCli(['doctor', '--timeout', '5', ...args], env, 60_000);
    // Secrets never reach the output, whatever failed.
    for (const secret of [
      gl.token,
      pve.tokenSecret,
      R.pve.token,
      R.metal.token,
      AGENT_TOKENS.pve,
      AGENT_TOKENS.metal,
    ]) {
      expect(res.stdout + res.stderr).not.toContain(secret);
    }
    return { ...res, lines: res.stdout.trimEnd().split('\n') };
  };
  const failing = (lines: string[]) => lines.filter((l) => l.startsWith('fail '));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-bringup-'));
    gl = await startGitLabStandIn();
    gl.addRunner(GITLAB_RUNNER);
    pve = await startProxmoxStandIn();
    pve.addVm('pve1', VMID, { status: 'running' });
    c = await startAgentController({
      inventory: `runners:\n${pveYaml(R.pve, pve.url, { agent_token: AGENT_TOKENS.pve })}${metalYaml()}${bareMetalRunnerYaml(R.lonely)}`,
      gitlab: null,
    });
    for (const [r, agentToken] of [
      [R.pve, AGENT_TOKENS.pve],
      [R.metal, AGENT_TOKENS.metal],
    ] as const)
      agents.push(spawnAgent(dir, c.api.url, r, { agentToken }).child);
    for (const r of [R.pve, R.metal])
      await waitFor(`agent of ${r.id} connected`, () => c.bus.isConnected(r.id));
    // The worker's pollers are what the worker check looks for.
    const conn = await Connection.connect({ address: shared().temporalAddress });
    try {
      await waitFor('the worker polling its task queue', async () => {
        const res = await conn.workflowService.describeTaskQueue({
          namespace: 'default',
          taskQueue: { name: c.taskQueue, kind: 1 },
          taskQueueType: 1,
        });
        return (res.pollers ?? []).length > 0;
      });
    } finally {
      await conn.close();
    }

    // An HTTPS Proxmox node in front of the stand-in, with a self-signed certificate.
    front = await startTlsFront(pve.url, dir);
  });

  afterAll(async () => {
    for (const a of agents) await stopProcess(a);
    await c?.stop();
    await gl?.close();
    await pve?.close();
    await front?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  afterEach(() => {
    gl.setScopes(['api']);
    pve.setPrivileges(PVE_VM_ADMIN_PRIVILEGES);
  });

  describe('e2epool doctor', () => {
    it('passes every check on a healthy stack and exits 0', async () => {
      const res = await doctor(doctorEnv());
      expect(res.stderr).toBe('');
      expect(res.lines.filter((l) => !l.startsWith('ok '))).toEqual([]);
      expect(res.code).toBe(0);
      // In order: the controller's checks, then each runner's.
      expect(res.lines.map((l) => l.split(':')[0])).toEqual([
        'ok temporal',
        'ok search-attributes',
        'ok postgres',
        'ok worker',
        'ok inventory',
        'ok agent-credential',
        'ok gitlab-token',
        `ok ${R.pve.id} gitlab-runner`,
        `ok ${R.pve.id} proxmox-api`,
        `ok ${R.pve.id} proxmox-privileges`,
        `ok ${R.pve.id} proxmox-vm`,
        `ok ${R.pve.id} proxmox-guest-agent`,
        `ok ${R.pve.id} proxmox-guest-files`,
        `ok ${R.pve.id} agent`,
        `ok ${R.metal.id} agent`,
      ]);
      expect(res.lines[3]).toMatch(new RegExp(`1 worker polling task queue ${c.taskQueue}`));
      expect(res.lines[10]).toContain(`VM ${VMID} on node pve1 is running`);
    });

    it('writes nothing: no GitLab or Proxmox mutation', async () => {
      const glBefore = gl.calls.length;
      const pveBefore = pve.calls.length;
      await doctor(doctorEnv());
      expect(gl.calls.slice(glBefore).every((k) => k.method === 'GET')).toBe(true);
      expect(pve.calls.slice(pveBefore).every((k) => k.method === 'GET')).toBe(true);
      expect(gl.runner(GITLAB_RUNNER).pausedHistory).toEqual([]);
    });

    it('--json prints one document: ok, and each check with name, runner, ok, detail, fix', async () => {
      gl.setScopes(['read_api']);
      const res = await doctor(doctorEnv(), '--json');
      expect(res.code).toBe(1);
      const doc = JSON.parse(res.stdout) as {
        ok: boolean;
        checks: Array<Record<string, unknown>>;
      };
      expect(doc.ok).toBe(false);
      for (const k of doc.checks) {
        expect(Object.keys(k).sort()).toEqual(['detail', 'fix', 'name', 'ok', 'runner']);
      }
      expect(doc.checks[0]).toMatchObject({ name: 'temporal', runner: null, ok: true, fix: null });
      expect(doc.checks.find((k) => k.name === 'gitlab-token')).toMatchObject({
        ok: false,
        runner: null,
        detail: expect.stringContaining('cannot pause') as unknown,
        fix: expect.stringContaining('api scope') as unknown,
      });
      expect(doc.checks.find((k) => k.name === 'agent' && k.runner === R.metal.id)).toMatchObject({
        ok: true,
      });
    });

    it('Temporal down: a failing temporal line, exit 1, no hang', async () => {
      const port = await freePort();
      const started = Date.now();
      const res = await doctor(doctorEnv({ TEMPORAL_ADDRESS: `127.0.0.1:${port}` }));
      expect(res.code).toBe(1);
      expect(res.lines[0]).toMatch(
        new RegExp(
          `^fail temporal: cannot reach Temporal at 127\\.0\\.0\\.1:${port}: .* — start Temporal`,
        ),
      );
      expect(res.lines).toContain(
        `ok postgres: reachable, migrations current (${MIGRATIONS.length} applied)`,
      );
      expect(Date.now() - started).toBeLessThan(30_000);
    });

    it('a namespace without the search attributes: names each and its command, exit 1', async () => {
      const namespace = await createNamespace('ns-doctor');
      const res = await doctor(doctorEnv({ TEMPORAL_NAMESPACE: namespace }));
      expect(res.code).toBe(1);
      expect(res.lines[0]).toMatch(/^ok temporal: /);
      expect(res.lines[1]).toMatch(
        new RegExp(
          `^fail search-attributes: namespace ${namespace}: E2eRunnerId missing; E2eJobId missing; .* — run \`e2epool setup\`.*temporal operator search-attribute create --namespace ${namespace} --name E2eRunnerId --type Keyword`,
        ),
      );
    });

    it('a GitLab token with read_api only: cannot pause, exit 1', async () => {
      gl.setScopes(['read_api']);
      const res = await doctor(doctorEnv());
      expect(res.code).toBe(1);
      expect(failing(res.lines)).toEqual([
        expect.stringMatching(
          /^fail gitlab-token: token scopes read_api: cannot pause or unpause runners \(needs api or manage_runner\) — create a token with the api scope/,
        ) as unknown,
      ]);
    });

    it('a Proxmox token without VM.PowerMgmt: names the privilege and the grant, exit 1', async () => {
      pve.setPrivileges(PVE_VM_ADMIN_PRIVILEGES.filter((p) => p !== 'VM.PowerMgmt'));
      const res = await doctor(doctorEnv());
      expect(res.code).toBe(1);
      expect(failing(res.lines)).toEqual([
        `fail ${R.pve.id} proxmox-privileges: token ${pve.tokenId} lacks VM.PowerMgmt (start/stop) on /vms/${VMID} — grant them, e.g. pveum acl modify /vms/${VMID} -token '${pve.tokenId}' -role PVEVMAdmin (with privilege separation the token's user needs them too)`,
      ]);
    });

    it('the reset-proof checks: guest agent and file privileges (failing under required, warning under canary, skipped when off), the baseline snapshot', async () => {
      pve.addVm('pve1', 4102, { guestAgent: false });
      pve.addVm('pve1', 4103, { agent: null });
      pve.addVm('pve1', 4104, { snapshots: [{ name: 'golden', description: '' }] });
      pve.addVm('pve1', 4105, { blockedRpcs: ['guest-exec'] });
      const runner = (r: typeof R.pve, vmid: number, extra: Record<string, string> = {}) =>
        proxmoxRunnerYaml(
          { url: pve.url, tokenId: pve.tokenId, tokenSecret: pve.tokenSecret },
          { runnerId: r.id, token: r.token, vmid, extra },
        );
      const inventory = writeInventory(
        `runners:\n${runner(R.gaDown, 4102)}${runner(R.gaUnset, 4103, { verify_reset: 'required', baseline_snapshot: 'golden' })}${runner(R.gaOff, 4104, { verify_reset: 'off', baseline_snapshot: 'golden' })}${runner(R.gaBlocked, 4105)}`,
      );
      const guestLines = async () => {
        const res = await doctor(doctorEnv({ E2EPOOL_INVENTORY_PATH: inventory }));
        return res.lines.filter((l) => / proxmox-(guest|baseline)/.test(l));
      };
      const grant = `grant them, e.g. pveum acl modify /vms/VMID -token '${pve.tokenId}' -role PVEVMAdmin (with privilege separation the token's user needs them too)`;
      expect(await guestLines()).toEqual([
        `warn ${R.gaDown.id} proxmox-guest-agent: the guest agent of VM 4102 does not answer (QEMU guest agent is not running) — install and start qemu-guest-agent in the guest (systemctl enable --now qemu-guest-agent); the VM must be running; until then resets are reported unverified`,
        `ok ${R.gaDown.id} proxmox-guest-files: token ${pve.tokenId} may write and read guest files (VM.Monitor) on /vms/4102`,
        `fail ${R.gaUnset.id} proxmox-guest-agent: VM 4103 has the QEMU guest agent option off (agent unset or 0) — qm set 4103 --agent enabled=1, install qemu-guest-agent in the guest, then stop and start the VM`,
        `ok ${R.gaUnset.id} proxmox-guest-files: token ${pve.tokenId} may write and read guest files (VM.Monitor) on /vms/4103`,
        `fail ${R.gaUnset.id} proxmox-baseline: VM 4103 has no snapshot 'golden' (its current baseline) — take it (qm snapshot 4103 golden) or set baseline_snapshot to an existing one`,
        `ok ${R.gaOff.id} proxmox-guest-agent: not checked: verify_reset is off (resets are not proven)`,
        `ok ${R.gaOff.id} proxmox-guest-files: not checked: verify_reset is off (resets are not proven)`,
        `ok ${R.gaOff.id} proxmox-baseline: baseline snapshot 'golden' of VM 4104 exists`,
        `warn ${R.gaBlocked.id} proxmox-guest-agent: the QEMU guest agent of VM 4105 answers (qemu-ga 8.2.2; verify_reset: canary); guest-exec is disabled — a baseline refresh's update_cmd runs through guest-exec: allow it in the guest's qemu-ga if refreshes need one`,
        `ok ${R.gaBlocked.id} proxmox-guest-files: token ${pve.tokenId} may write and read guest files (VM.Monitor) on /vms/4105`,
      ]);
      // Proxmox VE 9 privileges do as well; without either generation's, required fails.
      pve.setPrivileges(PVE9_VM_ADMIN_PRIVILEGES);
      expect((await guestLines()).filter((l) => l.includes(R.gaUnset.id))[1]).toBe(
        `ok ${R.gaUnset.id} proxmox-guest-files: token ${pve.tokenId} may write and read guest files (VM.GuestAgent.FileRead, VM.GuestAgent.FileWrite) on /vms/4103`,
      );
      pve.setPrivileges(PVE_VM_ADMIN_PRIVILEGES.filter((p) => p !== 'VM.Monitor'));
      const lines = await guestLines();
      expect(lines).toContain(
        `fail ${R.gaUnset.id} proxmox-guest-files: token ${pve.tokenId} may not write or read guest files on /vms/4103: it lacks VM.Monitor (Proxmox VE 8) or VM.GuestAgent.FileRead and VM.GuestAgent.FileWrite (Proxmox VE 9) — ${grant.replace('VMID', '4103')}`,
      );
      expect(lines).toContain(
        `warn ${R.gaDown.id} proxmox-guest-files: token ${pve.tokenId} may not write or read guest files on /vms/4102: it lacks VM.Monitor (Proxmox VE 8) or VM.GuestAgent.FileRead and VM.GuestAgent.FileWrite (Proxmox VE 9) — ${grant.replace('VMID', '4102')}; until then resets are reported unverified`,
      );
      expect(lines.find((l) => l.includes(`${R.gaDown.id} proxmox-guest-agent`))).toBe(
        `fail ${R.gaDown.id} proxmox-guest-agent: Proxmox denied permission: Permission check failed (/vms/4102, VM.Monitor) — grant the token VM.Monitor (Proxmox VE 8) or VM.GuestAgent.Audit (Proxmox VE 9) on /vms/4102`,
      );
    });

    it('a Proxmox certificate that does not match the pinned fingerprint: TLS line, exit 1', async () => {
      const wrong = Array.from({ length: 32 }, () => 'AB').join(':');
      const inventory = writeInventory(
        `runners:\n${pveYaml(R.tls, front.url, { proxmox_fingerprint: wrong })}`,
      );
      const res = await doctor(doctorEnv({ E2EPOOL_INVENTORY_PATH: inventory }));
      expect(res.code).toBe(1);
      const tls = res.lines.find((l) => l.startsWith(`fail ${R.tls.id} proxmox-api:`));
      expect(tls).toMatch(/TLS verification failed .*does not match the pinned one/);
      expect(tls).toContain("— proxmox_fingerprint does not match the node's certificate");
      expect(res.lines).toContain(
        `fail ${R.tls.id} proxmox-privileges: not checked: the Proxmox API did not answer — fix the proxmox-api check first`,
      );
      // And without a pin or CA, the self-signed certificate is refused too.
      const unpinned = writeInventory(`runners:\n${pveYaml(R.tls, front.url)}`);
      const res2 = await doctor(doctorEnv({ E2EPOOL_INVENTORY_PATH: unpinned }));
      expect(res2.lines.find((l) => l.includes('proxmox-api'))).toMatch(
        /^fail .* proxmox-api: .*TLS verification failed.* — set proxmox_ca_file/,
      );
    });

    it('runners whose agent uses the REST token: a warning naming them, exit 0', async () => {
      const inventory = writeInventory(
        `runners:\n${pveYaml(R.pve, pve.url, { gitlab_runner_id: GITLAB_RUNNER, agent_token: AGENT_TOKENS.pve })}${bareMetalRunnerYaml(R.metal)}`,
      );
      const res = await doctor(doctorEnv({ E2EPOOL_INVENTORY_PATH: inventory }));
      expect(res.code).toBe(0);
      expect(res.lines.filter((l) => !l.startsWith('ok '))).toEqual([
        `warn agent-credential: 1 of 2 runners share one credential between agent and CI jobs (no agent token): ${R.metal.id} — give each an agent_token (inventory.yml, or POST /api/runners/{id}/rotate-agent-token) and put it in the agent's config`,
      ]);
      const json = await doctor(doctorEnv({ E2EPOOL_INVENTORY_PATH: inventory }), '--json');
      const doc = JSON.parse(json.stdout) as {
        ok: boolean;
        checks: Array<Record<string, unknown>>;
      };
      expect(doc.ok).toBe(true);
      expect(doc.checks.find((k) => k.name === 'agent-credential')).toMatchObject({
        ok: true,
        runner: null,
        fix: expect.stringContaining('agent_token') as unknown,
      });
    });

    it('an agent that is not connected: a failing agent line, exit 1', async () => {
      const inventory = writeInventory(
        `runners:\n${bareMetalRunnerYaml(R.metal)}${bareMetalRunnerYaml(R.lonely)}`,
      );
      const res = await doctor(doctorEnv({ E2EPOOL_INVENTORY_PATH: inventory }));
      expect(res.code).toBe(1);
      expect(failing(res.lines)).toEqual([
        expect.stringMatching(
          new RegExp(
            `^fail ${R.lonely.id} agent: agent not connected \\(no session on record: it never connected, or its credentials were revoked\\) — start the agent`,
          ),
        ) as unknown,
      ]);
    });

    it('a ci_adapter: github runner: its labels readable, or a failing line for a runner GitHub lacks', async () => {
      const gh = await startGitHubStandIn();
      try {
        gh.addRunner({ repo: 'acme/app' }, 81, { labels: ['e2e'] });
        const yaml = (id: number) =>
          `runners:\n${bareMetalRunnerYaml(R.metal, {
            ci_adapter: 'github',
            github_repo: 'acme/app',
            github_runner_id: id,
            github_pause_labels: '[e2e]',
          })}`;
        const env = (id: number) =>
          doctorEnv({
            E2EPOOL_INVENTORY_PATH: writeInventory(yaml(id)),
            E2EPOOL_GITHUB_URL: gh.url,
            E2EPOOL_GITHUB_TOKEN: gh.token,
          });
        const good = await doctor(env(81));
        expect(good.lines).toContain(
          `ok ${R.metal.id} github-runner: GitHub runner 81 in repository acme/app readable (labels: self-hosted, Linux, X64, e2e)`,
        );
        expect(good.code).toBe(0);
        const missing = await doctor(env(82));
        expect(missing.code).toBe(1);
        expect(failing(missing.lines)).toEqual([
          expect.stringMatching(
            new RegExp(
              `^fail ${R.metal.id} github-runner: GitHub has no runner 82 in repository acme/app, or the token may not see it — check github_runner_id \\(GET /repos/acme/app/actions/runners lists them\\)`,
            ),
          ) as unknown,
        ]);
        expect(missing.stdout).not.toContain(gh.token);
      } finally {
        await gh.close();
      }
    });

    it('exits 2 on a usage error', async () => {
      const res = await runCli(['doctor', '--timeout', 'soon'], doctorEnv());
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(/--timeout/);
    });
  });

  describe('e2epool ping', () => {
    it('pings the controller through the agent and prints the round trip', async () => {
      const res = await runCli(['ping', '--socket', join(dir, `${R.metal.id}.sock`)], {});
      expect(res.stderr).toBe('');
      expect(res.stdout).toMatch(
        new RegExp(`^pong from ws://127\\.0\\.0\\.1:\\d+/ws/agent in \\d+ ms\\n$`),
      );
      expect(res.code).toBe(0);
    });

    it('agent not running: the same message and exit code as the other commands', async () => {
      const socket = join(dir, 'nobody.sock');
      const ping = await runCli(['ping', '--socket', socket], {});
      const status = await runCli(['status', '--checkpoint', 'x', '--socket', socket], {});
      expect(ping.code).toBe(2);
      expect(ping.stderr).toBe(`Error: agent is not running (socket not found: ${socket})\n`);
      expect([ping.code, ping.stderr]).toEqual([status.code, status.stderr]);
    });
  });
});
