import { describe, expect, it } from 'vitest';
import { CrossEntropy, crossEntropyBackwardRef, crossEntropyForwardRef } from '../../src/kernels/cross-entropy.js';
import { IGNORE_INDEX } from '../../src/labels.js';
import { tensorView } from '../../src/kernels/tensor.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { expectGradient, weightedSum } from './gradcheck.js';

/** Runs the kernel on `logits` and `targets`; returns GPU loss, lse and correct. */
async function run(
  gpu: Gpu,
  logits: Float32Array,
  targets: Int32Array,
  vocab: number,
  gridWidth?: number,
): Promise<{ loss: Float32Array; lse: Float32Array; correct: Float32Array }> {
  const rows = targets.length;
  const lossT = gpu.tensor('loss', [rows], 'f32');
  const lseT = gpu.tensor('lse', [rows], 'f32');
  const correctT = gpu.tensor('correct', [rows], 'f32');
  for (const t of [lossT, lseT, correctT]) gpu.fill32(t, NAN_WORD);
  const ce = await CrossEntropy.create(gpu, { gridWidth });
  const d = ce.forward(
    'lm_head chunk 0',
    {
      loss: lossT,
      lse: lseT,
      correct: correctT,
      logits: gpu.tensorFrom('logits', [rows, vocab], 'f32', logits),
      targets: gpu.tensorFrom('targets', [rows], 'i32', targets),
    },
    { rows, vocab },
  );
  submitDispatches(gpu, [d]);
  return { loss: await gpu.readF32(lossT), lse: await gpu.readF32(lseT), correct: await gpu.readF32(correctT) };
}

/** Seeded logits (std 3, each row shifted by up to ±40 so the max matters) and targets with some ignored. */
function data(rows: number, vocab: number): { logits: Float32Array; targets: Int32Array } {
  const rng = new Rng(rows * 131 + vocab);
  const logits = rng.f32(rows * vocab, 3);
  for (let r = 0; r < rows; r++) {
    const shift = rng.uniform(-40, 40);
    for (let v = 0; v < vocab; v++) logits[r * vocab + v] += shift;
    // one confident token per row, as a trained model has
    logits[r * vocab + rng.int(0, vocab)] += 15;
  }
  const targets = Int32Array.from({ length: rows }, (_, r) => (r % 3 === 2 ? IGNORE_INDEX : rng.int(0, vocab)));
  // every other scored row's target is its argmax, so "correct" is 1 there
  const { argmax } = crossEntropyForwardRef(logits, targets, rows, vocab);
  for (let r = 0; r < rows; r += 2) if (targets[r] !== IGNORE_INDEX) targets[r] = argmax[r];
  return { logits, targets };
}

// lse is ~|shift| + 12: an f32 sum of up to 151936 exps (relative error ~1e-6) and a log,
// then the f32 rounding of a value up to ~60 (ulp 4e-6)
const LSE_RTOL = 1e-6;
const LSE_ATOL = 1e-5;

