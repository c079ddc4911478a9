import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKWARD_TILES,
  DEFAULT_MAX_SCRATCH_BYTES,
  INPUT_GRAD_TILES,
  loraLinearBackwardRef,
  loraLinearForwardRef,
  MatmulBackward,
  matmulInputGradRef,
  matmulWeightGradRef,
  planBackward,
  WEIGHT_GRAD_TILES,
} from '../../src/kernels/matmul-backward.js';
import { matmulRef, tileName, type MatmulTile, type StoredFormat } from '../../src/kernels/matmul.js';
import { submitDispatches, type Dispatch } from '../../src/kernels/dispatch.js';
import { tensorView, type Tensor } from '../../src/kernels/tensor.js';
import { ShapeError } from '../../src/errors.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectRelNorm, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { destroyTestWeight as destroyWeight, makeTestWeight as makeWeight } from '../helpers/weights.js';
import { expectGradient, weightedSum } from './gradcheck.js';

/** An output tensor poisoned with NaN, or holding `prior` when the call accumulates. */
function output(gpu: Gpu, label: string, shape: number[], prior?: Float32Array): Tensor {
  const t = gpu.tensor(label, shape, 'f32');
  if (prior) gpu.write(t, prior);
  else gpu.fill32(t, NAN_WORD);
  return t;
}

// f32 products summed over at most a few hundred terms (or 5000 for the dlogits shape, in slices
// of ≥ 256): rounding of a few ulp·√terms relative to the norm; NaN anywhere fails
const TOL = 1e-5;

describe('float64 references', () => {
  it('dX = dY·W and dW = dYᵀ·X equal central differences of Y = X·Wᵀ', () => {
    const [m, n, k] = [5, 7, 6];
    const rng = new Rng(11);
    const x = rng.f32(m * k);
    const w = rng.f32(n * k);
    const dy = rng.f32(m * n);
    expectGradient('dX', weightedSum(dy, (xx) => matmulRef(xx, w, m, n, k)), x, matmulInputGradRef(dy, w, m, n, k));
    expectGradient('dW', weightedSum(dy, (ww) => matmulRef(x, ww, m, n, k)), w, matmulWeightGradRef(dy, x, m, n, k));
    // scale and a prior value: dx0 + s·(dY·W)
    const dx0 = rng.f32(m * k);
    const scaled = matmulInputGradRef(dy, w, m, n, k, -0.5, dx0);
    const plain = matmulInputGradRef(dy, w, m, n, k);
    expectRelNorm('scaled dX', scaled, Float64Array.from(plain, (v, i) => dx0[i] - 0.5 * v), 1e-15);
  });

  it('the LoRA layer backward (dx, dA, dB) equals central differences of y = x·Wᵀ + s·x·Aᵀ·Bᵀ', () => {
    const d = { m: 4, k: 6, nOut: 5, r: 3 };
    const s = 2;
    const rng = new Rng(12);
    const x = rng.f32(d.m * d.k);
    const w = rng.f32(d.nOut * d.k);
    const a = rng.f32(d.r * d.k);
    const b = rng.f32(d.nOut * d.r);
    const dy = rng.f32(d.m * d.nOut);
    const ref = loraLinearBackwardRef(dy, x, w, a, b, d, s);
    expectGradient('dx', weightedSum(dy, (v) => loraLinearForwardRef(v, w, a, b, d, s)), x, ref.dx);
    expectGradient('dA', weightedSum(dy, (v) => loraLinearForwardRef(x, w, v, b, d, s)), a, ref.dA);
    expectGradient('dB', weightedSum(dy, (v) => loraLinearForwardRef(x, w, a, v, d, s)), b, ref.dB);
  });
});

