import { createHmac } from 'node:crypto';
import { request } from 'node:http';
import fc from 'fast-check';
import { FakeAgents } from '../helpers/fake-agents';
import { startTestController, type TestController } from '../helpers/controller';
import { bareMetalRunnerYaml, testRunner, uniqueId } from '../helpers/env';

/**
 * Every operation of the API's own `/openapi.json`, walked with generated and
 * mutated inputs (fast-check, fixed seed): path and query values with NUL,
 * lone surrogates, bytes that are not UTF-8, 100 KB strings and
 * `__proto__`-like names; JSON bodies with wrong types, malformed JSON, wrong
 * content types and encodings; no auth, a runner token, the admin token, a
 * wrong token. No answer is a 5xx (but a documented 503 of a probe), and every
 * 4xx says why in JSON `{"detail": …}` (the fleet page's HTML pages answer
 * browsers with a page).
 */
const SEED = 20261207;
/** Runs per operation: ~30 operations, well under a minute on a loaded 2-core machine. */
const RUNS = 40;

const runner = testRunner('fuzz');
const ADMIN = `fuzz-admin-${'a'.repeat(40)}`;
const GL_SECRET = 'fuzz-gitlab-webhook-secret';
const GH_SECRET = 'fuzz-github-webhook-secret';

interface Op {
  method: string;
  path: string;
  params: Array<{ name: string; in: string }>;
  bodyTypes: string[];
  bodyFields: string[];
  documented: Set<number>;
}

interface Req {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

interface Res {
  status: number;
  type: string;
  text: string;
}

/** Percent-encodes every code unit as its (WTF-8) bytes: lone surrogates go out as the 3 bytes a sloppy client sends. */
function pct(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const next = s.charCodeAt(i + 1);
    if (c >= 0xd800 && c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      out += encodeURIComponent(s.slice(i, i + 2));
      i++;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      out +=
        `%${(0xe0 | (c >> 12)).toString(16)}%${(0x80 | ((c >> 6) & 0x3f)).toString(16)}%${(0x80 | (c & 0x3f)).toString(16)}`.toUpperCase();
    } else out += encodeURIComponent(s[i]!);
  }
  return out;
}

/** Strings that broke, or could break, a route: NUL, lone surrogates, prototype names, 100 KB. */
const nastyString = fc.oneof(
  fc.constantFrom(
    '\u0000',
    'a\u0000b',
    '\ud800',
    'x\udc00y',
    '__proto__',
    'constructor',
    'prototype',
    'hasOwnProperty',
    'toString',
    '..',
    '.',
    '',
    ' ',
    '%',
    'job-1-1-abcdef01',
    'x'.repeat(100_000),
    '\u{1F600}',
    '-1',
    '1e309',
    'null',
  ),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ maxLength: 300 }),
);

/** A path or query value as it goes on the wire: a string encoded, or raw bytes that need not be UTF-8. */
const wireValue = (known: string[]) =>
  fc.oneof(
    { weight: 4, arbitrary: nastyString.map(pct) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(...known.map(pct), '%FF', '%C0%AF', '%ED%A0%80', '%00'),
    },
    {
      weight: 1,
      arbitrary: fc
        .uint8Array({ minLength: 1, maxLength: 12 })
        .map((b) => [...b].map((x) => `%${x.toString(16).padStart(2, '0')}`).join('')),
    },
  );

/** JSON values of every type, for fields that expect one. */
const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  nastyString,
  fc.integer(),
  fc.constantFrom(0, -1, 2 ** 31, 2 ** 53 + 1, 1.5, true, false, null, [], {}),
  fc.array(nastyString, { maxLength: 3 }),
  fc.dictionary(nastyString, nastyString, { maxKeys: 3 }),
  fc.jsonValue({ maxDepth: 3 }),
);

function httpCall(base: URL, r: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: base.hostname,
        port: base.port,
        method: r.method,
        path: r.path,
        headers: {
          ...(r.body ? { 'content-length': String(r.body.length) } : {}),
          ...r.headers,
        },
        timeout: 20_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers['content-type'] ?? ''),
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 20 s')));
    req.on('error', reject);
    req.end(r.body);
  });
}

