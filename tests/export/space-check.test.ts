import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkFreeSpace } from '../../src/export/export-command.js';

/** The export's free-space check: what will be written plus a margin, and nothing when nothing is written. */
const dir = mkdtempSync(join(tmpdir(), 'space-'));
const freeBytes = (n: number) => async () => ({ bavail: n, bsize: 1 });

describe('checkFreeSpace', () => {
  it('nothing to write (export_gguf null, adapter in place) is never refused, however full the disk', async () => {
    await expect(checkFreeSpace(dir, 0, freeBytes(2_300_000))).resolves.toBeUndefined();
    await expect(checkFreeSpace(dir, 0, freeBytes(0))).resolves.toBeUndefined();
  });

  it('a write is refused when the free space is below its bytes plus the margin, naming both', async () => {
    await expect(checkFreeSpace(dir, 1000, freeBytes(2_300_000))).rejects.toThrow(/needs about 1\.0 kB \(plus a 67\.1 MB margin\) but only 2\.3 MB is free/);
    await expect(checkFreeSpace(dir, 1000, freeBytes(200 * 1024 * 1024))).resolves.toBeUndefined();
  });

  it('a file system that cannot tell its free space does not block the export', async () => {
    await expect(checkFreeSpace(dir, 1000, async () => Promise.reject(new Error('ENOSYS')))).resolves.toBeUndefined();
  });
});
