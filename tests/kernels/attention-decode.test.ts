import { describe, expect, it } from 'vitest';
import { AttentionDecode, attentionDecodeRef, decodeWorkgroupBytes } from '../../src/kernels/attention-decode.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

interface Case {
  name: string;
  /** C: rows of the chunk buffers; n ≤ C of them are real tokens at positions p0 .. p0+n−1. */
  rows: number;
  n: number;
  p0: number;
  H: number;
  Hkv: number;
  Dh: number;
  maxContext: number;
  /** Key splits; default the kernel's own choice. */
  splits?: number;
  tiles?: { bq: number; bc: number };
}

/** One kernel set per (head dim, group size, rows, tiles): each pipeline costs seconds on lavapipe. */
const kernels = new Map<string, Promise<AttentionDecode>>();
function kernelFor(gpu: Gpu, c: Case): Promise<AttentionDecode> {
  const key = `${c.Dh} ${c.H / c.Hkv} ${c.rows} ${JSON.stringify(c.tiles ?? null)}`;
  if (!kernels.has(key)) kernels.set(key, AttentionDecode.create(gpu, { headDim: c.Dh, groupSize: c.H / c.Hkv, rows: c.rows, tiles: c.tiles }));
  return kernels.get(key)!;
}

/**
 * Random caches whose rows 0 .. p0−1 hold earlier tokens and whose rows from p0 on are NaN (never
 * to be read: the chunk's own rows are written by writeKv), and random q, k, v of the chunk. The
 * kernels run in one submit (KV write, then attention); returns o and the cache after the write.
 */
async function run(gpu: Gpu, c: Case, seed: number) {
  const rng = new Rng(seed);
  const { rows, n, p0, H, Hkv, Dh, maxContext } = c;
  const att = await kernelFor(gpu, c);
  const splits = c.splits ?? att.splitsFor(rows, Hkv, maxContext);
  const cacheSize = Hkv * maxContext * Dh;
  const kCache = new Float32Array(cacheSize).fill(NaN);
  const vCache = new Float32Array(cacheSize).fill(NaN);
  for (let g = 0; g < Hkv; g++) {
    for (let j = 0; j < p0; j++) {
      for (let d = 0; d < Dh; d++) {
        kCache[(g * maxContext + j) * Dh + d] = 1.6 * rng.normal();
        vCache[(g * maxContext + j) * Dh + d] = rng.normal();
      }
    }
  }
  // q·k of normals with these scales, divided by sqrt(Dh), spread ~2.5: softmax rows neither flat nor one-hot.
  const q = rng.f32(rows * H * Dh, 1.6);
  const k = rng.f32(rows * Hkv * Dh, 1.6);
  const v = rng.f32(rows * Hkv * Dh);
  const t = {
    o: gpu.tensor('o', [rows, H * Dh], 'f32'),
    oPart: gpu.tensor('oPart', [splits, rows, H * Dh], 'f32'),
    mlPart: gpu.tensor('mlPart', [splits, rows, H, 2], 'f32'),
    q: gpu.tensorFrom('q', [rows, H * Dh], 'f32', q),
    k: gpu.tensorFrom('k', [rows, Hkv * Dh], 'f32', k),
    v: gpu.tensorFrom('v', [rows, Hkv * Dh], 'f32', v),
    kCache: gpu.tensorFrom('kCache', [Hkv, maxContext, Dh], 'f32', kCache),
    vCache: gpu.tensorFrom('vCache', [Hkv, maxContext, Dh], 'f32', vCache),
    chunk: gpu.tensorFrom('chunk', [4], 'i32', Int32Array.from([p0, n, 0, 0])),
  };
  for (const out of [t.o, t.oPart, t.mlPart]) gpu.fill32(out, NAN_WORD);
  submitDispatches(gpu, [
    att.writeKv('kv write', { kCache: t.kCache, vCache: t.vCache, k: t.k, v: t.v, chunk: t.chunk }, { rows, Hkv, maxContext }),
    ...att.forward('attention', t, { rows, H, Hkv, Dh, maxContext, splits }),
  ]);
  const result = { o: await gpu.readF32(t.o), kAfter: await gpu.readF32(t.kCache), vAfter: await gpu.readF32(t.vCache), kCache, vCache, q, k, v, splits };
  for (const x of Object.values(t)) x.buffer.destroy();
  return result;
}

/** The cache after the chunk's write, as the reference sees it: rows p0 .. p0+n−1 from k, v. */
function expectedCache(cache: Float32Array, chunk: Float32Array, c: Case): Float32Array {
  const out = cache.slice();
  for (let i = 0; i < c.n; i++) {
    for (let g = 0; g < c.Hkv; g++) {
      for (let d = 0; d < c.Dh; d++) out[(g * c.maxContext + c.p0 + i) * c.Dh + d] = chunk[(i * c.Hkv + g) * c.Dh + d];
    }
  }
  return out;
}

