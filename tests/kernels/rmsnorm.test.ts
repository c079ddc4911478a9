import { describe, expect, it } from 'vitest';
import { Rmsnorm, rmsnormBackwardRef, rmsnormForwardRef } from '../../src/kernels/rmsnorm.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { tensorView } from '../../src/kernels/tensor.js';
import { bf16BitsToF32, f32ToBf16Array } from '../../src/model/bf16.js';
import { ShapeError } from '../../src/errors.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { expectGradient, weightedSum } from './gradcheck.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

const EPS = 1e-6;

/** Runs the kernel on seeded data and compares y and rstd with the float64 reference. */
async function check(gpu: Gpu, rows: number, width: number, gridWidth?: number, xShape: readonly number[] = [rows, width]): Promise<void> {
  const rng = new Rng(rows * 7919 + width);
  const x = rng.f32(rows * width, 2);
  const wBits = f32ToBf16Array(Float32Array.from({ length: width }, () => 1 + 0.5 * rng.normal()));
  const wVals = Array.from(wBits, bf16BitsToF32);
  const xT = gpu.tensorFrom('x', xShape, 'f32', x);
  const yT = gpu.tensor('y', xShape, 'f32');
  const rstdT = gpu.tensor('rstd', [rows], 'f32');
  gpu.fill32(yT, NAN_WORD);
  gpu.fill32(rstdT, NAN_WORD);
  const norm = await Rmsnorm.create(gpu, { gridWidth });
  const weight = gpu.tensorFrom('weight', [width], 'bf16x2', wBits);
  submitDispatches(gpu, [norm.forward('rmsnorm', { y: yT, rstd: rstdT, x: xT, weight }, { rows, width, eps: EPS })]);
  const ref = rmsnormForwardRef(x, wVals, rows, width, EPS);
  // f32 sum of W squares (≤ 2560 terms, partly tree-summed), one sqrt and a divide: ~1e-6 relative
  expectClose('rstd', await gpu.readF32(rstdT), ref.rstd, 2e-6, 0);
  // y adds two f32 products to rstd's error; atol only for values that round to ~0
  expectClose('y', await gpu.readF32(yT), ref.y, 3e-6, 1e-7);
}

describe('rmsnorm forward', () => {
  // tiny, narrow (q/k norm Dh, N·H = 65536 rows), awkward odd widths and row counts, widths that are
  // exact multiples of the 4-column unroll (64 narrow, 1024 wide), realistic decoder width D
  for (const [rows, width] of [[1, 16], [3, 32], [7, 37], [5, 64], [4099, 128], [65536, 128], [5, 255], [11, 257], [2, 1024], [33, 2560], [3, 3001]] as const) {
    it(`matches the float64 reference at rows=${rows}, W=${width}`, async () => {
      await check(await testGpu(), rows, width);
    });
  }

  it('folds a grid past gridWidth into 2D (narrow rows, ragged last grid row)', async () => {
    // 1003 rows / 8 per workgroup = 126 workgroups as a 5 × 26 grid (4 spare workgroups)
    await check(await testGpu(), 1003, 128, 5);
  });

  it('folds a grid past gridWidth into 2D (wide rows)', async () => {
    await check(await testGpu(), 37, 300, 6);
  });

  it('normalises each head of an (N, H·Dh) projection as rows N·H of width Dh', async () => {
    // N = 9 tokens, H = 4 heads of Dh = 128: x given as its (N, H·Dh) shape
    await check(await testGpu(), 9 * 4, 128, undefined, [9, 4 * 128]);
  });

  it('rejects a weight of the wrong width and an output aliasing the input', async () => {
    const gpu = await testGpu();
    const norm = await Rmsnorm.create(gpu);
    const x = gpu.tensor('x', [4, 64], 'f32');
    const y = gpu.tensor('y', [4, 64], 'f32');
    const rstd = gpu.tensor('rstd', [4], 'f32');
    const w32 = gpu.tensor('w32', [32], 'bf16x2');
    const w64 = gpu.tensor('w64', [64], 'bf16x2');
    expect(() => norm.forward('layer 0 input_layernorm', { y, rstd, x, weight: w32 }, { rows: 4, width: 64, eps: EPS })).toThrow(
      /layer 0 input_layernorm \(rmsnormForward\): weight w32 .*width 64/,
    );
    const alias = tensorView(x.buffer, 'x again', [4, 64], 'f32');
    expect(() => norm.forward('n', { y: alias, rstd, x, weight: w64 }, { rows: 4, width: 64, eps: EPS })).toThrow(ShapeError);
    expect(() => norm.forward('n', { y, rstd, x, weight: w64 }, { rows: 4, width: 32, eps: EPS })).toThrow(/x x is f32 \[4, 64\]/);
  });
});

/** Seeded x (rows·W, std 2), bf16 weight around 1, dy (std 1). */
function backwardData(rows: number, width: number): { x: Float32Array; wBits: Uint16Array; w: number[]; dy: Float32Array } {
  const rng = new Rng(rows * 104729 + width);
  const x = rng.f32(rows * width, 2);
  const wBits = f32ToBf16Array(Float32Array.from({ length: width }, () => 1 + 0.5 * rng.normal()));
  return { x, wBits, w: Array.from(wBits, bf16BitsToF32), dy: rng.f32(rows * width, 1) };
}

