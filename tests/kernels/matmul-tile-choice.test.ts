import { describe, expect, it } from 'vitest';
import { MATMUL_TILES, pickMatmulTile, tileName, type MatmulTile, type StoredFormat } from '../../src/kernels/matmul.js';

// The default compiled tiles, largest first (Matmul.create's default).
const TILES: readonly MatmulTile[] = [MATMUL_TILES.large, MATMUL_TILES.medium, MATMUL_TILES.small];

// Qwen3-4B's projections at M = 2048 tokens and the lm_head at M = 256, with the tile that measured
// fastest on the GPU host (NVIDIA H200, 2026-12-02, timestamp queries, four repeats:
// bench/results/h200-2026-12-02-matmul-f32-tiles-{a,b}.json; NF4 gate/up 128×128 23.1 TFLOP/s vs
// 64×128 20.4; k/v and down_proj within 2 % of each other, where the rule's larger grid decides).
const CASES: readonly { shape: string; format: StoredFormat; m: number; n: number; fastest: MatmulTile }[] = [
  { shape: 'q_proj', format: 'nf4', m: 2048, n: 4096, fastest: MATMUL_TILES.large },
  { shape: 'k/v_proj', format: 'nf4', m: 2048, n: 1024, fastest: MATMUL_TILES.medium },
  { shape: 'o_proj', format: 'nf4', m: 2048, n: 2560, fastest: MATMUL_TILES.medium },
  { shape: 'gate/up', format: 'nf4', m: 2048, n: 9728, fastest: MATMUL_TILES.large },
  { shape: 'gate/up', format: 'nf4dq', m: 2048, n: 9728, fastest: MATMUL_TILES.large },
  { shape: 'down_proj', format: 'nf4', m: 2048, n: 2560, fastest: MATMUL_TILES.medium },
  { shape: 'q_proj', format: 'bf16', m: 2048, n: 4096, fastest: MATMUL_TILES.large },
  { shape: 'gate/up', format: 'bf16', m: 2048, n: 9728, fastest: MATMUL_TILES.large },
  { shape: 'lm_head', format: 'bf16', m: 256, n: 151936, fastest: MATMUL_TILES.large },
  { shape: 'tiny', format: 'nf4', m: 64, n: 64, fastest: MATMUL_TILES.small },
];

describe('pickMatmulTile', () => {
  for (const c of CASES) {
    it(`${c.shape} ${c.format} (${c.m}×${c.n}) takes ${tileName(c.fastest)}`, () => {
      expect(tileName(pickMatmulTile(TILES, c.m, c.n))).toBe(tileName(c.fastest));
    });
  }

  it('refuses an empty tile list', () => {
    expect(() => pickMatmulTile([], 8, 8)).toThrow(/no tiles compiled/);
  });
});
