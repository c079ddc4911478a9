import { describe, expect, it } from 'vitest';
import { IGNORE_INDEX } from '../../src/labels.js';
import { compactTargets, CrossEntropyFused, crossEntropyFusedRef, fusedHeadUnsupported, fusedSlices, FUSED_PARTIAL_WORDS } from '../../src/kernels/cross-entropy-fused.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import type { LinearWeight } from '../../src/kernels/matmul.js';
import { f32ToBf16Bits } from '../../src/model/bf16.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/** bf16 (V, D) weight: the words for the GPU and the dense values (exactly the bf16 ones) for the reference. */
function bf16Weight(gpu: Gpu, rng: Rng, V: number, D: number, scale: number, duplicates: [number, number][] = []): { w: LinearWeight; dense: Float64Array } {
  const halves = new Uint16Array(V * D);
  for (let i = 0; i < halves.length; i++) halves[i] = f32ToBf16Bits(rng.normal() * scale);
  // exact ties: row b copies row a, so logit b = logit a bit for bit
  for (const [a, b] of duplicates) halves.copyWithin(b * D, a * D, (a + 1) * D);
  const bits = Uint32Array.from(halves, (h) => h << 16);
  const dense = Float64Array.from(new Float32Array(bits.buffer));
  const data = gpu.tensorFrom('lm_head (V, D) bf16', [V, D], 'bf16x2', new Uint32Array(halves.buffer));
  return { w: { format: 'bf16', nOut: V, k: D, data }, dense };
}

interface Case {
  N: number;
  D: number;
  V: number;
  /** Every `ignoreEvery`-th position has no target. */
  ignoreEvery: number;
}

/**
 * Runs forward + merge + backward + dx on seeded data; returns GPU outputs and the float64
 * reference. With `tie` = [a, b]: E row b is a copy of row a, positions 0 and 1 have x = 4·E[a]
 * (so that pair holds their largest logits, exactly equal) and targets a and b.
 */
async function run(c: Case, seed: number, tie?: [number, number]) {
  const gpu = await testGpu();
  const fused = await CrossEntropyFused.create(gpu);
  const rng = new Rng(seed);
  const { N, D, V } = c;
  const x = rng.f32(N * D, 1);
  const { w, dense } = bf16Weight(gpu, rng, V, D, 0.5, tie ? [tie] : []);
  const targets = Int32Array.from({ length: N }, (_, p) => (p % c.ignoreEvery === c.ignoreEvery - 1 ? IGNORE_INDEX : rng.int(0, V)));
  if (tie) {
    for (const p of [0, 1]) for (let k = 0; k < D; k++) x[p * D + k] = 4 * dense[tie[0] * D + k];
    targets[0] = tie[0];
    targets[1] = tie[1];
  }
  const ref = crossEntropyFusedRef(x, dense, targets, N, D, V, 0.25);
  // half of the scored rows get their reference argmax as target: "correct" must be 1 there
  for (let p = 0; p < N; p += 2) if (targets[p] !== IGNORE_INDEX) targets[p] = ref.argmax[p];
  const want = crossEntropyFusedRef(x, dense, targets, N, D, V, 0.25);
  const lists = compactTargets(targets, V, 'test');
  const slices = fusedSlices(V);
  const shape = { rows: N, vocab: V, hidden: D, slices };
  const rows = {
    targets: gpu.tensorFrom('targets', [N], 'i32', targets),
    rowPos: gpu.tensorFrom('rowPos', [N], 'i32', lists.rowPos),
    rowOf: gpu.tensorFrom('rowOf', [N], 'i32', lists.rowOf),
    count: gpu.tensorFrom('count', [1], 'u32', Uint32Array.of(lists.count)),
  };
  const xT = gpu.tensorFrom('x', [N, D], 'f32', x);
  const out = (label: string, dims: number[]) => {
    const t = gpu.tensor(label, dims, 'f32');
    gpu.fill32(t, NAN_WORD);
    return t;
  };
  const partial = out('partial', [slices, N, FUSED_PARTIAL_WORDS]);
  const loss = out('loss', [N]);
  const lse = out('lse', [N]);
  const correct = out('correct', [N]);
  const dxPartial = out('dxPartial', [slices, N, D]);
  const dx = out('dx', [N, D]);
  submitDispatches(gpu, [
    fused.forward('head', { partial, x: xT, w, ...rows }, shape),
    fused.merge('merge', { loss, lse, correct, partial, targets: rows.targets, rowOf: rows.rowOf }, shape),
    fused.backward('head backward', { dxPartial, x: xT, w, lse, ...rows }, { ...shape, scale: 0.25 }),
    fused.dx('dx', { dx, dxPartial, rowOf: rows.rowOf }, shape),
  ]);
  return {
    targets,
    want,
    loss: await gpu.readF32(loss),
    lse: await gpu.readF32(lse),
    correct: await gpu.readF32(correct),
    dx: await gpu.readF32(dx),
  };
}

