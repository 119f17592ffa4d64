import { readFileSync } from 'node:fs';
import { Agent as HttpsAgent, type AgentOptions, type RequestOptions } from 'node:https';
import type { Duplex } from 'node:stream';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';

export interface ProxmoxTls {
  /** Verify the certificate chain and host name (default). */
  verify: boolean;
  /** PEM file of the CA that signed the node certificate (e.g. pve-root-ca.pem). */
  caFile?: string;
  /** Pinned SHA-256 fingerprint of the leaf certificate, `AB:CD:...`. */
  fingerprint?: string;
}

/**
 * An agent that, for a pinned fingerprint, completes the TLS handshake and
 * checks the leaf certificate *before* handing the socket to the HTTP client,
 * so not one byte of the request (with its API token) reaches an impostor.
 */
class PinnedAgent extends HttpsAgent {
  constructor(
    private readonly fingerprint: string,
    opts: AgentOptions,
  ) {
    super(opts);
  }

  override createConnection(
    options: RequestOptions,
    cb?: (err: Error | null, socket: Duplex) => void,
  ): Duplex | undefined {
    const socket: TLSSocket = connect({
      ...(options as ConnectionOptions),
      rejectUnauthorized: false,
    });
    const fail = (err: Error) => {
      socket.destroy();
      cb?.(err, socket);
    };
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      socket.off('error', fail);
      const seen = socket.getPeerCertificate().fingerprint256?.toUpperCase();
      if (seen !== this.fingerprint.toUpperCase()) {
        fail(
          Object.assign(
            new Error(`certificate fingerprint ${seen ?? 'none'} does not match the pinned one`),
            { code: 'E2EPOOL_FINGERPRINT_MISMATCH' },
          ),
        );
        return;
      }
      cb?.(null, socket);
    });
    return undefined;
  }
}

/** The https.Agent for one Proxmox runner's TLS settings. */
export function proxmoxHttpsAgent(tls: ProxmoxTls): HttpsAgent {
  const base: AgentOptions = { keepAlive: true, maxSockets: 4 };
  if (tls.fingerprint) return new PinnedAgent(tls.fingerprint, base);
  if (!tls.verify) return new HttpsAgent({ ...base, rejectUnauthorized: false });
  return new HttpsAgent({
    ...base,
    rejectUnauthorized: true,
    ca: tls.caFile ? readFileSync(tls.caFile) : undefined,
  });
}
