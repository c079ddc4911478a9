import { describe, expect, it } from 'vitest';
import { CrossEntropy, crossEntropyForwardRef, IGNORE_INDEX } from '../../src/kernels/cross-entropy.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/** Runs the kernel on `logits` and `targets`; returns GPU loss and lse. */
async function run(gpu: Gpu, logits: Float32Array, targets: Int32Array, vocab: number, gridWidth?: number): Promise<{ loss: Float32Array; lse: Float32Array }> {
  const rows = targets.length;
  const lossT = gpu.tensor('loss', [rows], 'f32');
  const lseT = gpu.tensor('lse', [rows], 'f32');
  gpu.fill32(lossT, NAN_WORD);
  gpu.fill32(lseT, NAN_WORD);
  const ce = await CrossEntropy.create(gpu, { gridWidth });
  const d = ce.forward(
    'lm_head chunk 0',
    { loss: lossT, lse: lseT, logits: gpu.tensorFrom('logits', [rows, vocab], 'f32', logits), targets: gpu.tensorFrom('targets', [rows], 'i32', targets) },
    { rows, vocab },
  );
  submitDispatches(gpu, [d]);
  return { loss: await gpu.readF32(lossT), lse: await gpu.readF32(lseT) };
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
      for (let r = 0; r < rows; r++) if (targets[r] === IGNORE_INDEX) expect(out.loss[r]).toBe(0);
    });
  }

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
      logits: gpu.tensor('logits', [2, 10], 'f32'),
      targets: gpu.tensor('targets', [2], 'i32'),
    };
    expect(() => ce.forward('chunk', t, { rows: 2, vocab: 12 })).toThrow(/chunk \(crossEntropyForward\): logits has shape \[2, 10\], expected \[2, 12\]/);
  });
});
