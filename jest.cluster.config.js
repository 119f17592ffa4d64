/**
 * `npm run test:cluster`: the tests that matter for a production deployment,
 * against Temporal Server in production mode (temporal-dev/cluster.ts: Postgres,
 * mTLS, namespace `e2epool-ci`) instead of the dev server. Why these files:
 * docs/contributing.md, "Tests on a production-mode cluster".
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- jest reads CommonJS configs
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  testMatch: [
    // Lifecycles through the REST API, bare metal and Proxmox (stand-in).
    '**/test/integration/checkpoint-bare-metal.test.ts',
    '**/test/integration/checkpoint-proxmox.test.ts',
    // Real agent processes through the WebSocket gateway.
    '**/test/integration/agent-e2e.test.ts',
    // The real `e2epool worker` and `e2epool selftest` processes over mTLS.
    '**/test/integration/worker-process.test.ts',
    // Chaos: a worker killed mid-step, a workflow terminated by an operator
    // (`temporal` CLI over mTLS; the reconciler's schedule adopts it), the
    // controller's Postgres restarted.
    '**/test/integration/chaos-worker-kill.test.ts',
    '**/test/integration/chaos-terminate.test.ts',
    '**/test/integration/chaos-postgres-restart.test.ts',
    // Two API and two worker processes in the namespace; mTLS refuses a client without a certificate.
    // (Not *.test.ts: `npm test` on the dev server must not pick them up.)
    '**/test/cluster/*.cluster.ts',
  ],
  globalSetup: '<rootDir>/test/cluster-global-setup.ts',
  globalTeardown: '<rootDir>/test/cluster-global-teardown.ts',
};