/** One Rmsnorm (six pipelines) per grid width for the backward tests: compiling is the slow part on lavapipe. */
const compiled = new Map<number | undefined, Promise<Rmsnorm>>();
function rmsnormFor(gpu: Gpu, gridWidth?: number): Promise<Rmsnorm> {
  let norm = compiled.get(gridWidth);
  if (!norm) compiled.set(gridWidth, (norm = Rmsnorm.create(gpu, { gridWidth })));
  return norm;
}

/**
 * Runs the backward kernel with rstd from the float64 forward reference (rounded to f32, as the
 * forward kernel saves it) and compares dx with the float64 backward reference. With `accumulate`,
 * dx starts at seeded values that the kernel must add to; otherwise dx is poisoned with NaN.
 */
async function checkBackward(
  gpu: Gpu,
  rows: number,
  width: number,
  accumulate: boolean,
  options: { gridWidth?: number; xShape?: readonly number[] } = {},
): Promise<void> {
  const xShape = options.xShape ?? [rows, width];
  const { x, wBits, w, dy } = backwardData(rows, width);
  const rstd = Float32Array.from(rmsnormForwardRef(x, w, rows, width, EPS).rstd);
  const prior = accumulate ? new Rng(rows + 3 * width).f32(rows * width, 1) : undefined;
  const dxT = gpu.tensor('dx', xShape, 'f32');
  if (prior) gpu.write(dxT, prior);
  else gpu.fill32(dxT, NAN_WORD);
  const norm = await rmsnormFor(gpu, options.gridWidth);
  const t = {
    dx: dxT,
    dy: gpu.tensorFrom('dy', xShape, 'f32', dy),
    x: gpu.tensorFrom('x', xShape, 'f32', x),
    weight: gpu.tensorFrom('weight', [width], 'bf16x2', wBits),
    rstd: gpu.tensorFrom('rstd', [rows], 'f32', rstd),
  };
  submitDispatches(gpu, [norm.backward('rmsnorm backward', t, { rows, width, accumulate })]);
  const ref = rmsnormBackwardRef(dy, x, w, rstd, rows, width);
  if (prior) for (let i = 0; i < ref.length; i++) ref[i] += prior[i];
  // dx = s·(g − x·s²c): f32 products and a W-term dot product (~1e-6 relative on c); the
  // difference can cancel, so the absolute floor is 1e-6 of dx's O(1) scale
  expectClose('dx', await gpu.readF32(dxT), ref, 1e-5, 1e-6);
}

describe('rmsnorm backward', () => {
  it('float64 reference equals central differences of the forward reference', () => {
    // tiny odd width, and a wider row with a realistic eps; the loss is Σ dy ⊙ y(x)
    for (const [rows, width] of [[3, 7], [2, 64]] as const) {
      const { x, w, dy } = backwardData(rows, width);
      const { rstd } = rmsnormForwardRef(x, w, rows, width, EPS);
      const loss = weightedSum(dy, (xx) => rmsnormForwardRef(xx, w, rows, width, EPS).y);
      expectGradient(`dx rows=${rows} W=${width}`, loss, x, rmsnormBackwardRef(dy, x, w, rstd, rows, width), { samples: 128 });
    }
  });

  // tiny, awkward widths and row counts (not multiples of the 4-column unroll or the workgroup),
  // realistic q/k norm (Dh = 128, many rows) and decoder width D = 2560
  for (const [rows, width] of [[1, 16], [7, 37], [5, 64], [5, 255], [11, 257], [3, 3001], [4099, 128], [33, 2560]] as const) {
    for (const accumulate of [false, true]) {
      it(`matches the float64 reference at rows=${rows}, W=${width}, ${accumulate ? 'adding into dx' : 'overwriting dx'}`, async () => {
        await checkBackward(await testGpu(), rows, width, accumulate);
      });
    }
  }

  it('folds a grid past gridWidth into 2D (narrow and wide rows)', async () => {
    await checkBackward(await testGpu(), 1003, 128, false, { gridWidth: 5 });
    await checkBackward(await testGpu(), 37, 300, true, { gridWidth: 6 });
  });

  it('takes the per-head view: (N, H·Dh) as rows N·H of width Dh', async () => {
    await checkBackward(await testGpu(), 9 * 4, 128, false, { xShape: [9, 4 * 128] });
  });

  it('rejects dx aliasing an input, a wrong rstd length and a wrong weight', async () => {
    const gpu = await testGpu();
    const norm = await rmsnormFor(gpu);
    const x = gpu.tensor('x', [4, 64], 'f32');
    const dy = gpu.tensor('dy', [4, 64], 'f32');
    const dx = gpu.tensor('dx', [4, 64], 'f32');
    const rstd = gpu.tensor('rstd', [4], 'f32');
    const weight = gpu.tensor('w', [64], 'bf16x2');
    const shape = { rows: 4, width: 64, accumulate: true };
    expect(() => norm.backward('n', { dx: tensorView(dy.buffer, 'dy again', [4, 64], 'f32'), dy, x, weight, rstd }, shape)).toThrow(/shares a GPU buffer/);
    expect(() => norm.backward('n', { dx, dy, x, weight, rstd: gpu.tensor('rstd3', [3], 'f32') }, shape)).toThrow(ShapeError);
    expect(() => norm.backward('layer 2 q_norm', { dx, dy, x, weight: gpu.tensor('w32', [32], 'bf16x2'), rstd }, shape)).toThrow(
      /layer 2 q_norm \(rmsnormBackward\): weight w32/,
    );
  });
});
