import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Express } from 'express';
import { FakeAgents } from '../helpers/fake-agents';
import { startTestController, type TestController } from '../helpers/controller';
import { bareMetalInventory } from '../helpers/env';
import { REPO } from '../helpers/processes';

/**
 * `GET /openapi.json` is a valid OpenAPI 3.1 document (checked by an
 * OpenAPI validator) that names every route Express serves; `/docs` serves
 * the reference page from the swagger-ui-dist package, no CDN.
 */
interface Layer {
  route?: { path: string; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
}

/** Every (method, path) the app routes, paths in OpenAPI's `{param}` form. */
function expressRoutes(app: Express): string[] {
  const out: string[] = [];
  const walk = (stack: Layer[]) => {
    for (const layer of stack) {
      if (layer.route) {
        for (const m of Object.keys(layer.route.methods))
          out.push(`${m.toUpperCase()} ${layer.route.path.replace(/:(\w+)/g, '{$1}')}`);
      } else if (layer.handle?.stack) walk(layer.handle.stack);
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack);
  return out;
}

describe('OpenAPI', () => {
  let c: TestController;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-openapi-'));
    c = await startTestController({ agents: new FakeAgents(), inventory: bareMetalInventory() });
  });
  afterAll(async () => {
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is a valid OpenAPI 3.1 document naming every Express route, with its auth schemes and error shapes', async () => {
    const res = await fetch(`${c.api.url}/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
      components: { securitySchemes: Record<string, unknown>; schemas: Record<string, unknown> };
    };
    expect(doc.openapi).toBe('3.1.0');
    const file = join(dir, 'openapi.json');
    writeFileSync(file, JSON.stringify(doc));
    const cli = join(
      REPO,
      'node_modules',
      '@seriousme',
      'openapi-schema-validator',
      'bin',
      'validate-api-cli.js',
    );
    const { stdout } = await promisify(execFile)(process.execPath, [cli, file]);
    expect(JSON.parse(stdout)).toEqual({ valid: true });

    const app = c.api.server.listeners('request')[0] as unknown as Express;
    const routes = expressRoutes(app);
    expect(routes.length).toBeGreaterThan(15);
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`),
    );
    expect(routes.filter((r) => !documented.includes(r))).toEqual([]);
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual([
      'adminToken',
      'githubSignature',
      'gitlabWebhookToken',
      'metricsToken',
      'runnerToken',
      'uiSession',
    ]);
    expect(Object.keys(doc.components.schemas)).toEqual(
      expect.arrayContaining(['Error', 'ValidationError', 'Checkpoint', 'LogPage']),
    );
    expect(Object.keys(doc.paths['/checkpoint/create']!.post!.responses)).toEqual(
      expect.arrayContaining(['201', '403', '409', '422', '429', '504']),
    );
  });

  it('serves the reference page and its assets from the package, nothing else of it', async () => {
    const page = await fetch(`${c.api.url}/docs`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('/docs/assets/swagger-ui-bundle.js');
    expect(html).not.toMatch(/https?:\/\//);
    for (const asset of ['swagger-ui-bundle.js', 'swagger-ui.css', 'init.js'])
      expect((await fetch(`${c.api.url}/docs/assets/${asset}`)).status).toBe(200);
    expect((await fetch(`${c.api.url}/docs/assets/package.json`)).status).toBe(404);
    expect((await fetch(`${c.api.url}/docs/assets/..%2Fpackage.json`)).status).toBe(404);
  });
});
