import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/** An HTTPS server in front of an HTTP stand-in, with a self-signed certificate of its own. */
export interface TlsFront {
  /** `https://127.0.0.1:<port>` */
  url: string;
  /** The certificate (PEM), usable as a CA file. */
  certFile: string;
  /** Its SHA-256 fingerprint, `AB:CD:...`. */
  fingerprint: string;
  /** Requests that got through the TLS handshake (a refused handshake sends none). */
  requestsSeen(): number;
  close(): Promise<void>;
}

/**
 * Starts an HTTPS front for `upstreamUrl`, like pveproxy with its self-signed
 * node certificate (for 127.0.0.1 and localhost); key and certificate go in `dir`.
 */
export async function startTlsFront(upstreamUrl: string, dir: string): Promise<TlsFront> {
  const certFile = join(dir, 'cert.pem');
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
  const upstream = new URL(upstreamUrl);
  let seen = 0;
  const front = createServer(
    { key: readFileSync(keyFile), cert: readFileSync(certFile) },
    (req, res) => {
      seen += 1;
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
  return {
    url: `https://127.0.0.1:${(front.address() as AddressInfo).port}`,
    certFile,
    fingerprint: new X509Certificate(readFileSync(certFile)).fingerprint256,
    requestsSeen: () => seen,
    close: () => new Promise<void>((r) => front.close(() => r())),
  };
}
