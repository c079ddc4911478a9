import { describe, expect, it } from 'vitest';
import { Swiglu, SWIGLU_WORKGROUP, swigluBackwardRef, swigluForwardRef } from '../../src/kernels/swiglu.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { tensorView } from '../../src/kernels/tensor.js';
import { ShapeError } from '../../src/errors.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { expectGradient, weightedSum } from './gradcheck.js';

/** One Swiglu (three pipelines) per test file: compiling is the slow part on lavapipe. */
let compiled: Promise<Swiglu> | undefined;
function swiglu(gpu: Gpu): Promise<Swiglu> {
  compiled ??= Swiglu.create(gpu);
  return compiled;
}

describe('swiglu forward', () => {
  // tiny, realistic (a 4B MLP row block) and awkward (not a multiple of the workgroup)
  for (const [N, F] of [[1, 3], [64, 9728], [7, 333]] as const) {
    it(`matches the float64 reference at N=${N}, F=${F}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(N * 1000 + F);
      const g = rng.f32(N * F, 3);
      const u = rng.f32(N * F, 1);
      const act = gpu.tensor('act', [N, F], 'f32');
      gpu.fill32(act, NAN_WORD);
      const sw = await swiglu(gpu);
      submitDispatches(gpu, [sw.forward('swiglu', act, gpu.tensorFrom('gate', [N, F], 'f32', g), gpu.tensorFrom('up', [N, F], 'f32', u))]);
      // f32 exp and division: a few ulp of relative error
      expectClose('act', await gpu.readF32(act), swigluForwardRef(g, u), 1e-5, 1e-6);
    });
  }
});

/** Seeded gate (std 3, so σ saturates on both sides), up and dact. */
function backwardData(count: number): { g: Float32Array; u: Float32Array; d: Float32Array } {
  const rng = new Rng(count * 31 + 7);
  return { g: rng.f32(count, 3), u: rng.f32(count, 1), d: rng.f32(count, 1) };
}

// dgate and dup: an f32 exp, a divide and four products, a few ulp relative; the absolute floor
// covers dgate near its zero at 1 + g·(1 − σ) = 0 (g ≈ −1.28), where the sum cancels
const RTOL = 1e-5;
const ATOL = 1e-6;

describe('swiglu backward', () => {
  it('float64 reference equals central differences of the forward reference', () => {
    const { g, u, d } = backwardData(200);
    const ref = swigluBackwardRef(d, g, u);
    expectGradient('dgate', weightedSum(d, (gg) => swigluForwardRef(gg, u)), g, ref.dgate, { samples: 200 });
    expectGradient('dup', weightedSum(d, (uu) => swigluForwardRef(g, uu)), u, ref.dup, { samples: 200 });
  });

  // tiny, awkward (not a multiple of the workgroup), realistic 4B MLP block (F = 9728)
  for (const [N, F] of [[1, 3], [7, 333], [64, 9728]] as const) {
    it(`matches the float64 reference at N=${N}, F=${F} (separate outputs)`, async () => {
      const gpu = await testGpu();
      const { g, u, d } = backwardData(N * F);
      const dgate = gpu.tensor('dgate', [N, F], 'f32');
      const dup = gpu.tensor('dup', [N, F], 'f32');
      gpu.fill32(dgate, NAN_WORD);
      gpu.fill32(dup, NAN_WORD);
      const t = {
        dgate,
        dup,
        dact: gpu.tensorFrom('dact', [N, F], 'f32', d),
        gate: gpu.tensorFrom('gate', [N, F], 'f32', g),
        up: gpu.tensorFrom('up', [N, F], 'f32', u),
      };
      submitDispatches(gpu, [(await swiglu(gpu)).backward('swiglu backward', t)]);
      const ref = swigluBackwardRef(d, g, u);
      expectClose('dgate', await gpu.readF32(dgate), ref.dgate, RTOL, ATOL);
      expectClose('dup', await gpu.readF32(dup), ref.dup, RTOL, ATOL);
    });

    it(`matches the float64 reference at N=${N}, F=${F} (in place over gate and up)`, async () => {
      const gpu = await testGpu();
      const { g, u, d } = backwardData(N * F);
      const gate = gpu.tensorFrom('gate', [N, F], 'f32', g);
      const up = gpu.tensorFrom('up', [N, F], 'f32', u);
      submitDispatches(gpu, [(await swiglu(gpu)).backwardInPlace('swiglu backward', { gate, up, dact: gpu.tensorFrom('dact', [N, F], 'f32', d) })]);
      const ref = swigluBackwardRef(d, g, u);
      expectClose('dgate (in gate)', await gpu.readF32(gate), ref.dgate, RTOL, ATOL);
      expectClose('dup (in up)', await gpu.readF32(up), ref.dup, RTOL, ATOL);
    });
  }

  it('folds a grid past 65535 workgroups into y (N·F > 65535·256, as at N = 2048, F = 9728)', async () => {
    const gpu = await testGpu();
    const edge = 65535 * SWIGLU_WORKGROUP;
    const count = edge + 1001;
    // cheap index patterns instead of 3 × 16.8M normal samples (no element equals its neighbour's)
    const g = new Float32Array(count);
    const u = new Float32Array(count);
    const d = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      g[i] = ((i * 7919) % 1009) / 100 - 5;
      u[i] = ((i * 104729) % 997) / 500 - 1;
      d[i] = ((i * 31) % 101) / 50 - 1;
    }
    const dgate = gpu.tensor('dgate', [count], 'f32');
    const dup = gpu.tensor('dup', [count], 'f32');
    gpu.fill32(dgate, NAN_WORD);
    gpu.fill32(dup, NAN_WORD);
    const t = { dgate, dup, dact: gpu.tensorFrom('dact', [count], 'f32', d), gate: gpu.tensorFrom('gate', [count], 'f32', g), up: gpu.tensorFrom('up', [count], 'f32', u) };
    submitDispatches(gpu, [(await swiglu(gpu)).backward('swiglu backward', t)]);
    const outG = await gpu.readF32(dgate);
    const outU = await gpu.readF32(dup);
    for (const x of Object.values(t)) x.buffer.destroy();
    // every element from a workgroup before the fold through the end, and every 101st before that
    const picked: number[] = [];
    for (let i = 0; i < edge - 4096; i += 101) picked.push(i);
    for (let i = edge - 4096; i < count; i++) picked.push(i);
    const at = (a: Float32Array) => Float32Array.from(picked, (i) => a[i]);
    const ref = swigluBackwardRef(at(d), at(g), at(u));
    expectClose('dgate (sampled)', at(outG), ref.dgate, RTOL, ATOL);
    expectClose('dup (sampled)', at(outU), ref.dup, RTOL, ATOL);
  });

  it('stays finite for saturated gates (|g| up to 1000)', async () => {
    const gpu = await testGpu();
    const g = Float32Array.from([-1000, -100, -88, -80, -20, 20, 80, 88, 100, 1000]);
    const u = Float32Array.from(g, (_, i) => 1 + i / 10);
    const d = Float32Array.from(g, (_, i) => 1 - i / 7);
    const n = g.length;
    const dgate = gpu.tensor('dgate', [n], 'f32');
    const dup = gpu.tensor('dup', [n], 'f32');
    gpu.fill32(dgate, NAN_WORD);
    gpu.fill32(dup, NAN_WORD);
    const t = { dgate, dup, dact: gpu.tensorFrom('dact', [n], 'f32', d), gate: gpu.tensorFrom('gate', [n], 'f32', g), up: gpu.tensorFrom('up', [n], 'f32', u) };
    submitDispatches(gpu, [(await swiglu(gpu)).backward('swiglu backward', t)]);
    const ref = swigluBackwardRef(d, g, u);
    // saturated σ: the clamp at e^80 leaves < 1e-30 absolute; dup = dact·g grows with g
    expectClose('dgate', await gpu.readF32(dgate), ref.dgate, RTOL, ATOL);
    expectClose('dup', await gpu.readF32(dup), ref.dup, RTOL, ATOL);
  });

  it('rejects outputs aliasing inputs or each other, and mismatched shapes', async () => {
    const gpu = await testGpu();
    const sw = await swiglu(gpu);
    const mk = (name: string) => gpu.tensor(name, [4, 8], 'f32');
    const [dgate, dup, dact, gate, up] = ['dgate', 'dup', 'dact', 'gate', 'up'].map(mk);
    expect(() => sw.backward('layer 1 swiglu', { dgate: tensorView(gate.buffer, 'gate again', [4, 8], 'f32'), dup, dact, gate, up })).toThrow(
      /layer 1 swiglu \(swigluBackward\): output gate again shares a GPU buffer with input gate/,
    );
    expect(() => sw.backward('s', { dgate, dup: tensorView(dgate.buffer, 'dgate again', [4, 8], 'f32'), dact, gate, up })).toThrow(/overlap/);
    expect(() => sw.backward('s', { dgate, dup, dact: gpu.tensor('dact', [4, 9], 'f32'), gate, up })).toThrow(ShapeError);
    expect(() => sw.backwardInPlace('s', { gate, up, dact: tensorView(up.buffer, 'up again', [4, 8], 'f32') })).toThrow(/shares a GPU buffer with dact/);
  });
});
