import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  majorDiffers,
  peerVersion,
  readBuildInfo,
  versionText,
  writeBuildInfo,
} from '../../common/build-info';

describe('build info', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'e2epool-build-info-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('compares major versions only, and calls nothing unparsable a mismatch', () => {
    expect(majorDiffers('1.4.0', '2.0.0')).toBe(true);
    expect(majorDiffers('0.1.0', '1.0.0')).toBe(true);
    expect(majorDiffers('1.4.0', '1.9.3')).toBe(false);
    expect(majorDiffers('v2.0.0', '2.1.0-rc.1')).toBe(false);
    expect(majorDiffers('1.0.0', 'unknown')).toBe(false);
  });

  it('takes a peer version only when it looks like one', () => {
    expect(peerVersion('1.2.3-rc.1+abc')).toBe('1.2.3-rc.1+abc');
    expect(peerVersion(['0.1.0'])).toBe('0.1.0');
    expect(peerVersion(undefined)).toBeNull();
    expect(peerVersion('1.0 \n{"level":50}')).toBeNull();
    expect(peerVersion('9'.repeat(65))).toBeNull();
  });

  it('reads build-info.json, else package.json with commit "unknown"', () => {
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'e2epool', version: '3.2.1' }));
    expect(readBuildInfo(dir)).toEqual({ version: '3.2.1', commit: 'unknown' });
    writeFileSync(
      join(dir, 'build-info.json'),
      JSON.stringify({ version: '3.2.1', commit: 'abcdef0123456789abcdef0123456789abcdef01' }),
    );
    const info = readBuildInfo(dir);
    expect(info).toEqual({ version: '3.2.1', commit: 'abcdef0123456789abcdef0123456789abcdef01' });
    expect(versionText(info)).toBe('e2epool 3.2.1 (abcdef0)');
    expect(versionText({ version: '3.2.1', commit: 'unknown' })).toBe('e2epool 3.2.1 (unknown)');
  });

  it('writes commit "unknown" outside a git checkout instead of failing', () => {
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'e2epool', version: '3.2.1' }));
    const env = process.env.GIT_CEILING_DIRECTORIES;
    // tmpdir is not inside a checkout; the ceiling keeps git from looking above it.
    process.env.GIT_CEILING_DIRECTORIES = tmpdir();
    try {
      expect(writeBuildInfo(dir, dir)).toEqual({ version: '3.2.1', commit: 'unknown' });
    } finally {
      if (env === undefined) delete process.env.GIT_CEILING_DIRECTORIES;
      else process.env.GIT_CEILING_DIRECTORIES = env;
    }
    expect(readBuildInfo(dir)).toEqual({ version: '3.2.1', commit: 'unknown' });
  });
});
