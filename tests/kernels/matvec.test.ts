import { beforeAll, describe, expect, it } from 'vitest';
import { accumulateRef, loraEpilogueRef, matmulRef, type StoredFormat } from '../../src/kernels/matmul.js';
import { Matvec } from '../../src/kernels/matvec.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectRelNorm, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { makeTestWeight as makeWeight } from '../helpers/weights.js';

type Epilogue = 'plain' | 'accumulate' | 'lora' | 'accumulate+lora';

// [format, rows, N, K, epilogues]: one row (a decode step) for every format, the fixture's and
// awkward widths (N not a multiple of the 8 columns of a workgroup; K = 8 — less than one group of 8
// per lane — and K = 32·8·3 + 24, several rounds per lane and a ragged last round); NF4 blocks of 64
// spanning rows (K = 32, 96); 3 rows (several accumulators); 1100 columns over the 65535 fold is not
// exercised (the grid folds only past 524,280 columns).
const CASES: readonly [StoredFormat, number, number, number, readonly Epilogue[]][] = [
  ['f32', 1, 5, 8, ['plain', 'lora']],
  ['f32', 1, 37, 792, ['accumulate+lora']],
  ['bf16', 1, 151, 32, ['plain']],
  ['bf16', 1, 66, 264, ['accumulate']],
  ['nf4', 1, 98, 32, ['plain', 'lora', 'accumulate+lora']],
  ['nf4', 1, 32, 96, ['accumulate']],
  ['nf4dq', 1, 200, 96, ['plain']],
  ['nf4', 3, 40, 64, ['plain', 'accumulate+lora']],
];

describe('matvec forward (few-row dequant matmul)', () => {
  let gpu: Gpu;
  const kernels = new Map<number, Matvec>();
  beforeAll(async () => {
    gpu = await testGpu();
    for (const rows of [1, 3]) kernels.set(rows, await Matvec.create(gpu, { rows, formats: rows === 1 ? ['f32', 'bf16', 'nf4', 'nf4dq'] : ['nf4'] }));
  });

  for (const [format, M, N, K, epilogues] of CASES) {
    it(`${format}: ${epilogues.join(', ')} match float64 at M=${M} N=${N} K=${K}`, async () => {
      const mv = kernels.get(M)!;
      const rng = new Rng(M * 1_000_003 + N * 1009 + K + format.length);
      const { w, dense } = makeWeight(gpu, rng, format, N, K);
      expect(mv.supports(w)).toBe(true);
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
        submitDispatches(gpu, [mv.forward(`${format} ${epilogue}`, { y, x, w, accumulate, lora: withLora ? lora : undefined })]);
        const ref = Float64Array.from(plain);
        if (accumulate) accumulateRef(ref, y0);
        if (withLora) loraEpilogueRef(ref, uv, bv, M, N, R, 2);
        // f32 products and sums of K ≤ 792 terms: a few ulp·√K of the norm; NaN anywhere fails
        expectRelNorm(`${format} ${epilogue}`, await gpu.readF32(y), ref, 1e-5);
        y.buffer.destroy();
      }
    });
  }

  it('refuses K not a multiple of 8 and a row count it was not compiled for', async () => {
    const mv = kernels.get(1)!;
    const rng = new Rng(5);
    const odd = makeWeight(gpu, rng, 'f32', 4, 12).w;
    expect(mv.supports(odd)).toBe(false);
    expect(() => mv.forward('odd', { y: gpu.tensor('y', [1, 4], 'f32'), x: gpu.tensor('x', [1, 12], 'f32'), w: odd })).toThrow(/multiple of 8/);
    const w = makeWeight(gpu, rng, 'f32', 4, 16).w;
    expect(() => mv.forward('two rows', { y: gpu.tensor('y', [2, 4], 'f32'), x: gpu.tensor('x', [2, 16], 'f32'), w })).toThrow(/1 rows/);
  });
});
