import { describe, expect, it } from 'vitest';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { checkpointedLayers, describeRecompute, recomputePolicy, type RecomputePolicy } from '../../src/train/recompute.js';
import { Trainer } from '../../src/train/trainer.js';
import { expectRelNorm } from '../helpers/compare.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

describe('recomputation policy', () => {
  it('gradient_checkpointing true/false keep their meaning; k or {checkpoint_layers: k} checkpoints layers 0..k−1', () => {
    expect(checkpointedLayers(recomputePolicy(true), 36)).toBe(36);
    expect(checkpointedLayers(recomputePolicy(false), 36)).toBe(0);
    expect(checkpointedLayers(recomputePolicy(12), 36)).toBe(12);
    expect(checkpointedLayers(recomputePolicy({ checkpoint_layers: 5 }), 36)).toBe(5);
    expect(describeRecompute({ checkpointLayers: 2 }, 4)).toBe('layers 0..1 of 4');
    expect(() => checkpointedLayers({ checkpointLayers: 37 }, 36)).toThrow(/checkpoint_layers = 37.*0 to the model's 36 layers/);
  });

  it('fixture: checkpointing layer 0 only gives the gradients of no checkpointing (1e-6)', async () => {
    const ref = await readReference();
    const [B, T] = ref.get('input_ids')!.shape;
    const batch = {
      inputIds: ref.get('input_ids')!.i32!,
      labels: ref.get('labels')!.i32!,
      positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T),
      segmentIds: new Int32Array(B * T),
    };
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'full' });
    const run = async (recompute: RecomputePolicy) => {
      const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
      const trainer = await Trainer.create(gpu, model, adapter, {
        B,
        T,
        checkpointing: recompute !== 'none',
        recompute,
        optimizer: { kind: 'adamw' },
        hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
        maxGradNorm: 1,
      });
      const targets = trainer.accumulate({ B, T, ...batch, examples: [], targets: 0 });
      const loss = (await trainer.readLossSum()) / targets;
      const grads = await trainer.readGradients();
      trainer.destroy();
      return { loss, grads };
    };
    const none = await run('none');
    const first = await run({ checkpointLayers: 1 });
    expect(first.loss).toBe(none.loss);
    expect(first.grads.size).toBe(28);
    for (const [key, g] of none.grads) expectRelNorm(`per-layer vs none: ${key}`, first.grads.get(key)!, g, 1e-6);
  });
});
