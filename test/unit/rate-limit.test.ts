import { TokenBuckets } from '../../api/rate-limit';

describe('TokenBuckets', () => {
  it('allows a burst per key, then one token per 1/rate seconds, and says how long to wait', () => {
    let now = 0;
    const b = new TokenBuckets(3, 0.5, () => now);
    expect([b.take('a'), b.take('a'), b.take('a')]).toEqual([0, 0, 0]);
    expect(b.take('a')).toBe(2);
    expect(b.retryAfter('a')).toBe(2);
    // Another key has its own bucket.
    expect(b.take('b')).toBe(0);
    now = 1000;
    expect(b.take('a')).toBe(1);
    now = 2000;
    expect(b.take('a')).toBe(0);
    expect(b.take('a')).toBe(2);
    // Refills up to the burst, never beyond.
    now = 1_000_000;
    expect([b.take('a'), b.take('a'), b.take('a'), b.take('a')]).toEqual([0, 0, 0, 2]);
  });

  it('forgets the least recently used keys past its bound, so a flood of addresses cannot grow it without end', () => {
    const b = new TokenBuckets(1, 0.001, () => 0);
    expect(b.take('first')).toBe(0);
    for (let i = 0; i < 10_000; i++) b.take(`k${i}`);
    // 'first' was forgotten: a full bucket again.
    expect(b.take('first')).toBe(0);
    // A recent key is still empty.
    expect(b.take('k9999')).toBeGreaterThan(0);
  });
});
