import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAction, jobIdWarning, projectIdFromEnv } from '../../agent/cli';
import { startIpcServer, type IpcServer } from '../../agent/ipc';
import { okReply } from '../../agent/messages';

describe('what `e2epool create` reads from the CI environment', () => {
  it.each([
    ['GitLab CI: $CI_PROJECT_ID', { CI_PROJECT_ID: '42' }, '42'],
    [
      'GitHub Actions: the repository, owner/name',
      { GITHUB_ACTIONS: 'true', GITHUB_REPOSITORY: 'acme/app', CI_PROJECT_ID: '42' },
      'acme/app',
    ],
    ['GitHub Actions without GITHUB_REPOSITORY: none', { GITHUB_ACTIONS: 'true' }, undefined],
    // Only the runner's own GITHUB_ACTIONS=true means GitHub Actions.
    [
      'GITHUB_REPOSITORY outside GitHub Actions: ignored',
      { GITHUB_REPOSITORY: 'acme/app' },
      undefined,
    ],
    ['an empty variable: none', { CI_PROJECT_ID: '' }, undefined],
    ['neither', {}, undefined],
  ])('project_id: %s', (_what, env, expected) => {
    expect(projectIdFromEnv(env)).toBe(expected);
  });

  it("warns when a GitHub job id is not GitHub's numeric job id", () => {
    const gh = { GITHUB_ACTIONS: 'true' };
    expect(jobIdWarning('51725241954', gh)).toBeUndefined();
    expect(jobIdWarning('e2e', gh)).toBe(
      'Warning: --job-id "e2e" is not GitHub\'s numeric job id (pass "${{ job.check_run_id }}"): job polls and workflow_job webhooks will not find this job',
    );
    // Outside GitHub Actions the CLI does not judge job ids.
    expect(jobIdWarning('e2e', {})).toBeUndefined();
  });
});

describe('`e2epool create` sends them to the agent', () => {
  let dir: string;
  let server: IpcServer;
  const requests: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'e2epool-cli-env-'));
    server = await startIpcServer({
      path: join(dir, 'agent.sock'),
      handler: async (req) => {
        requests.push(req);
        return okReply(String(req.id), { name: 'job-51725241954-1800000000-a1b2c3d4' });
      },
    });
  });
  afterAll(async () => {
    await server.close(0);
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => (requests.length = 0));

  async function create(jobId: string, env: NodeJS.ProcessEnv) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await createAction(
      { jobId, socket: server.path },
      { out: (l) => out.push(l), err: (l) => err.push(l), env },
    );
    return { code, out, err, payload: requests.at(-1)?.payload };
  }

  it('in GitHub Actions: the job id given and the repository as project_id', async () => {
    const r = await create('51725241954', {
      GITHUB_ACTIONS: 'true',
      GITHUB_REPOSITORY: 'acme/app',
      GITHUB_JOB: 'e2e',
      GITHUB_RUN_ID: '18170960955',
    });
    expect(r).toEqual({
      code: 0,
      out: ['job-51725241954-1800000000-a1b2c3d4'],
      err: [],
      payload: { job_id: '51725241954', project_id: 'acme/app' },
    });
  });

  it('in GitLab CI: $CI_PROJECT_ID; with no project at all, no project_id', async () => {
    expect((await create('123', { CI_PROJECT_ID: '42' })).payload).toEqual({
      job_id: '123',
      project_id: '42',
    });
    expect((await create('124', {})).payload).toEqual({ job_id: '124' });
  });

  it('a GitHub job named by its YAML key still gets its checkpoint, with a warning on stderr only', async () => {
    const r = await create('e2e', { GITHUB_ACTIONS: 'true', GITHUB_REPOSITORY: 'acme/app' });
    expect(r.code).toBe(0);
    expect(r.out).toEqual(['job-51725241954-1800000000-a1b2c3d4']);
    expect(r.err).toEqual([
      expect.stringMatching(/^Warning: --job-id "e2e" is not GitHub's numeric job id/),
    ]);
  });
});
