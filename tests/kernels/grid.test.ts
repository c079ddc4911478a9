import { describe, expect, it } from 'vitest';
import { foldGrid, GRID_FOLD } from '../../src/kernels/grid.js';
import { readShaderFile } from '../../src/kernels/shader.js';

describe('foldGrid', () => {
  it('keeps a grid of up to 65535 workgroups 1-D and folds a larger one into y', () => {
    expect(foldGrid(1)).toEqual([1, 1]);
    expect(foldGrid(65535)).toEqual([65535, 1]);
    expect(foldGrid(65536)).toEqual([65535, 2]);
    expect(foldGrid(3 * 65535 + 7)).toEqual([65535, 4]);
  });

  it('covers every workgroup index wg.y·65535 + wg.x < g with the fewest rows', () => {
    for (const g of [2, 1000, 65534, 65535, 65536, 131070, 131071, 5_000_000]) {
      const [x, y] = foldGrid(g);
      expect(x * y).toBeGreaterThanOrEqual(g);
      expect((y - 1) * 65535).toBeLessThan(g);
      expect(x).toBeLessThanOrEqual(65535);
    }
  });

  it('uses the same width as the WGSL fold (shaders/lib/grid_fold.wgsl)', () => {
    const m = /const GRID_FOLD: u32 = (\d+)u;/.exec(readShaderFile('lib/grid_fold.wgsl'));
    expect(Number(m?.[1])).toBe(GRID_FOLD);
    expect(GRID_FOLD).toBe(65535); // WebGPU's default maxComputeWorkgroupsPerDimension
  });
});
