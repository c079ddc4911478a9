import { afterAll, describe, expect, it } from 'vitest';
import { dequantizeRows, GGML_TYPES, quantizeRows, rowBytes, type GgmlType } from '../../src/export/gguf-quants.js';
import { fp16ToFp32, fp32ToFp16 } from '../../src/export/half.js';
import { ExportError } from '../../src/errors.js';
import { Rng } from '../helpers/random.js';
import { ggmlReference } from './ggml-reference.js';

/**
 * The transcribed quantisers against llama.cpp itself (libggml-base.so of node-llama-cpp, through
 * ggml_quantize_chunk as llama-quantize calls it): byte for byte on seeded random rows of 256·k
 * elements and on edge cases (all zero, one outlier, constant, tiny values, mixed signs).
 */

/** Rows of `width`: Gaussian rows at several scales plus edge cases. */
function testRows(rng: Rng, width: number): Float32Array {
  const rows: Float32Array[] = [];
  for (const scale of [1, 0.02, 300]) rows.push(rng.f32(width, scale));
  rows.push(new Float32Array(width)); // all zero
  const outlier = rng.f32(width, 0.01);
  outlier[rng.int(0, width)] = 40;
  rows.push(outlier);
  rows.push(new Float32Array(width).fill(0.75)); // constant positive (min clamps to 0)
  rows.push(new Float32Array(width).fill(-1.5)); // constant negative
  rows.push(rng.f32(width, 1e-20)); // below f16's range: scales round to zero
  const half = new Float32Array(width); // zero first half, data second half (zero sub-blocks)
  half.set(rng.f32(width / 2, 2), width / 2);
  rows.push(half);
  const pos = rng.f32(width, 1).map(Math.abs); // all positive
  rows.push(pos);
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => out.set(r, i * width));
  return out;
}

const ref = ggmlReference();
afterAll(() => {
  if (typeof ref !== 'string') ref.close();
});

describe('quantizeRows equals llama.cpp byte for byte', () => {
  const types: GgmlType[] = ['F16', 'BF16', 'Q8_0', 'Q4_0', 'Q5_0', 'Q4_K', 'Q6_K'];
  for (const type of types) {
    it(`${type}: rows of 256 and 768`, (ctx) => {
      if (typeof ref === 'string') {
        console.warn(`skipping the llama.cpp comparison: ${ref}`);
        ctx.skip();
        return;
      }
      const rng = new Rng(GGML_TYPES[type].id * 7919 + 1);
      for (const width of [256, 768]) {
        const x = testRows(rng, width);
        const ours = quantizeRows(type, x, width);
        const theirs = ref.quantize(GGML_TYPES[type].id, x, width);
        expect(ours.length, `${type} width ${width}: byte count`).toBe(theirs.length);
        let first = -1;
        let count = 0;
        for (let i = 0; i < ours.length; i++) {
          if (ours[i] !== theirs[i]) {
            if (first < 0) first = i;
            count++;
          }
        }
        const where = first < 0 ? '' : ` first at byte ${first} (row ${Math.floor(first / rowBytes(type, width))}): ours ${ours[first]}, llama.cpp ${theirs[first]}`;
        expect(count, `${type} width ${width}: ${count} of ${ours.length} bytes differ;${where}`).toBe(0);
      }
    });
  }
});

describe('round trip error of each type', () => {
  // Relative RMS error bounds of quantise → dequantise on Gaussian rows: about 2^-bits of each format.
  const bounds: Record<GgmlType, number> = { F32: 0, F16: 5e-4, BF16: 4e-3, Q8_0: 1e-2, Q6_K: 3e-2, Q5_0: 6e-2, Q4_K: 1.2e-1, Q4_0: 1.5e-1 };
  for (const [type, bound] of Object.entries(bounds) as [GgmlType, number][]) {
    it(`${type}: relative RMS error ≤ ${bound}`, () => {
      const x = new Rng(5).f32(512 * 8, 0.05);
      const back = dequantizeRows(type, quantizeRows(type, x, 512), x.length);
      let num = 0;
      let den = 0;
      for (let i = 0; i < x.length; i++) {
        num += (back[i] - x[i]) ** 2;
        den += x[i] ** 2;
      }
      expect(Math.sqrt(num / den)).toBeLessThanOrEqual(bound);
    });
  }

  it('refuses rows that are not whole blocks', () => {
    expect(() => quantizeRows('Q4_K', new Float32Array(64), 32)).toThrow(ExportError);
    expect(() => rowBytes('Q8_0', 48)).toThrow(/48 elements cannot be stored as Q8_0/);
  });

  it('f16 conversion: round to nearest even, overflow, subnormals, NaN', () => {
    expect(fp32ToFp16(1)).toBe(0x3c00);
    expect(fp32ToFp16(-2)).toBe(0xc000);
    expect(fp32ToFp16(65504)).toBe(0x7bff);
    expect(fp32ToFp16(65520)).toBe(0x7c00); // rounds up to infinity
    expect(fp32ToFp16(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(fp32ToFp16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(fp32ToFp16(2 ** -24)).toBe(0x0001);
    expect(fp32ToFp16(-0)).toBe(0x8000);
    expect(fp32ToFp16(NaN)).toBe(0x7e00);
    for (const h of [0x0001, 0x03ff, 0x0400, 0x3555, 0x7bff, 0xfbff]) expect(fp32ToFp16(fp16ToFp32(h))).toBe(h);
  });
});
