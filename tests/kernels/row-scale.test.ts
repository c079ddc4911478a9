import { describe, expect, it } from 'vitest';
import { RowScale, rowScaleRef } from '../../src/kernels/row-scale.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { ShapeError } from '../../src/errors.js';
import { NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/** Rows of every kind the rule distinguishes; `rows` of width k, the kind chosen by row index. */
function makeRows(rng: Rng, m: number, k: number): Float32Array {
  const x = new Float32Array(m * k);
  for (let i = 0; i < m; i++) {
    const row = x.subarray(i * k, (i + 1) * k);
    const kind = i % 12;
    for (let j = 0; j < k; j++) row[j] = rng.normal();
    const at = rng.int(0, k);
    switch (kind) {
      case 0: // activations with an outlier up to 1e5 (f16 overflows at 65504)
        row[at] = -1e5;
        break;
      case 1: // tiny gradients (f16 underflows below 6e-8)
        for (let j = 0; j < k; j++) row[j] *= 1e-10;
        break;
      case 2: // the largest |x| exactly a power of two: scaled to exactly 2^14
        for (let j = 0; j < k; j++) row[j] = Math.max(-0.99, Math.min(0.99, row[j] / 8));
        row[at] = -256;
        break;
      case 3: // just above a power of two: the next octave
        for (let j = 0; j < k; j++) row[j] = Math.max(-0.99, Math.min(0.99, row[j] / 8));
        row[at] = 1 + 2 ** -23;
        break;
      case 4:
        row.fill(0);
        break;
      case 5:
        row[at] = NaN;
        break;
      case 6:
        row[at] = -Infinity;
        break;
      case 7: // near f32's largest: e = 14 − 128
        row[at] = 3e38;
        break;
      case 8: // f32 subnormals only: e would exceed 126 and is clamped
        for (let j = 0; j < k; j++) row[j] = (j % 3) * 2 ** -140;
        break;
      case 9: // a single nonzero subnormal
        row.fill(0);
        row[at] = -(2 ** -149);
        break;
      default: // ordinary activations
        for (let j = 0; j < k; j++) row[j] *= 10 ** rng.int(-3, 3);
    }
  }
  return x;
}

describe('row scale', () => {
  // tiny, realistic (2048 tokens of a 2560-wide hidden state is the GPU shape; 96 × 2560 here), awkward
  for (const [m, k] of [
    [1, 1],
    [12, 7],
    [37, 67],
    [96, 2560],
    [25, 1031],
  ] as const) {
    it(`matches the float64 rule exactly at M=${m} K=${k}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(m * 131 + k);
      const xv = makeRows(rng, m, k);
      const rowScale = gpu.tensor('rowScale', [m], 'f32');
      gpu.fill32(rowScale, NAN_WORD);
      const rs = await RowScale.create(gpu);
      submitDispatches(gpu, [rs.forward('row scale', { rowScale, x: gpu.tensorFrom('x', [m, k], 'f32', xv) }, k)]);
      const got = await gpu.readF32(rowScale);
      const ref = rowScaleRef(xv, m, k);
      // exact: the scales are powers of two, computed from the bits
      for (let i = 0; i < m; i++) {
        expect(got[i], `row ${i} (kind ${i % 12}): got ${got[i]}, expected ${ref[i]}`).toBe(ref[i]);
      }
    });
  }

  it('the rule: scaled rows stay within 2^14, their largest element at or above 2^13; special rows get 1', () => {
    const rng = new Rng(9);
    const [m, k] = [48, 33];
    const xv = makeRows(rng, m, k);
    const s = rowScaleRef(xv, m, k);
    for (let i = 0; i < m; i++) {
      const row = Array.from(xv.subarray(i * k, (i + 1) * k));
      const amax = Math.max(...row.map(Math.abs));
      expect(Number.isInteger(Math.log2(s[i]))).toBe(true);
      if (!Number.isFinite(amax) || amax === 0) {
        expect(s[i]).toBe(1);
        continue;
      }
      expect(amax * s[i]).toBeLessThanOrEqual(2 ** 14);
      // clamped rows (f32 subnormals only) stop at 2^126
      if (s[i] < 2 ** 126) expect(amax * s[i]).toBeGreaterThan(2 ** 13);
    }
    // hand-worked: max |x| = 1e5 → ceil(log2 1e5) = 17 → 2^-3; 256 = 2^8 → 2^6; 1 + 2^-23 → 2^13
    expect(Array.from(rowScaleRef([3, -1e5, 256, 1, 1 + 2 ** -23, 0.5], 3, 2))).toEqual([2 ** -3, 2 ** 6, 2 ** 13]);
    expect(Array.from(rowScaleRef([1e-10, 0, NaN, 1, 0, 0], 3, 2))).toEqual([2 ** 47, 1, 1]);
    // 2^-113: e = 14 + 113 = 127, clamped to 126; 2^-112: exactly 126
    expect(Array.from(rowScaleRef([2 ** -113, 0, 2 ** -112, 0], 2, 2))).toEqual([2 ** 126, 2 ** 126]);
  });

  it('rejects mismatched shapes', async () => {
    const gpu = await testGpu();
    const rs = await RowScale.create(gpu);
    const x = gpu.tensor('x', [6, 10], 'f32');
    expect(() => rs.forward('bad', { rowScale: gpu.tensor('s', [5], 'f32'), x }, 10)).toThrow(ShapeError);
    expect(() => rs.forward('bad', { rowScale: gpu.tensor('s', [6], 'f32'), x }, 12)).toThrow(/expected f32 \(…, 12\)/);
  });
});
