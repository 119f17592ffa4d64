/** The CI checks: `gitlab-token`, and per runner `gitlab-runner` or `github-runner`. Read-only calls. */
import type { GitHubClient } from '../../activities/github/client';
import type { GitLabClient } from '../../activities/gitlab/client';
import type { RunnerConfig } from '../../config/runner-schema';
import { bad, guarded, message, ok, type Context, type DoctorCheck } from './check';

const GITLAB_PAUSE_SCOPES = ['api', 'manage_runner'];
const GITLAB_READ_SCOPES = ['api', 'read_api'];

export async function gitlabTokenCheck(c: Context, gitlab: GitLabClient): Promise<DoctorCheck> {
  const fix =
    'create a token with the api scope (or manage_runner, plus read_api for the job poller) and set E2EPOOL_GITLAB_TOKEN';
  return guarded('gitlab-token', null, c.ms, fix, async () => {
    const scopes = await gitlab.tokenScopes();
    if (scopes === null) {
      return bad(
        'gitlab-token',
        null,
        'GitLab did not describe the token (404 on /personal_access_tokens/self: GitLab before 15.5, or not an access token)',
        'make sure the token has the api scope (or manage_runner and read_api); the runner checks below still tell whether it reads runners',
      );
    }
    const canPause = scopes.some((s) => GITLAB_PAUSE_SCOPES.includes(s));
    const canRead = scopes.some((s) => GITLAB_READ_SCOPES.includes(s));
    const list = scopes.length ? scopes.join(', ') : 'none';
    if (!canPause)
      return bad(
        'gitlab-token',
        null,
        `token scopes ${list}: cannot pause or unpause runners (needs api or manage_runner)`,
        fix,
      );
    if (c.settings.pollerEnabled && !canRead)
      return bad(
        'gitlab-token',
        null,
        `token scopes ${list}: cannot read job status for the job poller (needs api or read_api)`,
        fix,
      );
    return ok('gitlab-token', null, `token valid, scopes ${list}`);
  });
}

export async function gitlabRunnerCheck(
  c: Context,
  gitlab: GitLabClient | null,
  r: RunnerConfig,
): Promise<DoctorCheck> {
  const id = r.gitlab_runner_id!;
  if (!gitlab)
    return bad(
      'gitlab-runner',
      r.runner_id,
      `gitlab_runner_id ${id} is set, but E2EPOOL_GITLAB_URL and E2EPOOL_GITLAB_TOKEN are not: the runner is never paused`,
      'set E2EPOOL_GITLAB_URL and E2EPOOL_GITLAB_TOKEN',
    );
  return guarded(
    'gitlab-runner',
    r.runner_id,
    c.ms,
    'check E2EPOOL_GITLAB_URL and that GitLab is reachable',
    async () => {
      try {
        const paused = await gitlab.runnerPaused(id);
        return ok(
          'gitlab-runner',
          r.runner_id,
          `GitLab runner ${id} exists (${paused ? 'paused' : 'not paused'})`,
        );
      } catch (err) {
        const m = message(err);
        if (/: 404 /.test(m))
          return bad(
            'gitlab-runner',
            r.runner_id,
            `GitLab has no runner ${id}`,
            "set gitlab_runner_id to the runner's id (GitLab: Settings → CI/CD → Runners, or GET /runners)",
          );
        if (/: 403 /.test(m))
          return bad(
            'gitlab-runner',
            r.runner_id,
            `the token may not read GitLab runner ${id}: ${m}`,
            "the token's user needs Maintainer on the runner's project (Owner of its group; admin for an instance runner)",
          );
        throw err;
      }
    },
  );
}

export async function githubRunnerCheck(
  c: Context,
  github: GitHubClient | null,
  r: RunnerConfig,
): Promise<DoctorCheck> {
  const id = r.github_runner_id!;
  if (!github)
    return bad(
      'github-runner',
      r.runner_id,
      `github_runner_id ${id} is set, but E2EPOOL_GITHUB_TOKEN is not: its labels are never taken off`,
      'set E2EPOOL_GITHUB_TOKEN',
    );
  const scope = r.github_repo ? { repo: r.github_repo } : { org: r.github_org! };
  const where = 'repo' in scope ? `repository ${scope.repo}` : `organization ${scope.org}`;
  return guarded(
    'github-runner',
    r.runner_id,
    c.ms,
    `the token needs admin rights on the ${where} (fine-grained: Administration, or the organization's Self-hosted runners permission)`,
    async () => {
      let labels;
      try {
        labels = await github.runnerLabels(scope, id);
      } catch (err) {
        // GitHub answers 404 both for a runner that does not exist and for one the token may not see.
        if (!/: 404 /.test(message(err))) throw err;
        return bad(
          'github-runner',
          r.runner_id,
          `GitHub has no runner ${id} in ${where}, or the token may not see it`,
          `check github_runner_id (GET ${'repo' in scope ? `/repos/${scope.repo}` : `/orgs/${scope.org}`}/actions/runners lists them) and that the token has admin rights on the ${where}`,
        );
      }
      return ok(
        'github-runner',
        r.runner_id,
        `GitHub runner ${id} in ${where} readable (labels: ${labels.map((l) => l.name).join(', ') || 'none'})`,
      );
    },
  );
}
