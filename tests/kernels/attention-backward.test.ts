import { describe, expect, it } from 'vitest';
import { Attention, attentionForwardRef, type AttentionDims } from '../../src/kernels/attention.js';
import {
  AttentionBackward,
  attentionBackwardRef,
  dkdvWorkgroupBytes,
  dqWorkgroupBytes,
  type AttentionBackwardTiles,
} from '../../src/kernels/attention-backward.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { tensorView } from '../../src/kernels/tensor.js';
import { ShapeError } from '../../src/errors.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { expectGradient, weightedSum } from './gradcheck.js';

/** Segment ids of B rows of T tokens, each row packed with examples of the given lengths. */
function packedSegments(B: number, T: number, lens: readonly (readonly number[])[]): Int32Array {
  const seg = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    let t = 0;
    const row = lens[b % lens.length];
    for (let e = 0; t < T; e++) {
      for (let n = 0; n < (row[e] ?? T) && t < T; n++) seg[b * T + t++] = e;
    }
  }
  return seg;
}

interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dO: Float32Array;
  seg: Int32Array;
}

function randomInputs(seed: number, d: AttentionDims, seg: Int32Array): Inputs {
  const rng = new Rng(seed);
  const N = d.B * d.T;
  // scores of spread ~2.5 (as the forward test): softmax rows neither flat nor one-hot
  return {
    q: rng.f32(N * d.H * d.Dh, 1.6),
    k: rng.f32(N * d.Hkv * d.Dh, 1.6),
    v: rng.f32(N * d.Hkv * d.Dh),
    dO: rng.f32(N * d.H * d.Dh),
    seg,
  };
}

/** One AttentionBackward per (head dim, tiles): compiling is the slow part on lavapipe. */
const compiled = new Map<string, Promise<AttentionBackward>>();
function attentionBackward(gpu: Gpu, headDim: number, tiles?: Partial<AttentionBackwardTiles>): Promise<AttentionBackward> {
  const key = `${headDim} ${JSON.stringify(tiles ?? {})}`;
  let made = compiled.get(key);
  if (!made) {
    made = AttentionBackward.create(gpu, { headDim, tiles });
    compiled.set(key, made);
  }
  return made;
}

interface Outputs {
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  delta: Float32Array;
}

/**
 * Runs the backward on the GPU with outputs poisoned; o and lse are the float64 forward reference
 * rounded to f32 unless given (e.g. from the GPU forward).
 */
async function runBackward(
  gpu: Gpu,
  d: AttentionDims,
  x: Inputs,
  tiles?: Partial<AttentionBackwardTiles>,
  forward?: { o: Float32Array; lse: Float32Array },
): Promise<Outputs> {
  const N = d.B * d.T;
  const fwd = forward ?? (() => {
    const ref = attentionForwardRef(x.q, x.k, x.v, x.seg, d);
    return { o: Float32Array.from(ref.o), lse: Float32Array.from(ref.lse) };
  })();
  const att = await attentionBackward(gpu, d.Dh, tiles);
  const t = {
    dq: gpu.tensor('dq', [N, d.H * d.Dh], 'f32'),
    dk: gpu.tensor('dk', [N, d.Hkv * d.Dh], 'f32'),
    dv: gpu.tensor('dv', [N, d.Hkv * d.Dh], 'f32'),
    delta: gpu.tensor('delta', [N, d.H], 'f32'),
    dO: gpu.tensorFrom('dO', [N, d.H * d.Dh], 'f32', x.dO),
    q: gpu.tensorFrom('q', [N, d.H * d.Dh], 'f32', x.q),
    k: gpu.tensorFrom('k', [N, d.Hkv * d.Dh], 'f32', x.k),
    v: gpu.tensorFrom('v', [N, d.Hkv * d.Dh], 'f32', x.v),
    o: gpu.tensorFrom('o', [N, d.H * d.Dh], 'f32', fwd.o),
    lse: gpu.tensorFrom('lse', [N, d.H], 'f32', fwd.lse),
    segIds: gpu.tensorFrom('seg', [N], 'i32', x.seg),
  };
  for (const out of [t.dq, t.dk, t.dv, t.delta]) gpu.fill32(out, NAN_WORD);
  submitDispatches(gpu, att.backward('attention backward', t, d));
  const out = { dq: await gpu.readF32(t.dq), dk: await gpu.readF32(t.dk), dv: await gpu.readF32(t.dv), delta: await gpu.readF32(t.delta) };
  for (const x of Object.values(t)) x.buffer.destroy();
  return out;
}

