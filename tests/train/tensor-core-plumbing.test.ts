import { describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/kernels/gpu.js';
import type { MatmulSgm, MatmulSgmCall } from '../../src/kernels/matmul-sgm.js';
import type { MatmulSgmInput, SgmInputCallOptions, SgmInputGradTensors } from '../../src/kernels/matmul-sgm-input.js';
import { RowScale } from '../../src/kernels/row-scale.js';
import { numel, type Tensor } from '../../src/kernels/tensor.js';
import { loadLoraAdapter, type LoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { ForwardProgram } from '../../src/model/forward.js';
import { createTrainKernels, type TrainKernels } from '../../src/train/kernels.js';
import { Trainer } from '../../src/train/trainer.js';
import { expectRelNorm } from '../helpers/compare.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The tensor-core path's plumbing on lavapipe, which has no subgroup matrices: the step, the
 * evaluation forward and the backward are built on the tensor-core path (row-scale dispatches
 * with the real RowScale kernel into the planned buffer, the base matmuls and their dX through
 * `tensorCores`, the LoRA term of dX added in f32 on its own, with and without dropout), with the
 * subgroup-matrix kernels replaced by f32 stand-ins that check the row-scale tensor they get and
 * then run the f32 Matmul / MatmulBackward. So the loss equals the f32 path's exactly (the forward
 * runs the same matmuls) and every LoRA gradient agrees to f32 rounding (dX's LoRA term is summed
 * in a second pass instead of inside the dy·W pass). The subgroup-matrix kernels themselves are
 * tested on the GPU host (tests/gpu/).
 */
function standIns(gpu: Gpu, k: TrainKernels, rowScale: RowScale, seen: { forward: number; input: number; rowScale: number }): TrainKernels {
  const rowsOf = (t: Tensor): number => numel(t.shape) / t.shape[t.shape.length - 1];
  const expectScales = (label: string, scales: Tensor, x: Tensor): void => {
    if (scales.dtype !== 'f32' || numel(scales.shape) !== rowsOf(x)) throw new Error(`${label}: row scales [${scales.shape.join(', ')}] for ${rowsOf(x)} rows`);
  };
  const matmul = {
    forward: (label: string, call: MatmulSgmCall) => {
      expectScales(label, call.rowScale, call.x);
      seen.forward++;
      return k.matmul.forward(label, { y: call.y, x: call.x, w: call.w, accumulate: call.accumulate, lora: call.lora });
    },
  } as unknown as MatmulSgm;
  const input = {
    input: (label: string, t: SgmInputGradTensors, o: SgmInputCallOptions = {}) => {
      expectScales(label, t.rowScale, t.dy);
      seen.input++;
      return [k.matmulBackward.input(label, { dx: t.dx, dy: t.dy, w: t.w }, { accumulate: o.accumulate, scale: o.scale })];
    },
  } as unknown as MatmulSgmInput;
  const counted = {
    forward: (...args: Parameters<RowScale['forward']>) => {
      seen.rowScale++;
      return rowScale.forward(...args);
    },
  } as unknown as RowScale;
  void gpu;
  return Object.freeze({ ...k, tensorCores: { matmul, rowScale: counted, input } });
}

describe('tensor-core path plumbing (f32 stand-ins for the subgroup-matrix kernels)', () => {
  const run = async (kernels: TrainKernels, model: Qwen3Model, adapter: LoraAdapter, batch: Parameters<Trainer['accumulate']>[0], B: number, T: number, checkpointing: boolean, savedF16?: boolean) => {
    const trainer = await Trainer.create(model.gpu, model, adapter, { B, T, checkpointing, optimizer: { kind: 'adamw' }, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, maxGradNorm: 1, seed: 5, savedF16 }, kernels);
    const targets = trainer.accumulate(batch);
    const loss = (await trainer.readLossSum()) / targets;
    const grads = await trainer.readGradients();
    const dispatches = trainer.program.dispatchCount;
    const planned = trainer.program.plan.map((b) => b.name);
    trainer.destroy();
    return { loss, grads, dispatches, planned };
  };

  for (const dropout of [0, 0.1]) {
    it(`NF4 base, checkpointing on and off, lora_dropout ${dropout}: loss equal, gradients within f32 rounding, one row scale per distinct input`, async () => {
      const gpu = await testGpu();
      const ref = await readReference();
      const [B, T] = ref.get('input_ids')!.shape;
      const batch = {
        B,
        T,
        inputIds: ref.get('input_ids')!.i32!,
        labels: ref.get('labels')!.i32!,
        positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T),
        segmentIds: new Int32Array(B * T),
        examples: [],
        targets: 0,
      };
      const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
      const f32 = await createTrainKernels(gpu, model.config, model.kernels);
      expect(f32.tensorCores).toBeUndefined();
      const seen = { forward: 0, input: 0, rowScale: 0 };
      const tc = standIns(gpu, f32, await RowScale.create(gpu), seen);
      const adapterOf = async (): Promise<LoraAdapter> => {
        const a = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
        return { ...a, config: { ...a.config, dropout } };
      };
      const L = model.config.numHiddenLayers;
      for (const checkpointing of [true, false]) {
        const base = await run(f32, model, await adapterOf(), batch, B, T, checkpointing);
        Object.assign(seen, { forward: 0, input: 0, rowScale: 0 });
        // the saved activations in f32 (the tensor-core path's default f16 copies, saved-f16.test.ts, carry f16 rounding)
        const cores = await run(tc, model, await adapterOf(), batch, B, T, checkpointing, false);
        const what = `checkpointing ${checkpointing}, dropout ${dropout}`;
        expect(cores.planned.filter((n) => n.startsWith('row scale')), what).toHaveLength(1);
        expect(base.planned.filter((n) => n.startsWith('row scale')), what).toHaveLength(0);
        // forward: 7 projections per layer (recomputed: 6 more, down_proj's base is not rerun); backward: 7 dX per layer
        expect(seen.forward, what).toBe(7 * L + (checkpointing ? 6 * L : 0));
        expect(seen.input, what).toBe(7 * L);
        // row scales: hn1, attn, hn2, act per layer (recomputed: hn1, attn, hn2), one per dy in the backward
        expect(seen.rowScale, what).toBe(4 * L + (checkpointing ? 3 * L : 0) + 7 * L);
        expect(cores.loss, what).toBe(base.loss);
        expect(cores.grads.size).toBe(base.grads.size);
        for (const [key, g] of base.grads) expectRelNorm(`${what}: ${key}`, cores.grads.get(key)!, g, 1e-5);
        // the path's default: saved layers keep F16_SAVED in f16 (none saved under full checkpointing)
        const packed = await run(tc, model, await adapterOf(), batch, B, T, checkpointing);
        expect(packed.planned.some((n) => n.endsWith('f16')), what).toBe(!checkpointing);
        expect(packed.loss, what).toBe(base.loss);
        for (const [key, g] of base.grads) expectRelNorm(`${what}, f16 saved activations: ${key}`, packed.grads.get(key)!, g, checkpointing ? 1e-5 : 3e-3);
      }
    }, 120_000);
  }

  it('the evaluation forward on the tensor-core path: the same loss and last-position logits', async () => {
    const gpu = await testGpu();
    const ref = await readReference();
    const [B, T] = ref.get('input_ids')!.shape;
    const batch = { B, T, inputIds: ref.get('input_ids')!.i32!, labels: ref.get('labels')!.i32! };
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    const f32 = await createTrainKernels(gpu, model.config, model.kernels);
    const seen = { forward: 0, input: 0, rowScale: 0 };
    const tc = standIns(gpu, f32, await RowScale.create(gpu), seen);
    const results = [];
    for (const k of [f32, tc]) {
      const program = ForwardProgram.build(gpu, k, model.weights, adapter, { B, T, logitsLast: true });
      results.push(await program.run(batch));
      program.destroy();
    }
    expect(seen.forward).toBe(7 * model.config.numHiddenLayers);
    expect(seen.rowScale).toBe(4 * model.config.numHiddenLayers);
    expect(results[1].loss).toBe(results[0].loss);
    expectRelNorm('logits_last', results[1].logitsLast!, results[0].logitsLast!, 0);
  });
});