const scored = (targets: Int32Array, a: ArrayLike<number>): number[] => Array.from(a).filter((_, p) => targets[p] !== IGNORE_INDEX);

// lse: f32 dot products of D ≤ 64 terms (|logit| ≲ 30, error ~1e-5) and an f32 log-sum-exp over V
const LSE_ATOL = 1e-4;
// dx: Σ over V of f32 (softmax − one-hot)·E terms; relative to the row's size
const DX_RTOL = 1e-4;
const DX_ATOL = 1e-5;

describe.skipIf(await testGpu().then((g) => fusedHeadUnsupported(g) !== undefined))('fused lm_head + cross-entropy (CPU adapters)', () => {
  // tiny, awkward (N not a multiple of 32, V not of the slice), the fixture's and the embedded model's widths, the real vocabulary
  for (const c of [
    { N: 5, D: 8, V: 37, ignoreEvery: 3 },
    { N: 37, D: 32, V: 1003, ignoreEvery: 4 },
    { N: 70, D: 64, V: 5001, ignoreEvery: 5 },
    { N: 13, D: 64, V: 151936, ignoreEvery: 2 },
  ] as const) {
    it(`matches the float64 reference at N=${c.N}, D=${c.D}, V=${c.V}`, async () => {
      const r = await run(c, c.N * 7 + c.V);
      expectClose('lse', scored(r.targets, r.lse), scored(r.targets, r.want.lse), 1e-6, LSE_ATOL);
      expectClose('loss', r.loss, r.want.loss, 1e-6, LSE_ATOL);
      expect(Array.from(r.correct)).toEqual(Array.from(r.want.correct));
      expect(r.want.correct.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
      expectClose('dx', r.dx, r.want.dx, DX_RTOL, DX_ATOL);
      for (let p = 0; p < c.N; p++) {
        if (r.targets[p] === IGNORE_INDEX) {
          expect(r.loss[p]).toBe(0);
          expect(r.correct[p]).toBe(0);
          expect(Array.from(r.dx.subarray(p * c.D, (p + 1) * c.D)).every((v) => v === 0)).toBe(true);
        }
      }
    });
  }

  it('breaks exact ties of the argmax towards the lowest index, across slices', async () => {
    // E rows 3 and 4000 (different slices of 5001) are equal and the largest logits of positions 0 and 1
    const r = await run({ N: 9, D: 16, V: 5001, ignoreEvery: 100 }, 11, [3, 4000]);
    expect(r.want.argmax[0]).toBe(3);
    expect(r.want.argmax[1]).toBe(3);
    expect(r.correct[0]).toBe(1); // target 3
    expect(r.correct[1]).toBe(0); // target 4000: tied with 3, which comes first
    expect(Array.from(r.correct)).toEqual(Array.from(r.want.correct));
  });

  it('rejects a target outside the vocabulary, naming its position', () => {
    expect(() => compactTargets(Int32Array.from([1, -100, 7]), 5, 'train step')).toThrow(/train step: the target at position 2 is 7; expected -100 or a token id in \[0, 5\)/);
  });

  it('rejects a hidden size it cannot hold and a non-bf16 lm_head', async () => {
    const gpu = await testGpu();
    const fused = await CrossEntropyFused.create(gpu);
    const rows = { targets: gpu.tensor('t', [4], 'i32'), rowPos: gpu.tensor('p', [4], 'i32'), rowOf: gpu.tensor('o', [4], 'i32'), count: gpu.tensor('c', [1], 'u32') };
    const w: LinearWeight = { format: 'bf16', nOut: 10, k: 72, data: gpu.tensor('w', [10, 72], 'bf16x2') };
    const shape = { rows: 4, vocab: 10, hidden: 72, slices: 1 };
    expect(() => fused.forward('head', { partial: gpu.tensor('p', [1, 4, 4], 'f32'), x: gpu.tensor('x', [4, 72], 'f32'), w, ...rows }, shape)).toThrow(/hidden size 72 is not a multiple of 8 up to 64/);
    const f: LinearWeight = { format: 'f32', nOut: 10, k: 8, data: gpu.tensor('w', [10, 8], 'f32') };
    expect(() => fused.forward('head', { partial: gpu.tensor('p', [1, 4, 4], 'f32'), x: gpu.tensor('x', [4, 8], 'f32'), w: f, ...rows }, { ...shape, hidden: 8 })).toThrow(/the lm_head is f32/);
  });
});
