import { streakCap } from '../../activities/quarantine';

describe('the failure-streak quarantine cap', () => {
  it('is a share of the active runners, rounded down, and never less than one runner', () => {
    expect(streakCap(10, 20)).toBe(2);
    expect(streakCap(14, 20)).toBe(2);
    expect(streakCap(15, 20)).toBe(3);
    expect(streakCap(2, 20)).toBe(1);
    expect(streakCap(0, 20)).toBe(1);
    expect(streakCap(50, 0)).toBe(1);
    expect(streakCap(7, 100)).toBe(7);
  });
});