/** float64 delta = rowsum(dO ⊙ o) per (token, head). */
function deltaRef(dO: ArrayLike<number>, o: ArrayLike<number>, rows: number, Dh: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let d = 0; d < Dh; d++) s += dO[r * Dh + d] * o[r * Dh + d];
    out[r] = s;
  }
  return out;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/**
 * GPU gradients against the float64 reference. f32 dot products over Dh, exp2 of f32 arguments
 * and f32 sums over ≤ T·H/Hkv terms, with the cancellation of dP − delta: measured errors are
 * ≤ 2.2e-6 of each tensor's largest element (relative norm ≤ 1e-6), so the absolute floor is 2e-5
 * of the largest element (at least 2e-5: a row that sees one key has exactly zero dq, but f32
 * leaves ~1e-6 of dP), the relative part 1e-4.
 */
function expectGradientsClose(out: Outputs, ref: { dq: Float64Array; dk: Float64Array; dv: Float64Array }): void {
  expectClose('dq', out.dq, ref.dq, 1e-4, 2e-5 * Math.max(maxAbs(ref.dq), 1));
  expectClose('dk', out.dk, ref.dk, 1e-4, 2e-5 * Math.max(maxAbs(ref.dk), 1));
  expectClose('dv', out.dv, ref.dv, 1e-4, 2e-5 * Math.max(maxAbs(ref.dv), 1));
}

describe('attention backward float64 reference', () => {
  it('equals central differences of the forward reference (packed rows, GQA)', () => {
    const d = { B: 2, T: 7, H: 4, Hkv: 2, Dh: 4 };
    const x = randomInputs(11, d, packedSegments(d.B, d.T, [[3, 4], [7]]));
    const ref = attentionBackwardRef(x.dO, x.q, x.k, x.v, x.seg, d);
    const o = (q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>) => attentionForwardRef(q, k, v, x.seg, d).o;
    expectGradient('dq', weightedSum(x.dO, (qq) => o(qq, x.k, x.v)), x.q, ref.dq, { samples: 96 });
    expectGradient('dk', weightedSum(x.dO, (kk) => o(x.q, kk, x.v)), x.k, ref.dk, { samples: 96 });
    expectGradient('dv', weightedSum(x.dO, (vv) => o(x.q, x.k, vv)), x.v, ref.dv, { samples: 96 });
  });

  it('equals central differences with a custom scale', () => {
    const d = { B: 1, T: 5, H: 2, Hkv: 1, Dh: 8, scale: 0.7 };
    const x = randomInputs(12, d, new Int32Array(5));
    const ref = attentionBackwardRef(x.dO, x.q, x.k, x.v, x.seg, d);
    const o = (q: ArrayLike<number>, k: ArrayLike<number>) => attentionForwardRef(q, k, x.v, x.seg, d).o;
    expectGradient('dq', weightedSum(x.dO, (qq) => o(qq, x.k)), x.q, ref.dq);
    expectGradient('dk', weightedSum(x.dO, (kk) => o(x.q, kk)), x.k, ref.dk);
  });
});

