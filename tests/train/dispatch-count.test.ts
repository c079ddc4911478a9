import { describe, expect, it } from 'vitest';
import { PROJECTIONS } from '../../src/model/checkpoint.js';
import { createLoraAdapter } from '../../src/model/lora-init.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { countStepDispatches } from '../../src/train/dispatch-count.js';
import { deviceLossHead } from '../../src/train/step-settings.js';
import { chooseLossChunk } from '../../src/model/loss-head.js';
import { formatPlan, planStep, withDispatchCounts } from '../../src/train/plan.js';
import type { RecomputePolicy } from '../../src/train/recompute.js';
import { createTrainKernels } from '../../src/train/kernels.js';
import { Trainer } from '../../src/train/trainer.js';
import { TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The plan's dispatch counts are those of the lists the real Trainer records: counted on the
 * recording device (nothing allocated, nothing run) before the model is loaded, they equal the
 * counts of a Trainer built on the real device for the same plan, for every recomputation policy,
 * with and without LoRA dropout, for both optimisers.
 */
describe('dispatch counts of the plan = the recorded dispatch lists (fixture)', () => {
  it('none/full/per-layer × dropout × adamw/adamw_8bit', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    const c = model.config;
    const kernels = await createTrainKernels(gpu, c, model.kernels);
    const [B, T, r] = [2, 24, 4];
    const seen = new Set<number>();
    for (const recompute of ['none', 'full', { checkpointLayers: 1 }] as RecomputePolicy[]) {
      for (const dropout of [0, 0.1]) {
        for (const optimizer of ['adamw', 'adamw_8bit'] as const) {
          const plan = planStep(c, {
            batch: B,
            seq: T,
            r,
            targets: PROJECTIONS,
            gradientCheckpointing: recompute !== 'none',
            recompute,
            optimizer,
            base: 'nf4',
            doubleQuant: false,
            lossChunkTokens: chooseLossChunk(gpu, B * T, c.vocabSize),
            loraDropout: dropout,
            lossHead: deviceLossHead(gpu, c),
          });
          const counted = await countStepDispatches(gpu, c, plan);
          const adapter = createLoraAdapter(gpu, c, { r, alpha: 2 * r, dropout, targetModules: PROJECTIONS, useRslora: false }, 1);
          const trainer = await Trainer.create(gpu, model, adapter, {
            B,
            T,
            checkpointing: recompute !== 'none',
            recompute,
            lossChunkTokens: plan.settings.lossChunkTokens,
            optimizer: { kind: optimizer },
            hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
            maxGradNorm: 1,
            plan,
          }, kernels);
          const what = `${JSON.stringify(recompute)} dropout ${dropout} ${optimizer}`;
          expect(counted, what).toEqual(trainer.dispatchCounts);
          expect(trainer.dispatchCounts.forward + trainer.dispatchCounts.lossHead + trainer.dispatchCounts.backward, what).toBe(trainer.program.dispatchCount);
          expect(counted.forward, what).toBeGreaterThan(c.numHiddenLayers * 7);
          expect(counted.optimizerStep, what).toBeGreaterThan(0);
          expect(formatPlan(withDispatchCounts(plan, counted)), what).toContain(`${counted.microBatch} dispatches per micro-batch`);
          seen.add(counted.backward);
          trainer.destroy();
        }
      }
    }
    // Recomputation and dropout add dispatches to the backward: the counts follow the settings.
    expect(seen.size).toBeGreaterThanOrEqual(4);
  }, 120_000);
});
