import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { ProxmoxClient } from '../../activities/proxmox/client';
import { proxmoxHttpsAgent, type ProxmoxTls } from '../../activities/proxmox/tls';
import { startTlsFront, type TlsFront } from '../helpers/tls-front';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * TLS towards Proxmox: verification is on by default; a private CA file, a
 * pinned fingerprint or an explicit insecure option make a self-signed node
 * certificate acceptable. On a failed check the API token is never sent.
 */
describe('Proxmox TLS', () => {
  let dir: string;
  let pve: ProxmoxStandIn;
  let front: TlsFront;
  let url: string;
  let certFile: string;
  let fingerprint: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-tls-'));
    pve = await startProxmoxStandIn();
    pve.addVm('pve1', 300, { status: 'running' });
    // An HTTPS node in front of the stand-in, like pveproxy with its self-signed certificate.
    front = await startTlsFront(pve.url, dir);
    url = front.url;
    certFile = front.certFile;
    fingerprint = front.fingerprint;
  });

  afterAll(async () => {
    await front?.close();
    await pve?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function client(tls: ProxmoxTls): ProxmoxClient {
    return new ProxmoxClient({
      baseUrl: url,
      node: 'pve1',
      vmid: 300,
      tokenId: pve.tokenId,
      tokenSecret: pve.tokenSecret,
      httpsAgent: proxmoxHttpsAgent(tls),
      timeoutMs: 5000,
    });
  }

  async function failure(p: Promise<unknown>): Promise<ApplicationFailure> {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApplicationFailure);
    return err as ApplicationFailure;
  }

  it('refuses a self-signed certificate by default, as a permanent failure, before sending anything', async () => {
    const before = front.requestsSeen();
    const err = await failure(client({ verify: true }).vmStatus());
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toMatch(
      /TLS verification failed .*set proxmox_ca_file or proxmox_fingerprint/,
    );
    expect(front.requestsSeen()).toBe(before);
  });

  it('accepts the certificate when its CA file is configured', async () => {
    await expect(client({ verify: true, caFile: certFile }).vmStatus()).resolves.toMatchObject({
      status: 'running',
    });
  });

  it('accepts a pinned fingerprint and refuses a wrong one without sending the token', async () => {
    await expect(client({ verify: true, fingerprint }).vmStatus()).resolves.toMatchObject({
      status: 'running',
    });
    const before = front.requestsSeen();
    const wrong = fingerprint.replace(/^../, fingerprint.startsWith('00') ? '11' : '00');
    const err = await failure(client({ verify: true, fingerprint: wrong }).vmStatus());
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toMatch(/does not match the pinned one/);
    expect(front.requestsSeen()).toBe(before);
  });

  it('skips verification only when told to', async () => {
    await expect(client({ verify: false }).vmStatus()).resolves.toMatchObject({
      status: 'running',
    });
  });
});
