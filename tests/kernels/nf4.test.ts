import { describe, expect, it } from 'vitest';
import {
  dynamicMap,
  Nf4,
  NF4_BLOCK,
  NF4_CODEBOOK,
  nf4DequantizeRef,
  nf4DoubleDequantizeRef,
  nf4DoubleQuantizeRef,
  nf4QuantizeRef,
} from '../../src/kernels/nf4.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { ShapeError } from '../../src/errors.js';
import { f32ToBf16Array, roundToBf16 } from '../../src/model/bf16.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { readReference } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/** Packed codes and absmax computed on the GPU from bf16 (or f32) weights. */
async function quantizeOnGpu(gpu: Gpu, nf4: Nf4, w: Float32Array, shape: number[], asF32 = false) {
  const weight = asF32 ? gpu.tensorFrom('w', shape, 'f32', w) : gpu.tensorFrom('w', shape, 'bf16x2', f32ToBf16Array(w));
  const packed = gpu.tensor('packed', shape, 'nf4x8');
  const absmax = gpu.tensor('absmax', [w.length / NF4_BLOCK], 'f32');
  gpu.fill32(packed, NAN_WORD);
  gpu.fill32(absmax, NAN_WORD);
  submitDispatches(gpu, [nf4.quantize('nf4 quantize', { packed, absmax, weight })]);
  return { packed, absmax, packedBytes: new Uint8Array(await gpu.read(packed)), absmaxValues: await gpu.readF32(absmax) };
}

function countDiff(a: ArrayLike<number>, b: ArrayLike<number>): { count: number; first: number } {
  let count = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i]) && !(a[i] === 0 && b[i] === 0)) {
      if (first < 0) first = i;
      count++;
    }
  }
  return { count, first };
}

function expectIdentical(what: string, out: ArrayLike<number>, ref: ArrayLike<number>): void {
  expect(out.length, `${what}: length`).toBe(ref.length);
  const d = countDiff(out, ref);
  expect(d.count, `${what}: ${d.count} of ${ref.length} differ; first at [${d.first}]: got ${out[d.first]}, expected ${ref[d.first]}`).toBe(0);
}

/** bf16-valued random weights with a few zero blocks, exact ±absmax ties and tiny values. */
function randomWeight(rng: Rng, count: number): Float32Array {
  const w = rng.f32(count, 0.02);
  for (let b = 0; b < count / NF4_BLOCK; b += 7) w.fill(0, b * NF4_BLOCK, (b + 1) * NF4_BLOCK);
  for (let i = 5; i < count; i += 97) w[i] = -w[i - 1];
  for (let i = 11; i < count; i += 131) w[i] = 1e-30;
  return roundToBf16(w);
}

describe('nf4 quantize', () => {
  it('reproduces the bitsandbytes fixture byte for byte (reference and GPU, bf16 and f32 input)', async () => {
    const fx = await readReference();
    const w = fx.get('nf4.weight')!.data;
    const packed = Uint8Array.from(fx.get('nf4.packed')!.data);
    const absmax = fx.get('nf4.absmax')!.data;
    const dequant = fx.get('nf4.dequant')!.data;

    const ref = nf4QuantizeRef(w);
    expectIdentical('reference packed', ref.packed, packed);
    expectIdentical('reference absmax', ref.absmax, absmax);
    // float64 product vs bitsandbytes' f32 product: at most half an f32 ulp apart
    expectClose('reference dequant', nf4DequantizeRef(ref.packed, ref.absmax, w.length), dequant, 1e-7, 0);

    const gpu = await testGpu();
    const nf4 = await Nf4.create(gpu);
    for (const asF32 of [false, true]) {
      const q = await quantizeOnGpu(gpu, nf4, w, [32, 96], asF32);
      expectIdentical(`GPU packed (${asF32 ? 'f32' : 'bf16'} input)`, q.packedBytes, packed);
      expectIdentical(`GPU absmax (${asF32 ? 'f32' : 'bf16'} input)`, q.absmaxValues, absmax);
    }
    const q = await quantizeOnGpu(gpu, nf4, w, [32, 96]);
    const out = gpu.tensor('out', [32, 96], 'f32');
    gpu.fill32(out, NAN_WORD);
    submitDispatches(gpu, [nf4.dequantize('nf4 dequantize', { out, packed: q.packed, absmax: q.absmax })]);
    // the GPU computes bitsandbytes' f32 product exactly; 1e-7 covers its one rounding
    expectClose('GPU dequant', await gpu.readF32(out), dequant, 1e-7, 0);
  });

  // tiny, realistic (a 4B k_proj row block) and awkward (odd rows, words not a multiple of the workgroup)
  for (const [rows, cols] of [[1, 64], [256, 2560], [74, 96], [7, 320]] as const) {
    it(`matches the reference bit for bit on random bf16 weights [${rows}, ${cols}]`, async () => {
      const gpu = await testGpu();
      const nf4 = await Nf4.create(gpu);
      const w = randomWeight(new Rng(rows * 7919 + cols), rows * cols);
      const ref = nf4QuantizeRef(w);
      const q = await quantizeOnGpu(gpu, nf4, w, [rows, cols]);
      expectIdentical('packed', q.packedBytes, ref.packed);
      expectIdentical('absmax', q.absmaxValues, ref.absmax);
      const out = gpu.tensor('out', [rows, cols], 'f32');
      gpu.fill32(out, NAN_WORD);
      submitDispatches(gpu, [nf4.dequantize('nf4 dequantize', { out, packed: q.packed, absmax: q.absmax })]);
      // one f32 rounding of codebook · absmax; zero blocks must come back as 0, not NaN
      expectClose('dequant', await gpu.readF32(out), nf4DequantizeRef(ref.packed, ref.absmax, w.length), 1e-7, 0);
    });
  }

  it('gives code 0 and value 0 (no NaN) for an all-zero block', () => {
    const ref = nf4QuantizeRef(new Float32Array(128));
    expect([...ref.packed].every((b) => b === 0)).toBe(true);
    expect([...ref.absmax]).toEqual([0, 0]);
    expect([...nf4DequantizeRef(ref.packed, ref.absmax, 128)].every((v) => v === 0)).toBe(true);
    expect(NF4_CODEBOOK[0] * 0).toBe(-0);
  });

  it('refuses weights whose size is not a multiple of 64', async () => {
    expect(() => nf4QuantizeRef(new Float32Array(96))).toThrow(ShapeError);
    const gpu = await testGpu();
    const nf4 = await Nf4.create(gpu);
    const weight = gpu.tensor('w', [3, 30], 'bf16x2');
    expect(() => nf4.quantize('q', { packed: gpu.tensor('p', [3, 30], 'nf4x8'), absmax: gpu.tensor('a', [1], 'f32'), weight })).toThrow(
      /multiple of 64 elements/,
    );
  });
});