describe('planBackward (Qwen3-4B shapes)', () => {
  const wide = { split: true, maxScratchBytes: DEFAULT_MAX_SCRATCH_BYTES };
  it('runs large outputs in 128 × 128 tiles, and splits the lm_head and LoRA reductions', () => {
    // dX (2048, 9728) of down_proj from dY (2048, 2560) in one pass (as `input` runs it): 1216
    // workgroups of 128 × 128
    const down = planBackward(2048, 9728, 2560, INPUT_GRAD_TILES, { split: false });
    expect([tileName(down.tile), down.slices]).toEqual([tileName(BACKWARD_TILES.large), 1]);
    // lm_head dX (1024, 2560) over V = 151936: 160 large tiles, split
    const lm = planBackward(1024, 2560, 151936, INPUT_GRAD_TILES, wide);
    expect(lm.slices).toBeGreaterThan(1);
    expect(lm.slice % lm.tile.bk).toBe(0);
    expect(lm.slices * lm.slice).toBeGreaterThanOrEqual(151936);
    expect((lm.slices - 1) * lm.slice).toBeLessThan(151936);
    // dU (2048, 32) over Nout = 9728: the 32-column tile, split
    const du = planBackward(2048, 32, 9728, INPUT_GRAD_TILES, wide);
    expect(tileName(du.tile)).toBe(tileName(BACKWARD_TILES.tall));
    expect(du.slices).toBeGreaterThan(1);
    // dA (32, 2560) and dB (9728, 32) over M = 2048 tokens
    const dA = planBackward(32, 2560, 2048, WEIGHT_GRAD_TILES, { ...wide, minSlice: 128 });
    expect(tileName(dA.tile)).toBe(tileName(BACKWARD_TILES.wide));
    expect(dA.slices).toBeGreaterThan(1);
    const dB = planBackward(9728, 32, 2048, WEIGHT_GRAD_TILES, { ...wide, minSlice: 128 });
    expect(tileName(dB.tile)).toBe(tileName(BACKWARD_TILES.tall));
    // without split, or a scratch limit too small for two slices: one pass
    expect(planBackward(1024, 2560, 151936, INPUT_GRAD_TILES, { split: false }).slices).toBe(1);
    expect(planBackward(1024, 2560, 151936, INPUT_GRAD_TILES, { split: true, maxScratchBytes: 1024 * 2560 * 4 }).slices).toBe(1);
  });
});

