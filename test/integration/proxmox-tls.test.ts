import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { ProxmoxClient } from '../../activities/proxmox/client';
import { proxmoxHttpsAgent, type ProxmoxTls } from '../../activities/proxmox/tls';
import { startProxmoxStandIn, type ProxmoxStandIn } from '../stand-ins/proxmox';

/**
 * TLS towards Proxmox: verification is on by default; a private CA file, a
 * pinned fingerprint or an explicit insecure option make a self-signed node
 * certificate acceptable. On a failed check the API token is never sent.
 */
describe('Proxmox TLS', () => {
  let dir: string;
  let pve: ProxmoxStandIn;
  let front: Server;
  let url: string;
  let certFile: string;
  let fingerprint: string;
  let requestsSeen = 0;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-tls-'));
    certFile = join(dir, 'cert.pem');
    const keyFile = join(dir, 'key.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        certFile,
        '-days',
        '1',
        '-subj',
        '/CN=pve.test',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    fingerprint = new X509Certificate(readFileSync(certFile)).fingerprint256;
    pve = await startProxmoxStandIn();
    pve.addVm('pve1', 300, { status: 'running' });
    const upstream = new URL(pve.url);
    // An HTTPS node in front of the stand-in, like pveproxy with its self-signed certificate.
    front = createServer(
      { key: readFileSync(keyFile), cert: readFileSync(certFile) },
      (req, res) => {
        requestsSeen += 1;
        const up = request(
          {
            host: upstream.hostname,
            port: upstream.port,
            path: req.url,
            method: req.method,
            headers: req.headers,
          },
          (r) => {
            res.writeHead(r.statusCode ?? 502, r.statusMessage, r.headers);
            r.pipe(res);
          },
        );
        req.pipe(up);
      },
    );
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    url = `https://127.0.0.1:${(front.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((r) => front?.close(r));
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
    const before = requestsSeen;
    const err = await failure(client({ verify: true }).vmStatus());
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toMatch(
      /TLS verification failed .*set proxmox_ca_file or proxmox_fingerprint/,
    );
    expect(requestsSeen).toBe(before);
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
    const before = requestsSeen;
    const wrong = fingerprint.replace(/^../, fingerprint.startsWith('00') ? '11' : '00');
    const err = await failure(client({ verify: true, fingerprint: wrong }).vmStatus());
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toMatch(/does not match the pinned one/);
    expect(requestsSeen).toBe(before);
  });

  it('skips verification only when told to', async () => {
    await expect(client({ verify: false }).vmStatus()).resolves.toMatchObject({
      status: 'running',
    });
  });
});
