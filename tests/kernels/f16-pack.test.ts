import { describe, expect, it } from 'vitest';
import { F16Pack, f16PackRef } from '../../src/kernels/f16-pack.js';
import { roundToF16 } from '../../src/kernels/matmul-sgm.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { ShapeError } from '../../src/errors.js';
import { fp16ToFp32 as halfValue } from '../../src/export/half.js';
import { NAN_WORD } from '../helpers/compare.js';
import { halfUlp } from '../helpers/half.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/** Rows of the kinds the scale rule distinguishes: outliers past f16's range, tiny rows, zeros, NaN, ±Inf, ordinary. */
function makeRows(rng: Rng, m: number, k: number): Float32Array {
  const x = new Float32Array(m * k);
  for (let i = 0; i < m; i++) {
    const row = x.subarray(i * k, (i + 1) * k);
    for (let j = 0; j < k; j++) row[j] = rng.normal() * 10 ** rng.int(-2, 2);
    const at = rng.int(0, k);
    switch (i % 7) {
      case 0: // a SwiGLU outlier past f16's 65504
        row[at] = -1e5;
        break;
      case 1: // gradients far below f16's normal range
        for (let j = 0; j < k; j++) row[j] *= 1e-10;
        break;
      case 2:
        row.fill(0);
        break;
      case 3: // a NaN row keeps scale 1 (its large values would round past 65504 as in any f16 conversion: kept small)
        for (let j = 0; j < k; j++) row[j] = Math.max(-100, Math.min(100, row[j]));
        row[at] = NaN;
        break;
      case 4:
        for (let j = 0; j < k; j++) row[j] = Math.max(-100, Math.min(100, row[j]));
        row[at] = Infinity;
        break;
      default:
        break;
    }
  }
  return x;
}

describe('f16 pack and unpack of saved activations', () => {
  for (const [m, k] of [
    [1, 1],
    [7, 33],
    [37, 1000],
    [20, 9728 / 8],
  ] as const) {
    it(`(${m}, ${k}): the row scales exactly, every value within one f16 rounding of x·scale, unpack within it of x`, async () => {
      const gpu = await testGpu();
      const kernel = await F16Pack.create(gpu);
      const rng = new Rng(m * 131 + k);
      const xv = makeRows(rng, m, k);
      const x = gpu.tensorFrom('x', [m, k], 'f32', xv);
      const packed = { y: gpu.tensor('y', [m, k], 'f16'), scale: gpu.tensor('scale', [m], 'f32') };
      const back = gpu.tensor('back', [m, k], 'f32');
      gpu.fill32(packed.y, NAN_WORD);
      gpu.fill32(packed.scale, NAN_WORD);
      gpu.fill32(back, NAN_WORD);
      submitDispatches(gpu, [kernel.pack('pack', packed, x), kernel.unpack('unpack', back, packed)]);
      const ref = f16PackRef(xv, m, k);
      expect(Array.from(await gpu.readF32(packed.scale))).toEqual(Array.from(ref.scale));
      const bits = new Uint16Array(await gpu.read(packed.y)).subarray(0, m * k);
      const out = await gpu.readF32(back);
      let checked = 0;
      for (let i = 0; i < m * k; i++) {
        const got = halfValue(bits[i]);
        const want = ref.y[i];
        const s = ref.scale[Math.floor(i / k)];
        if (!Number.isFinite(want)) {
          expect(Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want)), `element ${i}: ${got} for ${want}`).toBe(true);
          expect(Object.is(out[i], want) || (Number.isNaN(out[i]) && Number.isNaN(want)), `unpacked ${i}`).toBe(true);
          continue;
        }
        // one rounding of x·s: the nearest f16 (the reference) or, where WGSL lets the conversion pick, its neighbour
        const ulp = halfUlp(xv[i] * s);
        expect(Math.abs(got - xv[i] * s), `element ${i}: ${got} for ${xv[i]}·${s}`).toBeLessThanOrEqual(ulp);
        expect(Math.abs(got)).toBeLessThanOrEqual(2 ** 14);
        expect(Math.abs(out[i] - xv[i]), `unpacked ${i}: ${out[i]} for ${xv[i]}`).toBeLessThanOrEqual(ulp / s);
        expect(out[i]).toBe(Math.fround(got / s));
        checked++;
      }
      expect(checked).toBeGreaterThan(0);
    });
  }

  it('the scheme is needed: without the row scales 1e5 overflows f16 and a 1e-10 row underflows to 0; with them both keep f16 precision', () => {
    const x = [1e5, 1, 1e-10, 3e-10];
    expect(roundToF16(1e5)).toBe(Infinity);
    expect(roundToF16(1e-10)).toBe(0);
    const ref = f16PackRef(x, 2, 2);
    for (let i = 0; i < 4; i++) expect(Math.abs(ref.unpacked[i] - x[i]) / x[i], `element ${i}`).toBeLessThanOrEqual(2 ** -11);
  });

  it('refuses a mismatched shape or a shared buffer, naming the tensor', async () => {
    const gpu = await testGpu();
    const kernel = await F16Pack.create(gpu);
    const x = gpu.tensor('x rows', [4, 8], 'f32');
    expect(() => kernel.pack('p', { y: gpu.tensor('y', [4, 9], 'f16'), scale: gpu.tensor('s', [4], 'f32') }, x)).toThrow(ShapeError);
    expect(() => kernel.pack('p', { y: gpu.tensor('y', [4, 8], 'f32'), scale: gpu.tensor('s', [4], 'f32') }, x)).toThrow(/f16/);
    expect(() => kernel.unpack('u', x, { y: gpu.tensor('y', [4, 8], 'f16'), scale: gpu.tensor('s', [3], 'f32') })).toThrow(ShapeError);
  });
});
