import { beforeAll, describe, expect, it } from 'vitest';
import {
  accumulateRef,
  loraEpilogueRef,
  Matmul,
  MATMUL_TILES,
  matmulRef,
  parseTile,
  tileName,
  type LinearWeight,
  type MatmulTile,
  type StoredFormat,
} from '../../src/kernels/matmul.js';
import { nf4DequantizeRef, nf4DoubleDequantizeRef, nf4DoubleQuantizeRef, nf4QuantizeRef } from '../../src/kernels/nf4.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { ShapeError } from '../../src/errors.js';
import { f32ToBf16Array, roundToBf16 } from '../../src/model/bf16.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectRelNorm, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

// The default tiles: 128 × 128 and 64 × 128 (8 × 8 per thread; 256 and 128 threads; 1 and 2
// reduction indices of W per thread and step) and 64 × 64 (4 × 4 per thread), the last here with
// 8 × 4-thread warps (wn = 8) to cover that mapping too.
const TILES: readonly MatmulTile[] = [MATMUL_TILES.large, MATMUL_TILES.medium, { ...MATMUL_TILES.small, wn: 8 }];

type Epilogue = 'plain' | 'accumulate' | 'lora' | 'accumulate+lora';

// lavapipe compiles each variant in seconds (LLVM coroutines around the barriers), so the test
// covers each format and epilogue code path once rather than every combination: the formats on the
// 128 × 128 tile, the epilogues on nf4 (QLoRA's base) and bf16 (the full base), and the other two
// tiles (2 reduction indices per thread; 4 × 4 outputs per thread) on nf4.
const CASES: readonly { format: StoredFormat; tile: MatmulTile; epilogues: readonly Epilogue[] }[] = [
  { format: 'f32', tile: TILES[0], epilogues: ['plain'] },
  { format: 'nf4', tile: TILES[0], epilogues: ['plain', 'lora', 'accumulate+lora'] },
  { format: 'nf4dq', tile: TILES[0], epilogues: ['plain'] },
  { format: 'bf16', tile: TILES[0], epilogues: ['accumulate'] },
  { format: 'nf4', tile: TILES[1], epilogues: ['accumulate+lora'] },
  { format: 'nf4dq', tile: TILES[2], epilogues: ['plain'] },
];

/** A weight of `format` on the GPU and its dense float64 values (what the GPU must multiply by). */
function makeWeight(gpu: Gpu, rng: Rng, format: StoredFormat, n: number, k: number): { w: LinearWeight; dense: ArrayLike<number> } {
  const values = roundToBf16(rng.f32(n * k, 0.05));
  if (format === 'f32') {
    const v = rng.f32(n * k, 0.05);
    return { w: { format, nOut: n, k, data: gpu.tensorFrom('w', [n, k], 'f32', v) }, dense: v };
  }
  if (format === 'bf16') {
    return { w: { format, nOut: n, k, data: gpu.tensorFrom('w', [n, k], 'bf16x2', f32ToBf16Array(values)) }, dense: values };
  }
  const q = nf4QuantizeRef(values);
  const data = gpu.tensorFrom('w', [n, k], 'nf4x8', q.packed);
  if (format === 'nf4') {
    return { w: { format: 'nf4', nOut: n, k, data, absmax: gpu.tensorFrom('absmax', [q.absmax.length], 'f32', q.absmax) }, dense: nf4DequantizeRef(q.packed, q.absmax, n * k) };
  }
  const dq = nf4DoubleQuantizeRef(q.absmax);
  const doubleQuant = {
    codes: gpu.tensorFrom('codes', [q.absmax.length], 'u8x4', dq.codes),
    absmax2: gpu.tensorFrom('absmax2', [dq.absmax2.length], 'f32', dq.absmax2),
    offset: dq.offset,
  };
  return { w: { format: 'nf4', nOut: n, k, data, doubleQuant }, dense: nf4DequantizeRef(q.packed, nf4DoubleDequantizeRef(dq), n * k) };
}

const SIZES: Record<'f32' | 'nf4', readonly (readonly [string, number, number, number])[]> = {
  // [name, M, N, K]: tiny, realistic, awkward (edges in M, N and K; K not a multiple of the tile),
  // and K % 4 != 0 (the per-element load path)
  f32: [['tiny', 1, 3, 64], ['realistic', 64, 256, 320], ['awkward', 137, 97, 96], ['odd K', 5, 13, 33]],
  // NF4 needs N·K % 64 == 0; K = 32 and 33 make blocks of 64 span rows (as in the fixture's K < 64)
  nf4: [['tiny', 1, 3, 64], ['realistic', 64, 256, 320], ['awkward', 137, 98, 32], ['odd K', 5, 64, 33]],
};

