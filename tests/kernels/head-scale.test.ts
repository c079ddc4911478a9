import { describe, expect, it } from 'vitest';
import { HeadScale, headScaleRef, type HeadScaleDims } from '../../src/kernels/head-scale.js';
import { rowScaleRef } from '../../src/kernels/row-scale.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { ShapeError } from '../../src/errors.js';
import { NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

const KINDS = 10;

/**
 * x (B·T, heads·Dh) f32 whose (b, h) blocks are of every kind the rule distinguishes, the kind
 * chosen by block index g = b·heads + h; each block's largest |x| at a random (t, d).
 */
function makeHeads(rng: Rng, { B, T, heads, Dh }: HeadScaleDims): Float32Array {
  const x = new Float32Array(B * T * heads * Dh);
  const at = (b: number, h: number, t: number, d: number) => ((b * T + t) * heads + h) * Dh + d;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      const kind = (b * heads + h) % KINDS;
      // one magnitude per head, anywhere from 1e-30 to 1e30
      const mag = 10 ** rng.uniform(-30, 30);
      const set = (f: (t: number, d: number) => number) => {
        for (let t = 0; t < T; t++) for (let d = 0; d < Dh; d++) x[at(b, h, t, d)] = f(t, d);
      };
      const [pt, pd] = [rng.int(0, T), rng.int(0, Dh)];
      switch (kind) {
        case 0: // ordinary values at the head's magnitude
          set(() => rng.normal() * mag);
          break;
        case 1: // an all-zero head: scale 1
          set(() => 0);
          break;
        case 2: // a NaN among wide-range values: scale 1
          set(() => rng.normal() * mag);
          x[at(b, h, pt, pd)] = NaN;
          break;
        case 3: // an infinity: scale 1
          set(() => rng.normal() * mag);
          x[at(b, h, pt, pd)] = rng.next() < 0.5 ? Infinity : -Infinity;
          break;
        case 4: // f32 subnormals only: the exponent is clamped at 126
          set(() => rng.int(-1000, 1000) * 2 ** -149);
          break;
        case 5: {
          // the largest |x| exactly a power of two, the rest below it
          const p = 2 ** rng.int(-100, 100);
          set(() => Math.max(-0.99, Math.min(0.99, rng.normal() / 8)) * p);
          x[at(b, h, pt, pd)] = -p;
          break;
        }
        case 6: {
          // just above a power of two: the next octave
          const p = 2 ** rng.int(-100, 100);
          set(() => Math.max(-0.99, Math.min(0.99, rng.normal() / 8)) * p);
          x[at(b, h, pt, pd)] = (1 + 2 ** -23) * p;
          break;
        }
        case 7: // every element at its own magnitude, 1e-30 to 1e30, and some subnormals
          set(() => (rng.next() < 0.1 ? rng.int(-50, 50) * 2 ** -149 : rng.normal() * 10 ** rng.uniform(-30, 30)));
          break;
        case 8: // near f32's largest: e = 14 − 128
          set(() => rng.normal() * mag);
          x[at(b, h, pt, pd)] = -3e38;
          break;
        default: // a single nonzero subnormal
          set(() => 0);
          x[at(b, h, pt, pd)] = 2 ** -149 * rng.int(1, 8);
      }
    }
  }
  return x;
}

async function runHeadScale(dims: HeadScaleDims, xv: Float32Array): Promise<Float32Array> {
  const gpu = await testGpu();
  const { B, T, heads, Dh } = dims;
  const scale = gpu.tensor('scale', [B * heads], 'f32');
  gpu.fill32(scale, NAN_WORD);
  const hs = await HeadScale.create(gpu);
  submitDispatches(gpu, [hs.forward('head scale', { scale, x: gpu.tensorFrom('x', [B * T, heads * Dh], 'f32', xv) }, dims)]);
  return gpu.readF32(scale);
}