describe('nf4 double quantisation', () => {
  it('builds bitsandbytes’ signed dynamic map', () => {
    const map = dynamicMap();
    expect(map.length).toBe(256);
    for (let i = 1; i < 256; i++) expect(map[i]).toBeGreaterThan(map[i - 1]);
    expect(map[127]).toBe(0);
    expect(map[255]).toBe(1);
    expect(map[0]).toBeCloseTo(-0.99297, 5);
    expect(map[128]).toBeCloseTo(1e-6 * 0.55, 12);
  });

  // tiny, realistic (the block scales of a 2560 × 9728 weight) and awkward (not a multiple of 256)
  for (const count of [1, 389120, 1000]) {
    it(`matches the reference codes exactly and round-trips within the map's resolution (${count} scales)`, async () => {
      const gpu = await testGpu();
      const nf4 = await Nf4.create(gpu);
      const rng = new Rng(count);
      const absmax = new Float32Array(count);
      for (let i = 0; i < count; i++) absmax[i] = Math.fround(0.02 + Math.abs(rng.normal()) * 0.03);
      const a = gpu.tensorFrom('absmax', [count], 'f32', absmax);
      const codes = gpu.tensor('codes', [count], 'u8x4');
      const absmax2 = gpu.tensor('absmax2', [Math.ceil(count / 256)], 'f32');
      const offset = gpu.tensor('offset', [1], 'f32');
      for (const t of [codes, absmax2, offset]) gpu.fill32(t, NAN_WORD);
      submitDispatches(gpu, nf4.doubleQuantize('dq', { codes, absmax2, offset, absmax: a }));
      const gpuOffset = (await gpu.readF32(offset))[0];
      const exact = nf4DoubleQuantizeRef(absmax);
      // f32 sums in another order than the float64 mean: a few ulp
      expect(Math.abs(gpuOffset - exact.offset) / exact.offset).toBeLessThan(1e-6);

      const ref = nf4DoubleQuantizeRef(absmax, gpuOffset);
      expectIdentical('codes', new Uint8Array(await gpu.read(codes)).subarray(0, count), ref.codes);
      expectIdentical('absmax2', await gpu.readF32(absmax2), ref.absmax2);

      // round trip: at most half the widest gap of the map, times the chunk's scale
      const map = dynamicMap();
      let halfGap = 0;
      for (let i = 1; i < 256; i++) halfGap = Math.max(halfGap, (map[i] - map[i - 1]) / 2);
      const back = nf4DoubleDequantizeRef(ref);
      let worst = 0;
      for (let i = 0; i < count; i++) worst = Math.max(worst, Math.abs(back[i] - absmax[i]) / (halfGap * ref.absmax2[i >> 8] + 1e-7 * absmax[i]));
      expect(worst).toBeLessThanOrEqual(1);

      // the GPU's NF4 dequantisation through double-quantised scales
      if (count <= 1000) {
        const w = randomWeight(rng, count * NF4_BLOCK);
        const q = nf4QuantizeRef(w);
        const out = gpu.tensor('out', [count * NF4_BLOCK], 'f32');
        gpu.fill32(out, NAN_WORD);
        const dq = { codes, absmax2, offset: gpuOffset };
        submitDispatches(gpu, [nf4.dequantize('dequant dq', { out, packed: gpu.tensorFrom('p', [count * NF4_BLOCK], 'nf4x8', q.packed), doubleQuant: dq })]);
        // the GPU may fuse map·absmax2 + offset into one fma: a few f32 ulp
        expectClose('dequant with double-quantised scales', await gpu.readF32(out), nf4DequantizeRef(q.packed, back, w.length), 3e-7, 1e-12);
      }
    });
  }
});
