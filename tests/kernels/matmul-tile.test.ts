import { describe, expect, it } from 'vitest';
import { DeviceLimitError, ShapeError } from '../../src/errors.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { checkTileLimits, tileName, tileWarpN } from '../../src/kernels/matmul-tile.js';
import { MATMUL_TILES, parseTile } from '../../src/kernels/matmul.js';

// Only `limits` is read by checkTileLimits: a device of 256 invocations and 16 KiB of workgroup memory.
const gpu = { limits: { maxComputeInvocationsPerWorkgroup: 256, maxComputeWorkgroupStorageSize: 16384 } } as unknown as Gpu;

describe('checkTileLimits (shared by matmul forward and backward)', () => {
  it('accepts the default tiles', () => {
    for (const t of Object.values(MATMUL_TILES)) expect(() => checkTileLimits(gpu, tileName(t), t, [], 1024)).not.toThrow();
  });

  it('names every broken rule, the kernel-specific ones included, in one ShapeError', () => {
    const t = { bm: 48, bn: 64, bk: 12, tm: 2, tn: 4 };
    const check = () => checkTileLimits(gpu, 'matmul tile x', t, ['kernel rule'], 0);
    expect(check).toThrow(ShapeError);
    expect(check).toThrow(/^matmul tile x: tm and tn must be 4 or 8; bk must be 8, 16 or 32; bm and bn must be multiples of 32; .*kernel rule$/);
  });

  it('refuses a tile past the workgroup memory with a DeviceLimitError naming both sizes', () => {
    const check = () => checkTileLimits(gpu, 'matmul tile y', MATMUL_TILES.large, [], 20000);
    expect(check).toThrow(DeviceLimitError);
    expect(check).toThrow(/needs 20000 bytes of workgroup memory, this device allows 16384/);
  });

  it('puts 16 threads along N by default, fewer when the tile is narrower', () => {
    expect(tileWarpN(MATMUL_TILES.large)).toBe(16);
    expect(tileWarpN(parseTile('32x32x16'))).toBe(8);
    expect(tileWarpN(parseTile('128x128x8/8x8/8'))).toBe(8);
  });
});
