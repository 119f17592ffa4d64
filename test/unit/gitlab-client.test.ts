import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GitLabClient } from '../../activities/gitlab/client';

/** A GitLab that records the path of every request and says every job succeeded. */
describe('GitLabClient paths', () => {
  let server: Server;
  let client: GitLabClient;
  const seen: string[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(req.url ?? '');
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ status: 'success', paused: false }));
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    const { port } = server.address() as AddressInfo;
    client = new GitLabClient(`http://127.0.0.1:${port}`, 'tok', 5000);
  });
  afterAll(async () => new Promise<void>((ok) => server.close(() => ok())));
  beforeEach(() => {
    seen.length = 0;
  });

  it('encodes the project and job ids as single path segments', async () => {
    await expect(client.jobState('group/sub project?x#y', '5')).resolves.toBe('success');
    expect(seen).toEqual(['/api/v4/projects/group%2Fsub%20project%3Fx%23y/jobs/5']);
  });

  it.each([
    ['..', '5'],
    ['.', '5'],
    ['7', '..'],
    ['', '5'],
  ])(
    'refuses project %j job %j, which would leave /projects/:id/jobs/:id, without a request',
    async (projectId, jobId) => {
      await expect(client.jobState(projectId, jobId)).rejects.toMatchObject({
        type: 'PermanentFailure',
        nonRetryable: true,
      });
      expect(seen).toEqual([]);
    },
  );

  it('pauses a runner at /runners/:id', async () => {
    await client.setPaused(42, true);
    expect(seen).toEqual(['/api/v4/runners/42']);
  });
});