describe('attention against the KV cache (generation)', () => {
  const cases: Case[] = [
    { name: 'first token', rows: 1, n: 1, p0: 0, H: 4, Hkv: 2, Dh: 16, maxContext: 37 },
    { name: 'last slot of the cache, awkward splits', rows: 1, n: 1, p0: 36, H: 4, Hkv: 2, Dh: 16, maxContext: 37, splits: 5 },
    { name: 'decode, one split', rows: 1, n: 1, p0: 29, H: 6, Hkv: 3, Dh: 20, maxContext: 41, splits: 1 },
    { name: 'partly filled chunk (padding rows), odd head dim', rows: 8, n: 5, p0: 11, H: 6, Hkv: 3, Dh: 20, maxContext: 40, splits: 3 },
    { name: 'full chunk at position 0, tiles smaller than the chunk', rows: 13, n: 13, p0: 0, H: 4, Hkv: 2, Dh: 16, maxContext: 50, tiles: { bq: 4, bc: 4 } },
    { name: 'chunk after a prefix, more splits than key tiles', rows: 13, n: 9, p0: 23, H: 4, Hkv: 2, Dh: 16, maxContext: 50, splits: 17, tiles: { bq: 4, bc: 4 } },
    { name: 'Qwen3-4B heads, decode', rows: 1, n: 1, p0: 70, H: 8, Hkv: 2, Dh: 128, maxContext: 96 },
    { name: 'Qwen3-4B heads, prefill chunk', rows: 16, n: 11, p0: 5, H: 8, Hkv: 2, Dh: 128, maxContext: 40 },
  ];
  for (const c of cases) {
    it(`matches the float64 reference: ${c.name} (C=${c.rows}, n=${c.n}, p0=${c.p0}, H=${c.H}, Hkv=${c.Hkv}, Dh=${c.Dh})`, async () => {
      const gpu = await testGpu();
      const r = await run(gpu, c, c.p0 * 131 + c.rows * 7 + c.Dh);
      const kRef = expectedCache(r.kCache, r.k, c);
      const vRef = expectedCache(r.vCache, r.v, c);
      // The write is a copy: bit-exact, and rows outside p0 .. p0+n−1 untouched (NaN stays NaN).
      for (let i = 0; i < kRef.length; i++) {
        if (!(Object.is(r.kAfter[i], kRef[i]) && Object.is(r.vAfter[i], vRef[i]))) {
          throw new Error(`cache element ${i}: got k=${r.kAfter[i]}, v=${r.vAfter[i]}; expected k=${kRef[i]}, v=${vRef[i]}`);
        }
      }
      const ref = attentionDecodeRef(r.q, kRef, vRef, c.p0, c.n, c);
      const rowWidth = c.H * c.Dh;
      // f32 dot products over Dh and f32 sums over ≤ p0+n keys, merged over splits: ~1e-6 of |v|.
      expectClose(`o (splits ${r.splits})`, r.o.subarray(0, c.n * rowWidth), ref, 1e-5, 1e-5);
      // Padding rows are zero (the poison is gone, and they feed o_proj harmlessly).
      expect(Array.from(r.o.subarray(c.n * rowWidth)).every((x) => x === 0)).toBe(true);
    });
  }

  it('gives the same output whatever the number of splits (to rounding)', async () => {
    const gpu = await testGpu();
    const base: Case = { name: 'splits', rows: 1, n: 1, p0: 33, H: 4, Hkv: 2, Dh: 16, maxContext: 37 };
    const one = await run(gpu, { ...base, splits: 1 }, 99);
    for (const splits of [2, 4, 10]) {
      const many = await run(gpu, { ...base, splits }, 99);
      // the same inputs (same seed); only the order of the f32 sums differs
      expectClose(`o with ${splits} splits vs 1`, many.o, one.o, 2e-6, 2e-6);
    }
  });

  it('picks tiles that fit the device and refuses ones that do not', async () => {
    const gpu = await testGpu();
    const att = await kernelFor(gpu, { name: '', rows: 16, n: 16, p0: 0, H: 8, Hkv: 2, Dh: 128, maxContext: 40 });
    expect(decodeWorkgroupBytes(128, 4, att.tiles.bq, att.tiles.bc)).toBeLessThanOrEqual(gpu.limits.maxComputeWorkgroupStorageSize);
    await expect(AttentionDecode.create(gpu, { headDim: 128, groupSize: 8, rows: 64, tiles: { bq: 64, bc: 64 } })).rejects.toThrow(/bq=64/);
  });
});