describe('matmul backward on the GPU', () => {
  let gpu: Gpu;
  let mb: MatmulBackward;
  beforeAll(async () => {
    gpu = await testGpu();
    // every tile and format; a small scratch (the shapes here need well under 1 MiB)
    mb = await MatmulBackward.create(gpu, { maxScratchBytes: 2 ** 20 });
  });

  /** Runs `list`, reads `out` and compares with `ref`. */
  async function check(what: string, list: Dispatch[], out: Tensor, ref: ArrayLike<number>, tol = TOL): Promise<Float32Array> {
    submitDispatches(gpu, list);
    const got = await gpu.readF32(out);
    expectRelNorm(what, got, ref, tol);
    return got;
  }

  // [name, M, Nout, K]: tiny (M = 1), realistic, the lm_head's long reduction at toy width,
  // awkward (edges in every dimension), K % 4 != 0 (the per-element weight path)
  const INPUT_SIZES: Record<'dense' | 'nf4', readonly (readonly [string, number, number, number])[]> = {
    dense: [['tiny', 1, 3, 64], ['realistic', 64, 256, 320], ['dlogits', 33, 5000, 32], ['awkward', 37, 97, 96], ['odd K', 5, 13, 33]],
    // NF4 needs Nout·K % 64 == 0; K = 32 and 33 make the 64-blocks span rows
    nf4: [['tiny', 1, 4, 64], ['realistic', 64, 256, 320], ['dlogits', 33, 5000, 32], ['awkward', 37, 98, 32], ['odd K', 5, 64, 33]],
  };
  // lavapipe compiles a pipeline in 4–11 s of CPU on its first dispatch, so the cases below use
  // few of them: every tile for f32 (the LoRA matrices) and nf4 (the QLoRA base), accumulating on
  // the 64 × 64 one (the epilogue does not depend on the format); bf16 (the lm_head) and
  // double-quantised nf4 on the 128 × 128 tile. A forced split of three slices runs on the first
  // tile; the planned tile and split for the dlogits shape. Splits accumulate in the slice sum,
  // covered by the weightGrad cases.
  const FORMAT_TILES: readonly [StoredFormat, readonly MatmulTile[]][] = [
    ['f32', INPUT_GRAD_TILES],
    ['nf4', INPUT_GRAD_TILES],
    ['bf16', [BACKWARD_TILES.large]],
    ['nf4dq', [BACKWARD_TILES.large]],
  ];

  for (const [format, tiles] of FORMAT_TILES) {
    for (const [name, M, N, K] of INPUT_SIZES[format === 'f32' || format === 'bf16' ? 'dense' : 'nf4']) {
      it(`input: dX = s·dY·W, ${format} W, overwrite and accumulate, split or not, at ${name} M=${M} Nout=${N} K=${K}`, async () => {
        const rng = new Rng(M * 1_000_003 + N * 1009 + K + format.length);
        const { w, dense } = makeWeight(gpu, rng, format, N, K);
        const dyv = rng.f32(M * N);
        const dy = gpu.tensorFrom('dy', [M, N], 'f32', dyv);
        const grad = matmulInputGradRef(dyv, dense, M, N, K);
        const dx0 = rng.f32(M * K);
        const cases: { tile?: MatmulTile; accumulate: boolean; scale: number; split?: number }[] = [
          ...tiles.map((tile, i) => ({ tile, accumulate: i === 1, scale: [1, -0.75, 2][i] })),
          { tile: tiles[0], accumulate: false, scale: 0.5, split: 3 }, // three slices (fewer when Nout < 3·bk)
          ...(name === 'dlogits' && tiles.length > 1 ? [{ accumulate: false, scale: 1, split: 0 }] : []), // as planned
        ];
        for (const c of cases) {
          const dx = output(gpu, 'dx', [M, K], c.accumulate ? dx0 : undefined);
          const t = { dx, dy, w };
          const opts = { accumulate: c.accumulate, scale: c.scale, tile: c.tile };
          const list = c.split === undefined ? [mb.input('dx', t, opts)] : mb.inputSplit('dx', t, { ...opts, slices: c.split || undefined });
          const ref = Float64Array.from(grad, (v, i) => (c.accumulate ? dx0[i] : 0) + c.scale * v);
          const what = `${format} ${c.tile ? tileName(c.tile) : 'planned'} ${c.accumulate ? 'accumulate' : 'overwrite'} s=${c.scale} (${list.length} dispatches)`;
          // the dlogits shape sums 5000 terms (in slices when split)
          await check(what, list, dx, ref, N > 1000 ? 2e-5 : TOL);
          dx.buffer.destroy();
        }
        // one row tile over 5000 terms: the planned inputSplit splits it (the last case ran that plan)
        if (name === 'dlogits') expect(mb.planInput(M, N, K, true).slices).toBeGreaterThan(1);
        dy.buffer.destroy();
        destroyWeight(w);
      });
    }
  }

  // [name, M, Nout, K]: tiny, realistic, LoRA dB (Nout, R) and dA (R, K) shapes, many tokens
  // (several slices of ≥ 128), awkward
  const WEIGHT_SIZES: readonly (readonly [string, number, number, number])[] = [
    ['tiny', 1, 8, 20],
    ['realistic', 64, 256, 320],
    ['dB-like', 64, 256, 32],
    ['dA-like', 64, 32, 320],
    ['many tokens', 1500, 40, 36],
    ['awkward', 37, 97, 96],
  ];
  for (const [name, M, N, K] of WEIGHT_SIZES) {
    it(`weightGrad: dW = s·dYᵀ·X, every tile, overwrite and accumulate, split or not, at ${name} M=${M} Nout=${N} K=${K}`, async () => {
      const rng = new Rng(M * 7919 + N * 31 + K);
      const dyv = rng.f32(M * N);
      const xv = rng.f32(M * K);
      const dy = gpu.tensorFrom('dy', [M, N], 'f32', dyv);
      const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
      const grad = matmulWeightGradRef(dyv, xv, M, N, K);
      const dw0 = rng.f32(N * K);
      // as for input: few pipelines (accumulating only on the 64 × 64 tile in one pass); three
      // slices on the 32-wide tiles where M allows, summed into dW with accumulate; as planned
      const split = M >= 3 * 16;
      const cases: { tile?: MatmulTile; accumulate: boolean; scale: number; slices?: number }[] = [
        { tile: BACKWARD_TILES.large, accumulate: false, scale: 1, slices: 1 },
        { tile: BACKWARD_TILES.small, accumulate: true, scale: -0.75, slices: 1 },
        { tile: BACKWARD_TILES.tall, accumulate: split, scale: 2, slices: split ? 3 : 1 },
        { tile: BACKWARD_TILES.wide, accumulate: false, scale: 0.25, slices: split ? 3 : 1 },
        { accumulate: false, scale: 2 },
      ];
      for (const c of cases) {
        const dw = output(gpu, 'dw', [N, K], c.accumulate ? dw0 : undefined);
        const list = mb.weightGrad('dw', { dw, dy, x }, { accumulate: c.accumulate, scale: c.scale, tile: c.tile, slices: c.slices });
        if (c.slices !== undefined) expect(list.length).toBe(c.slices === 1 ? 1 : 2);
        const ref = Float64Array.from(grad, (v, i) => (c.accumulate ? dw0[i] : 0) + c.scale * v);
        const what = `${c.tile ? tileName(c.tile) : 'planned'} ${c.accumulate ? 'accumulate' : 'overwrite'} s=${c.scale} slices=${c.slices ?? 'planned'}`;
        // 1500 tokens summed (in slices of ≥ 128 when split)
        await check(what, list, dw, ref, M > 1000 ? 2e-5 : TOL);
        dw.buffer.destroy();
      }
      for (const t of [dy, x]) t.buffer.destroy();
    });
  }

  it('LoRA layer on an NF4 base: dA, dB and dx from these calls equal the float64 reference of y = x·Wᵀ + s·x·Aᵀ·Bᵀ', async () => {
    const d = { m: 37, k: 96, nOut: 128, r: 8 };
    const s = 2;
    const rng = new Rng(4242);
    const { w, dense } = makeWeight(gpu, rng, 'nf4', d.nOut, d.k);
    const xv = rng.f32(d.m * d.k);
    const av = rng.f32(d.r * d.k, 0.1);
    const bv = rng.f32(d.nOut * d.r, 0.1);
    const dyv = rng.f32(d.m * d.nOut);
    // the forward saves U = x·Aᵀ (M, R); the GPU would hold it rounded to f32
    const uv = Float32Array.from(matmulRef(xv, av, d.m, d.r, d.k));
    const x = gpu.tensorFrom('x', [d.m, d.k], 'f32', xv);
    const a = gpu.tensorFrom('lora_A', [d.r, d.k], 'f32', av);
    const b = gpu.tensorFrom('lora_B', [d.nOut, d.r], 'f32', bv);
    const u = gpu.tensorFrom('u', [d.m, d.r], 'f32', uv);
    const dy = gpu.tensorFrom('dy', [d.m, d.nOut], 'f32', dyv);
    // gradient accumulation: dA and dB hold an earlier micro-batch's gradients
    const dA0 = rng.f32(d.r * d.k);
    const dB0 = rng.f32(d.nOut * d.r);
    const dA = output(gpu, 'dA', [d.r, d.k], dA0);
    const dB = output(gpu, 'dB', [d.nOut, d.r], dB0);
    const dU = output(gpu, 'dU', [d.m, d.r]);
    const dx = output(gpu, 'dx', [d.m, d.k]);
    submitDispatches(gpu, [
      ...mb.weightGrad('dB', { dw: dB, dy, x: u }, { accumulate: true, scale: s }),
      ...mb.inputSplit('dU', { dx: dU, dy, w: { format: 'f32', nOut: d.nOut, k: d.r, data: b } }, { scale: s }),
      ...mb.weightGrad('dA', { dw: dA, dy: dU, x }, { accumulate: true }),
      mb.input('dx base', { dx, dy, w }),
      mb.input('dx lora', { dx, dy: dU, w: { format: 'f32', nOut: d.r, k: d.k, data: a } }, { accumulate: true }),
    ]);
    const ref = loraLinearBackwardRef(dyv, xv, dense, av, bv, d, s);
    // two chained f32 matmuls of ≤ 128 terms each (dU feeds dA and dx)
    expectRelNorm('dB', await gpu.readF32(dB), Float64Array.from(ref.dB, (v, i) => v + dB0[i]), TOL);
    expectRelNorm('dA', await gpu.readF32(dA), Float64Array.from(ref.dA, (v, i) => v + dA0[i]), TOL);
    expectRelNorm('dx', await gpu.readF32(dx), ref.dx, TOL);
    for (const t of [x, a, b, u, dy, dA, dB, dU, dx]) t.buffer.destroy();
    destroyWeight(w);
  });

  it('gives bit-identical results on repeated runs (split reductions summed in a fixed order)', async () => {
    const rng = new Rng(77);
    const [M, N, K] = [700, 64, 40];
    const dy = gpu.tensorFrom('dy', [M, N], 'f32', rng.f32(M * N));
    const x = gpu.tensorFrom('x', [M, K], 'f32', rng.f32(M * K));
    const { w } = makeWeight(gpu, rng, 'bf16', N, K);
    const dw = gpu.tensor('dw', [N, K], 'f32');
    const dx = gpu.tensor('dx', [M, K], 'f32');
    const list = [...mb.weightGrad('dw', { dw, dy, x }, { slices: 5 }), ...mb.inputSplit('dx', { dx, dy, w }, { slices: 3 })];
    expect(list.length).toBe(4);
    submitDispatches(gpu, list);
    const first = [await gpu.readF32(dw), await gpu.readF32(dx)];
    gpu.fill32(dw, NAN_WORD);
    gpu.fill32(dx, NAN_WORD);
    submitDispatches(gpu, list);
    expect(await gpu.readF32(dw)).toEqual(first[0]);
    expect(await gpu.readF32(dx)).toEqual(first[1]);
    for (const t of [dy, x, dw, dx]) t.buffer.destroy();
    destroyWeight(w);
  });

  it('refuses mismatched shapes, outputs sharing a buffer with inputs and tiles not compiled', async () => {
    const rng = new Rng(5);
    const { w } = makeWeight(gpu, rng, 'f32', 8, 16);
    const big = gpu.tensor('big', [1024], 'f32');
    const dy = tensorView(big.buffer, 'dy', [4, 8], 'f32');
    const x = gpu.tensor('x', [4, 16], 'f32');
    expect(() => mb.input('layer 3 q_proj', { dx: gpu.tensor('dx', [4, 15], 'f32'), dy, w })).toThrow(/layer 3 q_proj.*dx dx is f32 \[4, 15\], expected f32 \(…, 16\)/);
    expect(() => mb.input('q', { dx: gpu.tensor('dx', [5, 16], 'f32'), dy, w })).toThrow(/5 rows but dy dy has 4/);
    expect(() => mb.input('q', { dx: tensorView(big.buffer, 'dx in dy', [4, 16], 'f32', 256), dy, w })).toThrow(/shares a GPU buffer with input dy/);
    expect(() => mb.weightGrad('dA', { dw: gpu.tensor('dw', [8, 16], 'f32'), dy, x: gpu.tensor('x', [3, 16], 'f32') })).toThrow(/4 rows but x x has 3/);
    expect(() => mb.weightGrad('dA', { dw: gpu.tensor('dw', [8, 15], 'f32'), dy, x })).toThrow(ShapeError);
    expect(() => mb.weightGrad('dA', { dw: gpu.tensor('dw', [8, 16], 'f32'), dy, x }, { scale: NaN })).toThrow(/scale NaN/);
    const odd = { bm: 64, bn: 32, bk: 16, tm: 4, tn: 4 };
    expect(() => mb.input('q', { dx: gpu.tensor('dx', [4, 16], 'f32'), dy, w }, { tile: odd })).toThrow(/not compiled/);
    destroyWeight(w);
  });
});