describe('attention backward on the GPU', () => {
  const cases: { name: string; d: AttentionDims; lens: number[][]; tiles?: Partial<AttentionBackwardTiles> }[] = [
    { name: 'tiny', d: { B: 1, T: 1, H: 2, Hkv: 1, Dh: 16 }, lens: [[1]] },
    { name: 'fixture-like', d: { B: 2, T: 24, H: 4, Hkv: 2, Dh: 16 }, lens: [[10, 14], [7, 9, 8]] },
    { name: 'awkward', d: { B: 3, T: 37, H: 6, Hkv: 3, Dh: 16 }, lens: [[37], [12, 25], [5, 20, 12]] },
    { name: 'Qwen3-4B heads', d: { B: 1, T: 70, H: 4, Hkv: 2, Dh: 128 }, lens: [[30, 23, 17]] },
    // odd Dh/4 and tiles unlike the defaults: rows per key tile ≠ keys per query tile, one key group
    // per thread, four-row score blocks (one pipeline set covers both: compiling is slow on lavapipe)
    {
      name: 'odd head dim, small unequal tiles',
      d: { B: 3, T: 37, H: 6, Hkv: 3, Dh: 20 },
      lens: [[37], [12, 25], [5, 20, 12]],
      tiles: { dkdv: { bc: 8, br: 4, rb: 1, kg: 1 }, dq: { br: 4, bc: 8, rb: 4, rq: 2 } },
    },
  ];
  for (const c of cases) {
    it(`matches the float64 reference: ${c.name} (B=${c.d.B}, T=${c.d.T}, H=${c.d.H}, Hkv=${c.d.Hkv}, Dh=${c.d.Dh})`, async () => {
      const gpu = await testGpu();
      const x = randomInputs(c.d.T * 17 + c.d.Dh, c.d, packedSegments(c.d.B, c.d.T, c.lens));
      const out = await runBackward(gpu, c.d, x, c.tiles);
      expectGradientsClose(out, attentionBackwardRef(x.dO, x.q, x.k, x.v, x.seg, c.d));
      const o = attentionForwardRef(x.q, x.k, x.v, x.seg, c.d).o;
      // Dh f32 products of f32-rounded inputs: a few ulp of Σ|dO·o|
      expectClose('delta', out.delta, deltaRef(x.dO, Float32Array.from(o), c.d.B * c.d.T * c.d.H, c.d.Dh), 1e-5, 1e-5);
    });
  }

  it('chains after the GPU forward (its own o and lse)', async () => {
    const gpu = await testGpu();
    const d = { B: 2, T: 29, H: 4, Hkv: 2, Dh: 16 };
    const N = d.B * d.T;
    const x = randomInputs(5, d, packedSegments(d.B, d.T, [[29], [13, 16]]));
    const fwd = await Attention.create(gpu, { headDim: d.Dh });
    const o = gpu.tensor('o', [N, d.H * d.Dh], 'f32');
    const lse = gpu.tensor('lse', [N, d.H], 'f32');
    const t = {
      o,
      lse,
      q: gpu.tensorFrom('q', [N, d.H * d.Dh], 'f32', x.q),
      k: gpu.tensorFrom('k', [N, d.Hkv * d.Dh], 'f32', x.k),
      v: gpu.tensorFrom('v', [N, d.Hkv * d.Dh], 'f32', x.v),
      segIds: gpu.tensorFrom('seg', [N], 'i32', x.seg),
    };
    submitDispatches(gpu, [fwd.forward('attention', t, d)]);
    const out = await runBackward(gpu, d, x, undefined, { o: await gpu.readF32(o), lse: await gpu.readF32(lse) });
    // the forward's f32 o and lse add ~1e-6 relative: within the same tolerance
    expectGradientsClose(out, attentionBackwardRef(x.dO, x.q, x.k, x.v, x.seg, d));
  });

  it('gives each packed example exactly the gradients it gets alone', async () => {
    const gpu = await testGpu();
    const [H, Hkv, Dh] = [4, 2, 16];
    // Boundaries off the tile grid too: every sum runs over its tokens in order whatever the
    // tiling, and other examples' terms are exact zeros, so the results agree bit for bit.
    for (const lens of [[16, 8, 24], [5, 19, 13]]) {
      const T = lens.reduce((a, b) => a + b, 0);
      const d = { B: 1, T, H, Hkv, Dh };
      const packed = randomInputs(T, d, packedSegments(1, T, [lens]));
      const fwd = attentionForwardRef(packed.q, packed.k, packed.v, packed.seg, d);
      const o32 = Float32Array.from(fwd.o);
      const lse32 = Float32Array.from(fwd.lse);
      const whole = await runBackward(gpu, d, packed, undefined, { o: o32, lse: lse32 });
      let start = 0;
      for (const len of lens) {
        const slice = (a: Float32Array, w: number) => a.slice(start * w, (start + len) * w);
        const alone = await runBackward(
          gpu,
          { B: 1, T: len, H, Hkv, Dh },
          { q: slice(packed.q, H * Dh), k: slice(packed.k, Hkv * Dh), v: slice(packed.v, Hkv * Dh), dO: slice(packed.dO, H * Dh), seg: new Int32Array(len).fill(3) },
          undefined,
          { o: slice(o32, H * Dh), lse: slice(lse32, H) },
        );
        // bit for bit (a zero tolerance also equates +0 and −0)
        expectClose(`dq of example at ${start}`, slice(whole.dq, H * Dh), alone.dq, 0, 0);
        expectClose(`dk of example at ${start}`, slice(whole.dk, Hkv * Dh), alone.dk, 0, 0);
        expectClose(`dv of example at ${start}`, slice(whole.dv, Hkv * Dh), alone.dv, 0, 0);
        start += len;
      }
    }
  });

  it('declares workgroup memory within lavapipe’s 32 KiB for Qwen3-4B heads', async () => {
    const gpu = await testGpu();
    const att = await attentionBackward(gpu, 128);
    expect(dkdvWorkgroupBytes(128, att.tiles.dkdv)).toBeLessThanOrEqual(gpu.limits.maxComputeWorkgroupStorageSize);
    expect(dqWorkgroupBytes(128, att.tiles.dq)).toBeLessThanOrEqual(gpu.limits.maxComputeWorkgroupStorageSize);
  });

  it('rejects wrong shapes, outputs aliasing inputs, and tiles that do not fit', async () => {
    const gpu = await testGpu();
    const d = { B: 1, T: 4, H: 2, Hkv: 1, Dh: 16 };
    const att = await attentionBackward(gpu, 16);
    const mk = (name: string, w: number, dtype: 'f32' | 'i32' = 'f32') => gpu.tensor(name, w === 0 ? [4] : [4, w], dtype);
    const t = {
      dq: mk('dq', 32),
      dk: mk('dk', 16),
      dv: mk('dv', 16),
      dO: mk('dO', 32),
      q: mk('q', 32),
      k: mk('k', 16),
      v: mk('v', 16),
      o: mk('o', 32),
      lse: mk('lse', 2),
      segIds: mk('seg', 0, 'i32'),
      delta: mk('delta', 2),
    };
    expect(att.backward('ok', t, d)).toHaveLength(3);
    expect(() => att.backward('layer 3 attention', { ...t, dk: mk('dk', 32) }, d)).toThrow(ShapeError);
    expect(() => att.backward('layer 3 attention', { ...t, dq: tensorView(t.q.buffer, 'q again', [4, 32], 'f32') }, d)).toThrow(
      /layer 3 attention \(attentionBackward\): output q again shares a GPU buffer with input q/,
    );
    expect(() => att.backward('a', { ...t, dv: tensorView(t.dk.buffer, 'dk again', [4, 16], 'f32') }, d)).toThrow(/overlap/);
    expect(() => att.backward('a', t, { ...d, Dh: 128 })).toThrow(/head_dim 16/);
    await expect(AttentionBackward.create(gpu, { headDim: 128, tiles: { dkdv: { bc: 64, br: 64 } } })).rejects.toThrow(/workgroup memory/);
  });
});
