import { describe, expect, it } from 'vitest';
import { loadLoraAdapter, type LoraAdapter, type LoraPair } from '../../src/model/lora.js';
import type { Projection } from '../../src/model/checkpoint.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { createTrainKernels } from '../../src/train/kernels.js';
import { planStep, type PlanCategory } from '../../src/train/plan.js';
import type { RecomputePolicy } from '../../src/train/recompute.js';
import { TrainStep } from '../../src/train/step.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The plan is the allocation: for the fixture model, the bytes the memory plan lists per category
 * (saved activations, scratch, inputs) equal the bytes TrainStep.build allocates, for every
 * recomputation policy, with and without LoRA dropout, for the fused and the chunked loss head.
 * (Buffers the kernels own, the matmul-backward split scratch, are listed but not the step's.)
 */
describe('memory plan = the step allocation (fixture)', () => {
  it('saved, scratch and inputs bytes match for none/full/per-layer × dropout × loss head', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    const k = await createTrainKernels(gpu, model.config, model.kernels);
    const base = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    const grads = base.layers.map((layer) =>
      Object.fromEntries(Object.entries(layer).map(([p, pair]) => [p, { a: gpu.tensor(`dA ${p}`, [...pair!.a.shape], 'f32'), b: gpu.tensor(`dB ${p}`, [...pair!.b.shape], 'f32') }])),
    ) as Partial<Record<Projection, LoraPair>>[];
    const heads = k.crossEntropyFused ? (['fused', 'chunked'] as const) : (['chunked'] as const);
    let cases = 0;
    for (const recompute of ['none', 'full', { checkpointLayers: 1 }] as RecomputePolicy[]) {
      for (const dropout of [0, 0.1]) {
        for (const lossHead of heads) {
          const adapter: LoraAdapter = { ...base, config: { ...base.config, dropout } };
          const [B, T] = [2, 24];
          const step = TrainStep.build(gpu, k, model.weights, adapter, grads, { B, T, checkpointing: recompute !== 'none', recompute, lossHead });
          const plan = planStep(model.config, {
            batch: B,
            seq: T,
            r: adapter.config.r,
            targets: adapter.config.targetModules,
            gradientCheckpointing: recompute !== 'none',
            recompute,
            optimizer: 'adamw',
            base: 'nf4',
            doubleQuant: model.weights.doubleQuant,
            lossChunkTokens: step.shape.lossChunkTokens,
            loraDropout: dropout,
            lossHead: step.shape.lossHead,
          });
          const planned = (cat: PlanCategory) => plan.buffers.filter((b) => b.category === cat && b.allocatedBy === undefined).reduce((a, b) => a + b.bytes * b.count, 0);
          const allocated = (cat: PlanCategory) => step.allocations.filter((a) => a.category === cat).reduce((a, b) => a + b.bytes, 0);
          const what = `${JSON.stringify(recompute)}, dropout ${dropout}, ${lossHead} head`;
          for (const cat of ['saved', 'scratch', 'inputs'] as const) expect(allocated(cat), `${what}: ${cat}`).toBe(planned(cat));
          expect(step.bytes, what).toBe(planned('saved') + planned('scratch') + planned('inputs'));
          step.destroy();
          cases++;
        }
      }
    }
    expect(cases).toBe(3 * 2 * heads.length);
  });
});