/** What the request was, short enough to read in a counterexample. */
function shown(r: Req): string {
  const path = r.path.length > 120 ? `${r.path.slice(0, 120)}…(${r.path.length})` : r.path;
  const body = r.body
    ? ` body(${r.body.length}): ${JSON.stringify(r.body.subarray(0, 200).toString('latin1'))}`
    : '';
  return `${r.method} ${path} ${JSON.stringify(r.headers).slice(0, 400)}${body}`;
}

describe('every OpenAPI operation under generated and mutated input', () => {
  const agents = new FakeAgents();
  let c: TestController;
  let base: URL;
  let ops: Op[] = [];
  const registryRunner = uniqueId('fuzzreg');

  beforeAll(async () => {
    c = await startTestController({
      agents,
      inventory: `runners:\n${bareMetalRunnerYaml(runner)}`,
      env: {
        E2EPOOL_ADMIN_TOKEN: ADMIN,
        E2EPOOL_GITLAB_WEBHOOK_SECRET: GL_SECRET,
        E2EPOOL_GITHUB_WEBHOOK_SECRET: GH_SECRET,
        E2EPOOL_SECRET_KEY: 'fuzz-secret-key-0123456789',
        // Every generated wrong token counts against the client; the admin's own calls must still get through.
        E2EPOOL_AUTH_FAILURE_BURST: '1000000',
      },
    });
    base = new URL(c.api.url);
    const created = await fetch(`${c.api.url}/api/runners`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ runner_id: registryRunner, backend: 'bare_metal', reset_cmd: 'true' }),
    });
    expect(created.status).toBe(201);
    const doc = (await (await fetch(`${c.api.url}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, Record<string, unknown>>>;
      components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
    };
    const fieldsOf = (content: Record<string, { schema?: Record<string, unknown> }>): string[] => {
      const names = new Set<string>();
      for (const { schema } of Object.values(content)) {
        const ref = typeof schema?.$ref === 'string' ? schema.$ref.split('/').pop()! : undefined;
        const s = ref ? doc.components.schemas[ref] : schema;
        for (const k of Object.keys((s?.properties as object | undefined) ?? {})) names.add(k);
      }
      return [...names];
    };
    ops = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, o]) => {
        const body = o.requestBody as
          { content: Record<string, { schema?: Record<string, unknown> }> } | undefined;
        return {
          method: method.toUpperCase(),
          path,
          params: (o.parameters as Op['params'] | undefined) ?? [],
          bodyTypes: body ? Object.keys(body.content) : [],
          bodyFields: body ? fieldsOf(body.content) : [],
          documented: new Set(Object.keys(o.responses as object).map(Number)),
        };
      }),
    );
  });
  afterAll(async () => c?.stop());

  /** The requests of one operation: its path and query parameters, body and auth, generated and mutated. */
  function requests(op: Op): fc.Arbitrary<Req> {
    const known = [runner.id, registryRunner, 'ui.css', 'swagger-ui.css'];
    const pathParams = op.params.filter((p) => p.in === 'path');
    const queryNames = op.params.filter((p) => p.in === 'query').map((p) => p.name);
    const pathArb = fc
      .tuple(...pathParams.map(() => wireValue(known)))
      .map((values) =>
        pathParams.reduce((p, param, i) => p.replace(`{${param.name}}`, values[i]!), op.path),
      );
    const queryArb = fc
      .array(
        fc.tuple(
          fc.oneof(
            fc.constantFrom(...queryNames, '__proto__', 'constructor', 'next'),
            wireValue([]),
          ),
          wireValue(['true', '0', '10']),
        ),
        { maxLength: 3 },
      )
      .map((pairs) => (pairs.length ? `?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}` : ''));
    const authArb = fc.constantFrom<Record<string, string>>(
      {},
      { authorization: `Bearer ${runner.token}` },
      { authorization: `Bearer ${ADMIN}` },
      { authorization: 'Bearer wrong-token' },
      { authorization: 'Basic dXNlcjpwdw==' },
      { authorization: 'Bearer' },
    );
    const fieldsArb = fc.dictionary(
      fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom(...op.bodyFields, 'runner_id') },
        { weight: 1, arbitrary: nastyString },
      ),
      nastyValue,
      { maxKeys: 6 },
    );
    const json = (v: unknown) => Buffer.from(JSON.stringify(v) ?? 'null');
    const bodyArb: fc.Arbitrary<{ body?: Buffer; headers: Record<string, string> }> = fc.oneof(
      fieldsArb.map((f) => ({ body: json(f), headers: { 'content-type': 'application/json' } })),
      nastyValue.map((v) => ({ body: json(v), headers: { 'content-type': 'application/json' } })),
      fc
        .constantFrom('{', '{"a":', '[1,', '{"a":1}x', '\u0000', 'nul\u0000', '{"a":"\\ud800"}')
        .map((t) => ({ body: Buffer.from(t), headers: { 'content-type': 'application/json' } })),
      fc
        .tuple(
          fieldsArb,
          fc.constantFrom(
            'text/plain',
            'application/xml',
            'application/x-www-form-urlencoded',
            'multipart/form-data; boundary=x',
            'application/json; charset=utf-16',
            'application/json; charset=latin1',
          ),
        )
        .map(([f, type]) => ({ body: json(f), headers: { 'content-type': type } })),
      fc
        .record({ f: fieldsArb, enc: fc.constantFrom('gzip', 'deflate', 'br', 'x-unknown') })
        .map(({ f, enc }) => ({
          body: json(f),
          headers: { 'content-type': 'application/json', 'content-encoding': enc },
        })),
      fc
        .dictionary(fc.constantFrom(...op.bodyFields, 'token', 'next', 'payload'), nastyString, {
          maxKeys: 3,
        })
        .map((f) => ({
          body: Buffer.from(new URLSearchParams(f as Record<string, string>).toString()),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        })),
      fc.constant({ headers: {} }),
    );
    return fc
      .record({ path: pathArb, query: queryArb, auth: authArb, body: bodyArb, hook: fc.boolean() })
      .map(({ path, query, auth, body, hook }) => {
        const headers: Record<string, string> = { ...auth, ...body.headers };
        // Half the time with the auth the route wants, so the request gets past its check.
        if (hook) Object.assign(headers, rightAuth(op, body.body));
        return {
          method: op.method,
          path: `${path}${query}`,
          headers,
          ...(body.body && op.method !== 'GET' ? { body: body.body } : {}),
        };
      });
  }

  /** The auth an operation wants, so that a request reaches past its auth check. */
  function rightAuth(op: Op, body: Buffer | undefined): Record<string, string> {
    if (op.path === '/webhooks/gitlab') return { 'x-gitlab-token': GL_SECRET };
    if (op.path === '/webhooks/github')
      return {
        'x-github-event': 'workflow_job',
        'x-hub-signature-256': `sha256=${createHmac('sha256', GH_SECRET)
          .update(body ?? Buffer.alloc(0))
          .digest('hex')}`,
      };
    if (op.path.startsWith('/checkpoint') || op.path.startsWith('/runner'))
      return { authorization: `Bearer ${runner.token}` };
    return { authorization: `Bearer ${ADMIN}` };
  }

  /** Bodies a route accepts, to change one field of: the check of that field is reached. */
  const validBodies = new Map<string, object>([
    [
      'POST /api/runners',
      { runner_id: uniqueId('fuzznew'), backend: 'bare_metal', reset_cmd: 'true' },
    ],
    ['POST /checkpoint/create', { runner_id: runner.id, job_id: '1' }],
    ['POST /checkpoint/finalize', { checkpoint_name: 'job-1-1-abcdef01', status: 'success' }],
    ['POST /webhooks/gitlab', { object_kind: 'build', build_status: 'success', build_id: 1 }],
    [
      'POST /webhooks/github',
      { action: 'completed', workflow_job: { id: 1, conclusion: 'success' } },
    ],
  ]);

  /**
   * Cases every run tries besides the generated ones, with the auth that gets
   * past the route's check: each path parameter as NUL, NUL inside, a lone
   * surrogate, bytes that are not UTF-8, a prototype name and 100 KB; each
   * body with every field a NUL string, then a lone surrogate.
   */
  function examples(op: Op): Req[] {
    const out: Req[] = [];
    for (const p of op.params.filter((x) => x.in === 'path'))
      for (const v of [
        '%00',
        'a%00b',
        '%ED%A0%80',
        '%FF',
        '__proto__',
        'constructor',
        'x'.repeat(100_000),
      ])
        out.push({
          method: op.method,
          path: op.path.replace(`{${p.name}}`, v).replace(/\{[^}]+\}/g, registryRunner),
          headers: rightAuth(op, undefined),
        });
    if (op.bodyTypes.length) {
      const base = validBodies.get(`${op.method} ${op.path}`) ?? {};
      for (const field of [...op.bodyFields, 'payload'])
        for (const v of ['a\u0000b', '\ud800', 'x'.repeat(100_000)]) {
          const body = Buffer.from(JSON.stringify({ ...base, [field]: v }));
          out.push({
            method: op.method,
            path: op.path.replace(/\{[^}]+\}/g, registryRunner),
            headers: { ...rightAuth(op, body), 'content-type': 'application/json' },
            body,
          });
        }
    }
    return out;
  }

  /** Why an answer is wrong, or null. */
  function problem(op: Op, res: Res): string | null {
    // A probe saying "not ready" / "unhealthy" is its documented answer, not a failure.
    const probe = op.path === '/runner/readiness' || op.path === '/healthz';
    if (res.status >= 500 && !(probe && res.status === 503 && op.documented.has(503)))
      return `answered ${res.status}`;
    if (res.status < 400 || res.status >= 500) return null;
    const page = op.path.startsWith('/ui') && !op.path.startsWith('/ui/api/');
    if (page && res.type.startsWith('text/html')) return null;
    if (!res.type.startsWith('application/json')) return `answered ${res.status} as ${res.type}`;
    let body: unknown;
    try {
      body = JSON.parse(res.text);
    } catch {
      return `answered ${res.status} with a body that is not JSON`;
    }
    if (body === null || typeof body !== 'object' || !Object.hasOwn(body, 'detail'))
      return `answered ${res.status} without a detail`;
    return null;
  }

  it('has operations to walk', () => {
    expect(ops.length).toBeGreaterThan(25);
  });

  // A CI job holds its runner's REST token: no admin operation may take it, not even one
  // naming that same runner (quarantine, release, retry, baseline, drain, token rotation...).
  it("a runner's REST token opens no /api operation, not even on its own runner", async () => {
    const adminOps = ops.filter((o) => o.path.startsWith('/api/'));
    expect(adminOps.length).toBeGreaterThan(10);
    const opened: string[] = [];
    for (const op of adminOps) {
      const path = op.params
        .filter((p) => p.in === 'path')
        .reduce((p, param) => p.replace(`{${param.name}}`, runner.id), op.path);
      const res = await httpCall(base, {
        method: op.method,
        path,
        headers: { authorization: `Bearer ${runner.token}`, 'content-type': 'application/json' },
        ...(op.method === 'GET' ? {} : { body: Buffer.from('{"reason":"x"}') }),
      });
      if (res.status !== 401 && res.status !== 403)
        opened.push(`${op.method} ${path} → ${res.status}`);
    }
    expect(opened).toEqual([]);
  });

  it('no operation answers a 5xx, and every 4xx carries a JSON detail', async () => {
    const failures: string[] = [];
    for (const op of ops) {
      // Every operation is walked even after one fails; a failure names its request, the seed
      // and the counterexample path (fc.assert with { seed, path } replays it).
      const result = await fc.check(
        fc.asyncProperty(requests(op), async (r) => {
          const res = await httpCall(base, r);
          const why = problem(op, res);
          if (why) throw new Error(`${shown(r)} → ${why}: ${res.text.slice(0, 200)}`);
        }),
        {
          numRuns: RUNS,
          seed: SEED,
          endOnFailure: true,
          examples: examples(op).map((r) => [r] as [Req]),
        },
      );
      if (result.failed)
        failures.push(
          `${op.method} ${op.path} (seed ${result.seed}, path ${result.counterexamplePath}): ${
            result.errorInstance instanceof Error
              ? result.errorInstance.message
              : String(result.errorInstance)
          }`,
        );
    }
    expect(failures).toEqual([]);
  });
});
