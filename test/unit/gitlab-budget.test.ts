import {
  GITLAB_PRIORITY,
  gitlabPollRate,
  gitlabQueueRates,
  temporalBurst,
} from '../../common/gitlab-budget';

describe('the GitLab budget split', () => {
  it('gives the GitLab queue and 1.1 poll queue rates that add up to the budget', () => {
    for (const maxRps of [0.5, 4, 10, 37]) {
      const { gitlab, legacyPoll } = gitlabQueueRates(maxRps);
      expect(gitlab + legacyPoll).toBeCloseTo(maxRps, 10);
      expect(legacyPoll).toBeCloseTo(maxRps / 20, 10);
    }
    expect(temporalBurst(gitlabQueueRates(10).gitlab, 1)).toBe(10);
  });

  it('sizes the polls to their share and ranks a reset before the reconciler before polls', () => {
    expect(gitlabPollRate(10, 0.5)).toBe(5);
    expect(GITLAB_PRIORITY.reset).toBeLessThan(GITLAB_PRIORITY.reconcile);
    expect(GITLAB_PRIORITY.reconcile).toBeLessThan(GITLAB_PRIORITY.poll);
    // Temporal's default levels: keys 1 (most urgent) to 5.
    for (const key of Object.values(GITLAB_PRIORITY)) expect([1, 2, 3, 4, 5]).toContain(key);
  });
});
