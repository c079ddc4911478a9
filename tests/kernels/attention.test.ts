import { describe, expect, it } from 'vitest';
import { Attention, attentionForwardRef, attentionWorkgroupBytes, type AttentionDims, type AttentionTiles } from '../../src/kernels/attention.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

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
  seg: Int32Array;
}

function randomInputs(seed: number, d: AttentionDims, seg: Int32Array): Inputs {
  const rng = new Rng(seed);
  const N = d.B * d.T;
  // q·k of unit normals over Dh dims, scaled by 1/sqrt(Dh), gives scores of spread ~2.5 with
  // these scales: softmax rows neither flat nor one-hot.
  return { q: rng.f32(N * d.H * d.Dh, 1.6), k: rng.f32(N * d.Hkv * d.Dh, 1.6), v: rng.f32(N * d.Hkv * d.Dh), seg };
}

/** One kernel per (head dim, tiles): each distinct pipeline costs seconds to compile on lavapipe. */
const kernels = new Map<string, Promise<Attention>>();
function attentionFor(gpu: Gpu, headDim: number, tiles?: AttentionTiles): Promise<Attention> {
  const key = `${headDim} ${JSON.stringify(tiles ?? null)}`;
  if (!kernels.has(key)) kernels.set(key, Attention.create(gpu, { headDim, tiles }));
  return kernels.get(key)!;
}

async function runAttention(gpu: Gpu, d: AttentionDims, x: Inputs, tiles?: AttentionTiles): Promise<{ o: Float32Array; lse: Float32Array }> {
  const N = d.B * d.T;
  const att = await attentionFor(gpu, d.Dh, tiles);
  const o = gpu.tensor('o', [N, d.H * d.Dh], 'f32');
  const lse = gpu.tensor('lse', [N, d.H], 'f32');
  gpu.fill32(o, NAN_WORD);
  gpu.fill32(lse, NAN_WORD);
  const t = {
    o,
    lse,
    q: gpu.tensorFrom('q', [N, d.H * d.Dh], 'f32', x.q),
    k: gpu.tensorFrom('k', [N, d.Hkv * d.Dh], 'f32', x.k),
    v: gpu.tensorFrom('v', [N, d.Hkv * d.Dh], 'f32', x.v),
    segIds: gpu.tensorFrom('seg', [N], 'i32', x.seg),
  };
  submitDispatches(gpu, [att.forward('attention', t, d)]);
  return { o: await gpu.readF32(o), lse: await gpu.readF32(lse) };
}

describe('attention forward', () => {
  // Small tiles for the small heads, so that T=24 and T=37 span several query and key tiles.
  const small = { br: 8, bc: 8 };
  const cases: { name: string; d: AttentionDims; lens: number[][]; tiles?: AttentionTiles }[] = [
    { name: 'tiny', d: { B: 1, T: 1, H: 2, Hkv: 1, Dh: 16 }, lens: [[1]], tiles: small },
    { name: 'fixture-like', d: { B: 2, T: 24, H: 4, Hkv: 2, Dh: 16 }, lens: [[10, 14], [7, 9, 8]], tiles: small },
    { name: 'awkward', d: { B: 3, T: 37, H: 6, Hkv: 3, Dh: 16 }, lens: [[37], [12, 25], [5, 20, 12]], tiles: small },
    // RS=4 score blocks, two vec4 columns per thread
    { name: 'awkward, other work split', d: { B: 3, T: 37, H: 6, Hkv: 3, Dh: 16 }, lens: [[37], [12, 25], [5, 20, 12]], tiles: { br: 16, bc: 8, rs: 4, dv: 2 } },
    // the device's default tiles for Qwen3-4B heads
    { name: 'Qwen3-4B heads', d: { B: 1, T: 70, H: 4, Hkv: 1, Dh: 128 }, lens: [[30, 23, 17]] },
    // DH/4 = 5 columns over 2 threads of 3 (one slot unused), RS=1, tiles of 12
    { name: 'odd head dim', d: { B: 2, T: 19, H: 3, Hkv: 3, Dh: 20 }, lens: [[19], [6, 13]], tiles: { br: 12, bc: 12, rs: 1, dv: 3 } },
  ];
  for (const c of cases) {
    it(`matches the float64 reference: ${c.name} (B=${c.d.B}, T=${c.d.T}, H=${c.d.H}, Hkv=${c.d.Hkv}, Dh=${c.d.Dh})`, async () => {
      const gpu = await testGpu();
      const x = randomInputs(c.d.T * 31 + c.d.Dh, c.d, packedSegments(c.d.B, c.d.T, c.lens));
      const out = await runAttention(gpu, c.d, x, c.tiles);
      const ref = attentionForwardRef(x.q, x.k, x.v, x.seg, c.d);
      // f32 dot products over Dh and f32 sums over ≤ T keys: relative error ~1e-6 of |v|
      expectClose('o', out.o, ref.o, 1e-5, 1e-5);
      expectClose('lse', out.lse, ref.lse, 1e-5, 1e-5);
    });
  }

  it('gives each packed example exactly what it gets alone', async () => {
    const gpu = await testGpu();
    const tiles = { br: 8, bc: 8 };
    const [H, Hkv, Dh] = [4, 2, 16];
    // Example boundaries on multiples of the tile size: identical tiles, identical arithmetic.
    for (const lens of [[16, 8, 24], [5, 19, 13]]) {
      const T = lens.reduce((a, b) => a + b, 0);
      const d = { B: 1, T, H, Hkv, Dh };
      const packed = randomInputs(T, d, packedSegments(1, T, [lens]));
      const whole = await runAttention(gpu, d, packed, tiles);
      let start = 0;
      for (const len of lens) {
        const dAlone = { B: 1, T: len, H, Hkv, Dh };
        const slice = (a: Float32Array, w: number) => a.slice(start * w, (start + len) * w);
        const alone = await runAttention(
          gpu,
          dAlone,
          { q: slice(packed.q, H * Dh), k: slice(packed.k, Hkv * Dh), v: slice(packed.v, Hkv * Dh), seg: new Int32Array(len).fill(7) },
          tiles,
        );
        const o = slice(whole.o, H * Dh);
        const lse = slice(whole.lse, H);
        if (start % tiles.br === 0 && len % tiles.bc === 0) {
          expect(Array.from(o)).toEqual(Array.from(alone.o));
          expect(Array.from(lse)).toEqual(Array.from(alone.lse));
        } else {
          // tile boundaries differ, so the running max is rescaled at other keys: a few ulp
          expectClose(`o of example at ${start}`, o, alone.o, 2e-6, 2e-6);
          expectClose(`lse of example at ${start}`, lse, alone.lse, 2e-6, 2e-6);
        }
        start += len;
      }
    }
  });

  it('picks default tiles for Qwen3-4B heads that fit this device’s workgroup memory', async () => {
    const gpu = await testGpu();
    const att = await attentionFor(gpu, 128);
    expect(attentionWorkgroupBytes(128, att.tiles)).toBeLessThanOrEqual(gpu.limits.maxComputeWorkgroupStorageSize);
  });
});
