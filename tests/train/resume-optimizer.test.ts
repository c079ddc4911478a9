import { describe, expect, it } from 'vitest';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import type { Tensor } from '../../src/kernels/tensor.js';
import { CheckpointError } from '../../src/errors.js';
import { AdamwOptimizer, type AdamwHyper } from '../../src/train/adamw.js';
import { Adamw8bitOptimizer } from '../../src/train/adamw8bit.js';
import { createGradNormState } from '../../src/train/grad-norm.js';
import { planArena } from '../../src/train/param-arena.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/**
 * Optimiser state export / import (what a checkpoint saves): an optimiser that took two steps,
 * exported, imported into a fresh optimiser over a copy of the parameters, and both then take the
 * same third and fourth steps: the parameters and the states must be the same bits. The 8-bit case
 * uses an arena layout with one tensor under min_8bit_size (32-bit state) and one above it
 * (codes + absmax), so every saved buffer kind is exercised.
 */
const HYPER: AdamwHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
// Slots: 300 elements (32-bit state, padded to 512) and 4608 (8-bit), an odd-sized arena.
const LAYOUT = planArena([
  { name: 'small', shape: [12, 25] },
  { name: 'big', shape: [48, 96] },
]);
const N = LAYOUT.count;

type Kind = 'adamw' | 'adamw_8bit';
type Opt = AdamwOptimizer | Adamw8bitOptimizer;

async function make(gpu: Gpu, kind: Kind, label: string, params: Float32Array): Promise<{ opt: Opt; p: Tensor; g: Tensor }> {
  const p = gpu.tensorFrom(`${label} params`, [N], 'f32', params);
  const g = gpu.tensor(`${label} grads`, [N], 'f32');
  const norm = createGradNormState(gpu, `${label} norm`);
  const target = { params: p, grads: g, slots: LAYOUT.slots };
  const opt = kind === 'adamw' ? await AdamwOptimizer.create(gpu, label, target, norm, HYPER) : await Adamw8bitOptimizer.create(gpu, label, target, norm, HYPER);
  return { opt, p, g };
}

function randomGrads(rng: Rng): Float32Array {
  const g = rng.f32(N, 0.1);
  for (const s of LAYOUT.slots) g.fill(0, s.offset + s.count, s.offset + Math.ceil(s.count / 256) * 256); // the arena's padding has no gradient
  return g;
}

function stepWith(gpu: Gpu, x: { opt: Opt; g: Tensor }, grads: Float32Array, t: number): void {
  gpu.write(x.g, grads);
  x.opt.setStep({ lr: 1e-2, step: t });
  submitDispatches(gpu, x.opt.dispatches);
}

describe('optimiser state export / import', () => {
  for (const kind of ['adamw', 'adamw_8bit'] as const) {
    it(`${kind}: a restored optimiser continues bit for bit`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(kind === 'adamw' ? 3 : 4);
      const grads = [randomGrads(rng), randomGrads(rng), randomGrads(rng), randomGrads(rng)];
      const a = await make(gpu, kind, `${kind} a`, rng.f32(N, 0.5));
      stepWith(gpu, a, grads[0], 1);
      stepWith(gpu, a, grads[1], 2);
      const saved = await a.opt.exportState();
      expect(saved.map((t) => t.name)).toEqual(kind === 'adamw' ? ['exp_avg', 'exp_avg_sq'] : ['state1', 'state2', 'absmax', 'small.exp_avg', 'small.exp_avg_sq']);
      // The state is not trivially zero after two steps.
      for (const t of saved) expect(t.data.some((b) => b !== 0), t.name).toBe(true);

      const b = await make(gpu, kind, `${kind} b`, await gpu.readF32(a.p));
      b.opt.importState('test checkpoint', saved);
      for (const [i, t] of [[2, 3], [3, 4]] as const) {
        stepWith(gpu, a, grads[i], t);
        stepWith(gpu, b, grads[i], t);
      }
      expect(Array.from(await gpu.readF32(b.p))).toEqual(Array.from(await gpu.readF32(a.p)));
      const [sa, sb] = [await a.opt.exportState(), await b.opt.exportState()];
      sa.forEach((t, i) => expect(Array.from(sb[i].data), t.name).toEqual(Array.from(t.data)));

      // Negative control: without the import the fresh optimiser goes elsewhere.
      const c = await make(gpu, kind, `${kind} c`, await gpu.readF32(a.p));
      stepWith(gpu, c, grads[0], 5);
      stepWith(gpu, a, grads[0], 5);
      expect(Array.from(await gpu.readF32(c.p))).not.toEqual(Array.from(await gpu.readF32(a.p)));
    });
  }

  it('refuses state of another shape or optimiser, naming the tensor, and writes nothing', async () => {
    const gpu = await testGpu();
    const rng = new Rng(5);
    const a = await make(gpu, 'adamw', 'refuse a', rng.f32(N, 0.5));
    stepWith(gpu, a, randomGrads(rng), 1);
    const before = await a.opt.exportState();
    const wrong = before.map((t) => (t.name === 'exp_avg_sq' ? { ...t, shape: [N - 256], data: t.data.subarray(0, (N - 256) * 4) } : t));
    expect(() => a.opt.importState('ckpt-7', wrong)).toThrow(CheckpointError);
    expect(() => a.opt.importState('ckpt-7', wrong)).toThrow(/ckpt-7: optimiser state "exp_avg_sq" is F32 \[4864\], expected F32 \[5120\]/);
    const zeros = before.map((t) => ({ ...t, data: new Uint8Array(t.data.length) }));
    expect(() => a.opt.importState('ckpt-7', [zeros[0]])).toThrow(/"exp_avg_sq" is missing/);
    expect(() => a.opt.importState('ckpt-7', [...zeros, { ...zeros[0], name: 'state1' }])).toThrow(/unexpected optimiser state "state1"/);
    const after = await a.opt.exportState();
    after.forEach((t, i) => expect(Array.from(t.data)).toEqual(Array.from(before[i].data)));
  });
});