describe('cross-entropy forward', () => {
  // tiny, awkward (not a multiple of 4·WG, fewer logits than invocations), realistic Qwen3 vocab
  for (const [rows, vocab] of [[1, 5], [3, 100], [7, 1003], [5, 2049], [2, 4096], [6, 151936]] as const) {
    it(`matches the float64 reference at Tc=${rows}, V=${vocab}`, async () => {
      const { logits, targets } = data(rows, vocab);
      const out = await run(await testGpu(), logits, targets, vocab);
      const ref = crossEntropyForwardRef(logits, targets, rows, vocab);
      expectClose('lse', out.lse, ref.lse, LSE_RTOL, LSE_ATOL);
      // loss = lse − logit: lse's absolute error
      expectClose('loss', out.loss, ref.loss, 0, LSE_ATOL);
      // the argmax compares the very f32 values the reference reads: exact
      expect(Array.from(out.correct)).toEqual(Array.from(ref.correct));
      for (let r = 0; r < rows; r++) if (targets[r] === IGNORE_INDEX) expect(out.loss[r]).toBe(0);
    });
  }

  it('counts the lowest index among equal maxima as the argmax (torch.argmax), within and across invocations', async () => {
    const vocab = 5000;
    const rows = 4;
    const logits = new Rng(3).f32(rows * vocab, 1);
    // row 0: the max at 10 and 2058 (one invocation, chunks 0 and 1); row 1: at 7 and 8 (two
    // invocations); rows 2, 3: the same pair at 4100 and 4999 (the tail)
    const ties: [number, number][] = [[10, 2058], [7, 8], [4100, 4999], [4100, 4999]];
    ties.forEach(([a, b], r) => {
      logits[r * vocab + a] = 50;
      logits[r * vocab + b] = 50;
    });
    const targets = Int32Array.from([10, 8, 4100, 4999]);
    const out = await run(await testGpu(), logits, targets, vocab);
    expect(Array.from(out.correct)).toEqual([1, 0, 1, 0]);
    expect(Array.from(crossEntropyForwardRef(logits, targets, rows, vocab).correct)).toEqual([1, 0, 1, 0]);
  });

  it('folds a grid past gridWidth into 2D', async () => {
    const { logits, targets } = data(11, 300);
    const out = await run(await testGpu(), logits, targets, 300, 4);
    const ref = crossEntropyForwardRef(logits, targets, 11, 300);
    expectClose('lse', out.lse, ref.lse, LSE_RTOL, LSE_ATOL);
    expectClose('loss', out.loss, ref.loss, 0, LSE_ATOL);
  });

  it('gives NaN for a target outside [0, V) other than -100', async () => {
    const { logits } = data(4, 50);
    const out = await run(await testGpu(), logits, Int32Array.from([49, 50, -1, IGNORE_INDEX]), 50);
    expect(Number.isFinite(out.loss[0])).toBe(true);
    expect(Number.isNaN(out.loss[1])).toBe(true);
    expect(Number.isNaN(out.loss[2])).toBe(true);
    expect(out.loss[3]).toBe(0);
    expect(out.lse.every(Number.isFinite)).toBe(true);
  });

  it('rejects logits of the wrong vocabulary size', async () => {
    const gpu = await testGpu();
    const ce = await CrossEntropy.create(gpu);
    const t = {
      loss: gpu.tensor('loss', [2], 'f32'),
      lse: gpu.tensor('lse', [2], 'f32'),
      correct: gpu.tensor('correct', [2], 'f32'),
      logits: gpu.tensor('logits', [2, 10], 'f32'),
      targets: gpu.tensor('targets', [2], 'i32'),
    };
    expect(() => ce.forward('chunk', t, { rows: 2, vocab: 12 })).toThrow(/chunk \(crossEntropyForward\): logits has shape \[2, 10\], expected \[2, 12\]/);
  });
});

/** One CrossEntropy (two pipelines) per grid width for the backward tests. */
const compiled = new Map<number | undefined, Promise<CrossEntropy>>();
function crossEntropyFor(gpu: Gpu, gridWidth?: number): Promise<CrossEntropy> {
  let ce = compiled.get(gridWidth);
  if (!ce) compiled.set(gridWidth, (ce = CrossEntropy.create(gpu, { gridWidth })));
  return ce;
}

/**
 * Runs the backward kernel in place over the logits with lse from the float64 forward reference
 * (rounded to f32, as the forward kernel saves it); returns the GPU dlogits and that lse. The
 * logits themselves are the "poison": every element left unwritten keeps a logit far from any
 * gradient value (|dlogits| ≤ |scale|).
 */
async function runBackward(
  gpu: Gpu,
  logits: Float32Array,
  targets: Int32Array,
  vocab: number,
  scale: number,
  options: { gradScale?: number; gridWidth?: number } = {},
): Promise<{ dlogits: Float32Array; lse: Float32Array }> {
  const rows = targets.length;
  const lse = Float32Array.from(crossEntropyForwardRef(logits, targets, rows, vocab).lse);
  const ce = await crossEntropyFor(gpu, options.gridWidth);
  const logitsT = gpu.tensorFrom('logits', [rows, vocab], 'f32', logits);
  const t = {
    logits: logitsT,
    targets: gpu.tensorFrom('targets', [rows], 'i32', targets),
    lse: gpu.tensorFrom('lse', [rows], 'f32', lse),
    gradScale: options.gradScale === undefined ? undefined : gpu.tensorFrom('gradScale', [1], 'f32', Float32Array.of(options.gradScale)),
  };
  submitDispatches(gpu, [ce.backward('lm_head chunk 0 backward', t, { rows, vocab, scale })]);
  return { dlogits: await gpu.readF32(logitsT), lse };
}

// dlogits = c·(exp(x − lse) − onehot): f32 rounding of x − lse (|x| up to ~60, half an ulp ≈ 2e-6)
// makes exp ~2e-6 relative off, so 1e-5 relative; the absolute floor (in units of c) covers the
// target element, where p − 1 cancels for a confident row and keeps p's absolute error (≤ 2e-6·p)
const D_RTOL = 1e-5;
const D_ATOL = 3e-6;

