import { describe, expect, it } from 'vitest';
import { Rope, ropeForwardRef, ropeTable, uploadRopeTable } from '../../src/kernels/rope.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectGradient, weightedSum } from './gradcheck.js';

/** Positions of packed examples: each restarts at 0 (lengths cycle through `lens`). */
function packedPositions(N: number, lens: readonly number[]): Int32Array {
  const pos = new Int32Array(N);
  let t = 0;
  for (let e = 0; t < N; e++) {
    for (let p = 0; p < lens[e % lens.length] && t < N; p++) pos[t++] = p;
  }
  return pos;
}

async function runRope(gpu: Gpu, opts: { N: number; H: number; Hkv: number; Dh: number; theta: number; maxPos: number; pos: Int32Array; q: Float32Array; k: Float32Array; inverse?: boolean }) {
  const { N, H, Hkv, Dh } = opts;
  const rope = await Rope.create(gpu, { headDim: Dh });
  const table = uploadRopeTable(gpu, ropeTable(opts.theta, Dh, opts.maxPos));
  const q = gpu.tensorFrom('q', [N, H * Dh], 'f32', opts.q);
  const k = gpu.tensorFrom('k', [N, Hkv * Dh], 'f32', opts.k);
  const posIds = gpu.tensorFrom('pos', [N], 'i32', opts.pos);
  const t = { ...table, posIds };
  const d = opts.inverse ? rope.backward('rope.backward', { ...t, dq: q, dk: k }, { N, H, Hkv }) : rope.forward('rope', { ...t, q, k }, { N, H, Hkv });
  submitDispatches(gpu, [d]);
  return { q: await gpu.readF32(q), k: await gpu.readF32(k) };
}

describe('ropeTable', () => {
  it('holds cos and sin of p·theta^(−2i/Dh) rounded to f32', () => {
    const t = ropeTable(5e6, 128, 300);
    expect(t.cos.length).toBe(300 * 64);
    for (const [p, i] of [[0, 0], [1, 0], [299, 0], [299, 63], [17, 31]]) {
      const a = p * Math.pow(5e6, (-2 * i) / 128);
      expect(t.cos[p * 64 + i]).toBe(Math.fround(Math.cos(a)));
      expect(t.sin[p * 64 + i]).toBe(Math.fround(Math.sin(a)));
    }
  });
});

describe('rope backward float64 reference', () => {
  it('the inverse rotation equals central differences of the forward reference (it is the transpose)', () => {
    const [N, H, Dh, theta] = [6, 2, 8, 1e6];
    const rng = new Rng(17);
    const pos = packedPositions(N, [4, 2]).map((p) => p + 3);
    const x = Float64Array.from(rng.f32(N * H * Dh));
    const dy = rng.f32(N * H * Dh);
    const dx = ropeForwardRef(dy, pos, H, Dh, theta, -1);
    expectGradient('dx', weightedSum(dy, (xx) => ropeForwardRef(xx, pos, H, Dh, theta)), x, dx, { samples: N * H * Dh });
  });
});

describe('rope forward', () => {
  // tiny (the fixture model), realistic (Qwen3-4B heads, positions to 4000) and awkward (odd N,
  // thread count not a multiple of the workgroup), positions restarting per packed example.
  const cases = [
    { N: 1, H: 4, Hkv: 2, Dh: 16, theta: 1e6, lens: [1] },
    { N: 37, H: 4, Hkv: 2, Dh: 16, theta: 1e6, lens: [11, 20, 6] },
    { N: 129, H: 32, Hkv: 8, Dh: 128, theta: 5e6, lens: [50, 79] },
    { N: 45, H: 6, Hkv: 3, Dh: 128, theta: 5e6, lens: [45], offset: 3955 },
  ];
  for (const c of cases) {
    it(`matches the float64 reference at N=${c.N}, H=${c.H}, Hkv=${c.Hkv}, Dh=${c.Dh}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(c.N * 7 + c.Dh);
      const pos = packedPositions(c.N, c.lens).map((p) => p + (c.offset ?? 0));
      const maxPos = Math.max(...pos) + 1;
      const q = rng.f32(c.N * c.H * c.Dh);
      const k = rng.f32(c.N * c.Hkv * c.Dh, 2);
      const out = await runRope(gpu, { ...c, maxPos, pos, q, k });
      // f32 table entries (|err| ≤ 6e-8) and two f32 products per output: a few ulp of |x|
      expectClose('q', out.q, ropeForwardRef(q, pos, c.H, c.Dh, c.theta), 1e-6, 1e-6);
      expectClose('k', out.k, ropeForwardRef(k, pos, c.Hkv, c.Dh, c.theta), 1e-6, 2e-6);
    });
  }

  it('backward is the inverse rotation (and the transpose)', async () => {
    const gpu = await testGpu();
    const [N, H, Hkv, Dh, theta] = [23, 4, 2, 16, 1e6];
    const rng = new Rng(99);
    const pos = packedPositions(N, [9, 14]);
    const dq = rng.f32(N * H * Dh);
    const dk = rng.f32(N * Hkv * Dh);
    const out = await runRope(gpu, { N, H, Hkv, Dh, theta, maxPos: 64, pos, q: dq, k: dk, inverse: true });
    // same arithmetic as the forward test
    expectClose('dq', out.q, ropeForwardRef(dq, pos, H, Dh, theta, -1), 1e-6, 1e-6);
    expectClose('dk', out.k, ropeForwardRef(dk, pos, Hkv, Dh, theta, -1), 1e-6, 1e-6);
  });

  // A position past the table is refused before any upload (src/model/input-checks.ts, an error naming
  // the example; tests/model/input-checks.test.ts), no longer clamped to the table's last row.

  it('keeps q and k apart: NaN-poisoned k stays NaN and does not reach q', async () => {
    // The kernel works in place, so "poison the output" cannot apply; every element's value is
    // checked against the reference above, and this checks that no thread mixes the two buffers.
    const gpu = await testGpu();
    const [N, H, Hkv, Dh] = [3, 2, 1, 16];
    const rope = await Rope.create(gpu, { headDim: Dh });
    const table = uploadRopeTable(gpu, ropeTable(1e6, Dh, 4));
    const q = gpu.tensorFrom('q', [N, H * Dh], 'f32', new Float32Array(N * H * Dh).fill(1));
    const k = gpu.tensor('k', [N, Hkv * Dh], 'f32');
    gpu.fill32(k, NAN_WORD);
    const posIds = gpu.tensorFrom('pos', [N], 'i32', Int32Array.from([0, 1, 2]));
    submitDispatches(gpu, [rope.forward('rope', { ...table, q, k, posIds }, { N, H, Hkv })]);
    const outQ = await gpu.readF32(q);
    const outK = await gpu.readF32(k);
    expect(outQ.every(Number.isFinite)).toBe(true);
    expect(outK.every(Number.isNaN)).toBe(true);
  });
});
