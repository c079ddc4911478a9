import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CheckpointError, ExportError } from '../../src/errors.js';
import { AtomicFile, isNoSpaceError, NODE_FS, writeFileAtomic, type FileSystem } from '../../src/io/atomic-file.js';

/** A file system whose writes fail with ENOSPC after `budget` bytes. */
function fillsUpAfter(budget: number): FileSystem {
  let used = 0;
  return {
    ...NODE_FS,
    open: async (path, flags) => {
      const h = await NODE_FS.open(path, flags);
      return {
        sync: () => h.sync(),
        close: () => h.close(),
        write: async (buffer, offset, length, position) => {
          if (used + length > budget) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          used += length;
          return h.write(buffer, offset, length, position);
        },
      };
    },
  };
}

describe('AtomicFile', () => {
  it('appears under its name only when finished, with every byte', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plt-atomic-'));
    const path = join(dir, 'a.bin');
    const f = await AtomicFile.create(path);
    await f.write(new Uint8Array([1, 2, 3]));
    await f.write(new Uint8Array([4, 5]));
    expect(existsSync(path)).toBe(false);
    expect(readdirSync(dir)).toEqual([`a.bin.tmp-${process.pid}`]);
    expect(f.size).toBe(5);
    await f.finish();
    expect(f.state).toBe('finished');
    expect(Array.from(readFileSync(path))).toEqual([1, 2, 3, 4, 5]);
    expect(readdirSync(dir)).toEqual(['a.bin']);
    await expect(f.write(new Uint8Array(1))).rejects.toThrow(/refused: the writer is finished/);
    await f.abort(); // a no-op once finished
    expect(existsSync(path)).toBe(true);
  });

  it('abort removes the temporary file; a second create of the same temp name is refused while one is open', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plt-atomic-'));
    const path = join(dir, 'b.bin');
    const f = await AtomicFile.create(path);
    await f.write(new Uint8Array(10));
    await expect(AtomicFile.create(path, { error: (m, o) => new CheckpointError(m, o) })).rejects.toThrow(CheckpointError);
    await f.abort();
    expect(f.state).toBe('aborted');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a full disk: the error names the file and says so, the writer is failed, abort leaves nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plt-atomic-'));
    const path = join(dir, 'c.bin');
    const f = await AtomicFile.create(path, { fs: fillsUpAfter(8) });
    await f.write(new Uint8Array(8), 'writing the header');
    const failed = f.write(new Uint8Array(8), 'writing tensor "w"');
    await expect(failed).rejects.toThrow(ExportError);
    const e = await failed.catch((x: unknown) => x);
    expect((e as Error).message).toMatch(new RegExp(`^${path.replace(/[/.]/g, '\\$&')}: writing tensor "w" failed \\(ENOSPC.*\\) — no space left on the device`));
    expect(isNoSpaceError(e)).toBe(true);
    expect(isNoSpaceError(new Error('other'))).toBe(false);
    expect(f.state).toBe('failed');
    await expect(f.finish()).rejects.toThrow(/an earlier write failed, call abort\(\)/);
    await f.abort();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('writeFileAtomic leaves nothing behind when the write fails', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plt-atomic-'));
    await writeFileAtomic(join(dir, 'ok.txt'), 'hello\n');
    expect(readFileSync(join(dir, 'ok.txt'), 'utf8')).toBe('hello\n');
    await expect(writeFileAtomic(join(dir, 'big.txt'), 'x'.repeat(100), { fs: fillsUpAfter(10), error: (m, o) => new CheckpointError(m, o) })).rejects.toThrow(CheckpointError);
    expect(readdirSync(dir)).toEqual(['ok.txt']);
  });
});
