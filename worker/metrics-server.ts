import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../config/logger';

export interface MetricsServer {
  port: number;
  /** `http://host:port/metrics`, reachable from this host. */
  url: string;
  close(): Promise<void>;
}

/**
 * Serves `registry` at `GET /metrics` (Prometheus text) on `host:port`; port 0
 * picks a free one. Anything else is 404. A port in use fails the start.
 */
export async function startMetricsServer(o: {
  registry: Registry;
  host: string;
  port: number;
  log: Logger;
}): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('Not Found\n');
      return;
    }
    o.registry.metrics().then(
      (text) => res.writeHead(200, { 'Content-Type': o.registry.contentType }).end(text),
      (err: unknown) => {
        o.log.warn({ err: (err as Error).message }, 'metrics: cannot collect the worker metrics');
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end('cannot collect metrics\n');
      },
    );
  });
  // A scraper that stalls must not hold a socket for long.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = o.host === '0.0.0.0' || o.host === '::' ? '127.0.0.1' : o.host;
  return {
    port,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