describe('head scale', () => {
  // odd sizes, one token-wide (T·Dh/4 below the workgroup), and an attention shape (T·Dh/4 ≫ 256, Dh/4 dividing 256)
  for (const dims of [
    { B: 1, T: 1, heads: 1, Dh: 4 },
    { B: 3, T: 7, heads: 5, Dh: 12 },
    { B: 4, T: 33, heads: 3, Dh: 20 },
    { B: 2, T: 130, heads: 8, Dh: 128 },
    { B: 1, T: 61, heads: 11, Dh: 36 },
  ] as const) {
    it(`matches the float64 rule exactly at B=${dims.B} T=${dims.T} heads=${dims.heads} Dh=${dims.Dh}`, async () => {
      const rng = new Rng(((dims.B * 31 + dims.T) * 37 + dims.heads) * 41 + dims.Dh);
      const xv = makeHeads(rng, dims);
      const got = await runHeadScale(dims, xv);
      const ref = headScaleRef(xv, dims);
      expect(got.length).toBe(dims.B * dims.heads);
      // exact: the scales are powers of two, computed from the bits
      for (let g = 0; g < ref.length; g++) {
        const where = `b=${Math.floor(g / dims.heads)} h=${g % dims.heads} (kind ${g % KINDS})`;
        expect(got[g], `${where}: got ${got[g]}, expected ${ref[g]}`).toBe(ref[g]);
      }
    });
  }

  it('reads every element of its block and none of another: one nonzero per block, swept over all (t, d)', async () => {
    // T·Dh/4 = 450, 300 and 301 vec4 per block, more than the 256 invocations; Dh/4 = 3 and 5 do not
    // divide 256, so the walk over (t, d) wraps d at a different t in each invocation's second step
    for (const [T, Dh] of [
      [150, 12],
      [60, 20],
      [301, 4],
    ] as const) {
      const B = 2;
      const dims = { B, T, heads: (T * Dh) / B, Dh };
      const xv = new Float32Array(B * T * dims.heads * Dh);
      // block (b, h) holds its one nonzero at position p = h·B + b of its T·Dh: every position once
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < dims.heads; h++) {
          const p = h * B + b;
          const [t, d] = [Math.floor(p / Dh), p % Dh];
          xv[((b * T + t) * dims.heads + h) * Dh + d] = (p % 2 ? -1 : 1) * 2 ** ((p % 61) - 30);
        }
      }
      const got = await runHeadScale(dims, xv);
      const ref = headScaleRef(xv, dims);
      const wrong = ref.findIndex((r, g) => got[g] !== r);
      expect(wrong, `T=${T} Dh=${Dh}: block ${wrong} got ${got[wrong]}, expected ${ref[wrong]}`).toBe(-1);
    }
  });

  it('folds a grid of more than 65535 (b, h) blocks into y', async () => {
    const dims = { B: 22000, T: 1, heads: 3, Dh: 4 };
    const rng = new Rng(5);
    const xv = makeHeads(rng, dims);
    const got = await runHeadScale(dims, xv);
    const ref = headScaleRef(xv, dims);
    let wrong = 0;
    for (let g = 0; g < ref.length; g++) if (got[g] !== ref[g]) wrong++;
    expect(wrong, `of ${ref.length} blocks, first wrong at ${Array.from(got).findIndex((v, g) => v !== ref[g])}`).toBe(0);
  });

  it('the reference is the row rule on each (b, h) block, gathered by hand', () => {
    const dims = { B: 2, T: 3, heads: 2, Dh: 4 };
    const rng = new Rng(3);
    const xv = makeHeads(rng, dims);
    const ref = headScaleRef(xv, dims);
    for (let b = 0; b < 2; b++) {
      for (let h = 0; h < 2; h++) {
        const block: number[] = [];
        for (let t = 0; t < 3; t++) block.push(...xv.subarray((b * 3 + t) * 8 + h * 4, (b * 3 + t) * 8 + h * 4 + 4));
        expect(ref[b * 2 + h]).toBe(rowScaleRef(block, 1, 12)[0]);
      }
    }
    // hand-worked, B=1 T=2 heads=2 Dh=4: head 0 max |x| = 1e5 → 2^-3; head 1 max = 256 = 2^8 → 2^6
    const x = [1, -1e5, 0, 2, 256, 0, 0, 1, 3, 0, 0, 0, 0, -4, 0, 0];
    expect(Array.from(headScaleRef(x, { B: 1, T: 2, heads: 2, Dh: 4 }))).toEqual([2 ** -3, 2 ** 6]);
  });

  it('rejects mismatched shapes and a head width that is not a multiple of 4', async () => {
    const gpu = await testGpu();
    const hs = await HeadScale.create(gpu);
    const x = gpu.tensor('x', [6, 24], 'f32');
    const scale = gpu.tensor('s', [4], 'f32');
    const dims = { B: 2, T: 3, heads: 2, Dh: 12 };
    expect(() => hs.forward('ok', { scale, x }, dims)).not.toThrow();
    expect(() => hs.forward('bad', { scale, x: gpu.tensor('x6', [6, 12], 'f32') }, { B: 2, T: 3, heads: 2, Dh: 6 })).toThrow(
      /Dh = 6 must be a multiple of 4/,
    );
    expect(() => hs.forward('bad', { scale, x }, { ...dims, T: 2 })).toThrow(/x has shape \[6, 24\], expected \[4, 24\]/);
    expect(() => hs.forward('bad', { scale: gpu.tensor('s', [2], 'f32'), x }, dims)).toThrow(/s has shape \[2\], expected \[4\]/);
    expect(() => hs.forward('bad', { scale, x: gpu.tensor('xi', [6, 24], 'i32') }, dims)).toThrow(ShapeError);
    expect(() => hs.forward('bad', { scale, x }, { ...dims, heads: 0 })).toThrow(/heads = 0 must be a positive integer/);
    expect(() => headScaleRef(new Float32Array(10), dims)).toThrow(/expected B·T·heads·Dh/);
  });
});
