import { baselineSnapshotName, baselineWorkflowId, isRefreshBaseline } from '../../common/baseline';

describe('baseline refresh names', () => {
  it('a snapshot name is e2epool-baseline- and the UTC time, a valid Proxmox name', () => {
    const name = baselineSnapshotName(new Date('2026-03-04T05:06:07.890Z'));
    expect(name).toBe('e2epool-baseline-20260304050607');
    expect(name.length).toBeLessThanOrEqual(40);
    expect(isRefreshBaseline(name)).toBe(true);
  });
  it('only refresh snapshots are prunable: not the operator baseline, a per-job or a lookalike', () => {
    for (const other of [
      'golden-base',
      'e2epool-baseline-2026',
      'e2epool-baseline-20260304050607-old',
      'job-1-1795000000-abcdef12',
    ])
      expect(isRefreshBaseline(other)).toBe(false);
  });
  it("a refresh's workflow id is one per runner", () => {
    expect(baselineWorkflowId('ci-vm-1')).toBe('e2epool-baseline-ci-vm-1');
  });
});