describe('matmul forward', () => {
  let gpu: Gpu;
  let mm: Matmul;
  beforeAll(async () => {
    gpu = await testGpu();
    mm = await Matmul.create(gpu, { tiles: TILES });
  });

  for (const { format, tile, epilogues } of CASES) {
    for (const [name, M, N, K] of SIZES[format === 'f32' || format === 'bf16' ? 'f32' : 'nf4']) {
      it(`${format}, tile ${tileName(tile)}: ${epilogues.join(', ')} match float64 at ${name} M=${M} N=${N} K=${K}`, async () => {
        const rng = new Rng(M * 1_000_003 + N * 1009 + K + format.length);
        const { w, dense } = makeWeight(gpu, rng, format, N, K);
        const xv = rng.f32(M * K);
        const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
        const R = 5;
        const uv = rng.f32(M * R);
        const bv = rng.f32(N * R, 0.1);
        const lora = { u: gpu.tensorFrom('u', [M, R], 'f32', uv), b: gpu.tensorFrom('b', [N, R], 'f32', bv), scale: 2 };
        const y0 = rng.f32(M * N);
        const plain = matmulRef(xv, dense, M, N, K);
        for (const epilogue of epilogues) {
          const accumulate = epilogue.startsWith('accumulate');
          const withLora = epilogue.endsWith('lora');
          const y = gpu.tensor('y', [M, N], 'f32');
          if (accumulate) gpu.write(y, y0);
          else gpu.fill32(y, NAN_WORD);
          submitDispatches(gpu, [mm.forward(`${format} ${epilogue}`, { y, x, w, tile, accumulate, lora: withLora ? lora : undefined })]);
          const ref = Float64Array.from(plain);
          if (accumulate) accumulateRef(ref, y0);
          if (withLora) loraEpilogueRef(ref, uv, bv, M, N, R, 2);
          // f32 products and sums of K ≤ 320 terms: a few ulp·√K of the norm; NaN anywhere fails
          expectRelNorm(`${format} ${epilogue} tile ${tileName(tile)}`, await gpu.readF32(y), ref, 1e-5);
          y.buffer.destroy();
        }
      });
    }
  }

  it('takes the largest LoRA rank, and picks a tile by output size', async () => {
    const [M, N, K, R] = [70, 130, 64, 128];
    const rng = new Rng(99);
    const { w, dense } = makeWeight(gpu, rng, 'nf4', N, K);
    const xv = rng.f32(M * K);
    const uv = rng.f32(M * R);
    const bv = rng.f32(N * R, 0.1);
    const y = gpu.tensor('y', [M, N], 'f32');
    gpu.fill32(y, NAN_WORD);
    const lora = { u: gpu.tensorFrom('u', [M, R], 'f32', uv), b: gpu.tensorFrom('b', [N, R], 'f32', bv), scale: 0.25 };
    submitDispatches(gpu, [mm.forward('rank 128', { y, x: gpu.tensorFrom('x', [M, K], 'f32', xv), w, lora, tile: TILES[0] })]);
    // as above, with K + R = 168 terms
    expectRelNorm('rank 128', await gpu.readF32(y), loraEpilogueRef(matmulRef(xv, dense, M, N, K), uv, bv, M, N, R, 0.25), 1e-5);
    expect(mm.pickTile(2048, 4096)).toBe(TILES[0]);
    expect(mm.pickTile(2048, 1024)).toBe(TILES[1]);
    expect(mm.pickTile(64, 64)).toBe(TILES[2]);
  });

  it('refuses mismatched shapes, ranks past 128 and variants not compiled', async () => {
    const rng = new Rng(5);
    const { w } = makeWeight(gpu, rng, 'f32', 8, 16);
    const x = gpu.tensor('x', [4, 16], 'f32');
    expect(() => mm.forward('bad y', { y: gpu.tensor('y', [4, 9], 'f32'), x, w })).toThrow(ShapeError);
    expect(() => mm.forward('bad x', { y: gpu.tensor('y', [4, 8], 'f32'), x: gpu.tensor('x', [4, 15], 'f32'), w })).toThrow(/\(…, 16\)/);
    const lora = { u: gpu.tensor('u', [4, 129], 'f32'), b: gpu.tensor('b', [8, 129], 'f32'), scale: 1 };
    expect(() => mm.forward('rank', { y: gpu.tensor('y', [4, 8], 'f32'), x, w, lora })).toThrow(/rank 129/);
    expect(() => mm.forward('tile', { y: gpu.tensor('y', [4, 8], 'f32'), x, w, tile: parseTile('128x128x16') })).toThrow(/not compiled/);
  });
});