describe('cross-entropy backward', () => {
  it('float64 reference equals central differences of the forward reference', () => {
    const rows = 4;
    const vocab = 11;
    const rng = new Rng(5);
    const logits = rng.f32(rows * vocab, 1);
    const targets = Int32Array.from([3, IGNORE_INDEX, 0, 10]);
    const scale = 1 / 3;
    const { lse } = crossEntropyForwardRef(logits, targets, rows, vocab);
    // L = scale · Σ_r loss_r, the chunk's part of the mean loss
    const loss = weightedSum(new Float64Array(rows).fill(scale), (x) => crossEntropyForwardRef(x, targets, rows, vocab).loss);
    expectGradient('dlogits', loss, logits, crossEntropyBackwardRef(logits, targets, lse, rows, vocab, scale), { samples: rows * vocab });
  });

  // tiny, awkward (not a multiple of the 4096-logit slice, fewer logits than invocations), realistic Qwen3 vocab
  for (const [rows, vocab] of [[1, 5], [3, 100], [7, 1003], [5, 4097], [2, 8192], [6, 151936]] as const) {
    it(`matches the float64 reference at Tc=${rows}, V=${vocab}`, async () => {
      const { logits, targets } = data(rows, vocab);
      const scale = 1 / 37;
      const out = await runBackward(await testGpu(), logits, targets, vocab, scale);
      const ref = crossEntropyBackwardRef(logits, targets, out.lse, rows, vocab, scale);
      expectClose('dlogits', out.dlogits, ref, D_RTOL, D_ATOL * scale);
      for (let r = 0; r < rows; r++) {
        if (targets[r] === IGNORE_INDEX) expect(out.dlogits.subarray(r * vocab, (r + 1) * vocab).every((v) => v === 0)).toBe(true);
      }
    });
  }

  it('multiplies by scale and by the gradScale buffer read on the GPU', async () => {
    const { logits, targets } = data(5, 777);
    const out = await runBackward(await testGpu(), logits, targets, 777, 2, { gradScale: 0.0625 });
    const ref = crossEntropyBackwardRef(logits, targets, out.lse, 5, 777, 2 * 0.0625);
    expectClose('dlogits', out.dlogits, ref, D_RTOL, D_ATOL * 0.125);
  });

  it('folds the rows past gridWidth into z', async () => {
    // 11 rows as a 4 × 3 (y, z) grid with one spare slot, 2 slices per row
    const { logits, targets } = data(11, 5000);
    const out = await runBackward(await testGpu(), logits, targets, 5000, 1, { gridWidth: 4 });
    expectClose('dlogits', out.dlogits, crossEntropyBackwardRef(logits, targets, out.lse, 11, 5000, 1), D_RTOL, D_ATOL);
  });

  it('gives NaN rows for targets outside [0, V) other than -100 and zero rows for -100', async () => {
    const { logits } = data(4, 50);
    const targets = Int32Array.from([49, 50, -1, IGNORE_INDEX]);
    const { dlogits } = await runBackward(await testGpu(), logits, targets, 50, 1);
    const row = (r: number) => Array.from(dlogits.subarray(r * 50, (r + 1) * 50));
    expect(row(0).every(Number.isFinite)).toBe(true);
    expect(row(1).every(Number.isNaN)).toBe(true);
    expect(row(2).every(Number.isNaN)).toBe(true);
    expect(row(3).every((v) => v === 0)).toBe(true);
  });

  it('rejects inputs sharing the logits buffer and mismatched shapes', async () => {
    const gpu = await testGpu();
    const ce = await crossEntropyFor(gpu);
    const buf = gpu.buffer('logits + lse', 2 * 10 * 4 + 256);
    const logits = tensorView(buf, 'logits', [2, 10], 'f32');
    const lseInside = tensorView(buf, 'lse in the logits buffer', [2], 'f32', 256);
    const targets = gpu.tensor('targets', [2], 'i32');
    const lse = gpu.tensor('lse', [2], 'f32');
    expect(() => ce.backward('chunk 3', { logits, targets, lse: lseInside }, { rows: 2, vocab: 10, scale: 1 })).toThrow(
      /chunk 3 \(crossEntropyBackward\): lse in the logits buffer shares a GPU buffer with the logits/,
    );
    expect(() => ce.backward('c', { logits, targets, lse, gradScale: gpu.tensor('s', [2], 'f32') }, { rows: 2, vocab: 10, scale: 1 })).toThrow(/s has shape \[2\], expected \[1\]/);
    expect(() => ce.backward('c', { logits, targets, lse }, { rows: 2, vocab: 10, scale: NaN })).toThrow(/scale=NaN/);
  });
});
