import type { Gpu } from '../kernels/gpu.js';
import type { LinearWeight } from '../kernels/matmul.js';
import { recordingGpu } from '../kernels/recording-device.js';
import type { Tensor } from '../kernels/tensor.js';
import { PROJECTIONS, projectionShape, type Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import type { LoraAdapter, LoraPair } from '../model/lora.js';
import type { Qwen3Model } from '../model/qwen3.js';
import type { LayerWeights, ModelWeights } from '../model/weights.js';
import { createTrainKernels } from './kernels.js';
import { baseStoredFormats } from '../model/tensor-core-kernels.js';
import type { StepPlan } from './plan.js';
import { Trainer, type TrainerDispatchCounts } from './trainer.js';

/**
 * The dispatch counts of a run's step, before anything exists on the GPU: the Trainer is built
 * from `plan` on a recording device (src/kernels/recording-device.ts) with `like`'s adapter,
 * features and limits — the same kernels, tile choices and split plans, placeholder weights of the
 * model's shapes — and its recorded dispatch lists are counted. So the plan's counts are those of
 * the lists the real step replays, not a formula beside them.
 */
export async function countStepDispatches(like: Gpu, c: Qwen3Config, plan: StepPlan): Promise<TrainerDispatchCounts> {
  const { gpu } = recordingGpu(like);
  const s = plan.settings;
  const kernels = await createTrainKernels(gpu, c, undefined, { compute: s.compute ?? 'f32', formats: baseStoredFormats(s.base, s.doubleQuant) });
  const weights = placeholderWeights(gpu, c, s.base, s.doubleQuant);
  const model = { config: c, weights, kernels } as unknown as Qwen3Model;
  const trainer = await Trainer.create(
    gpu,
    model,
    placeholderAdapter(gpu, c, s.r, s.targets, s.loraDropout),
    {
      B: s.batch,
      T: s.seq,
      checkpointing: s.gradientCheckpointing,
      recompute: s.recompute,
      lossChunkTokens: s.lossChunkTokens,
      optimizer: { kind: s.optimizer },
      hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
      maxGradNorm: 1,
      plan,
    },
    kernels,
  );
  return trainer.dispatchCounts;
}

/** Weights of the model's shapes in the formats the loader gives them (bf16 norms, embedding and a full base; NF4 + absmax). */
export function placeholderWeights(gpu: Gpu, c: Qwen3Config, base: 'nf4' | 'full', doubleQuant: boolean): ModelWeights {
  const bf16 = (name: string, shape: number[]): Tensor => gpu.tensor(name, shape, 'bf16x2');
  const projection = (l: number, p: Projection): LinearWeight => {
    const [nOut, k] = projectionShape(c, p);
    const name = `L${l} ${p}`;
    if (base === 'full') return { format: 'bf16', nOut, k, data: bf16(name, [nOut, k]) };
    const blocks = (nOut * k) / 64;
    const data = gpu.tensor(name, [nOut, k], 'nf4x8');
    return doubleQuant
      ? { format: 'nf4', nOut, k, data, doubleQuant: { codes: gpu.tensor(`${name} codes`, [blocks], 'u8x4'), absmax2: gpu.tensor(`${name} absmax2`, [Math.ceil(blocks / 256)], 'f32'), offset: 0 } }
      : { format: 'nf4', nOut, k, data, absmax: gpu.tensor(`${name} absmax`, [blocks], 'f32') };
  };
  const D = c.hiddenSize;
  const layers: LayerWeights[] = Array.from({ length: c.numHiddenLayers }, (_, l) => ({
    inputNorm: bf16('input_layernorm', [D]),
    postNorm: bf16('post_attention_layernorm', [D]),
    qNorm: bf16('q_norm', [c.headDim]),
    kNorm: bf16('k_norm', [c.headDim]),
    proj: Object.fromEntries(PROJECTIONS.map((p) => [p, projection(l, p)])) as Record<Projection, LinearWeight>,
  }));
  const embed = bf16('embed_tokens', [c.vocabSize, D]);
  const lmHead: LinearWeight = { format: 'bf16', nOut: c.vocabSize, k: D, data: c.tieWordEmbeddings ? embed : bf16('lm_head', [c.vocabSize, D]) };
  return { config: c, base, doubleQuant: base === 'nf4' && doubleQuant, embed, finalNorm: bf16('norm', [D]), lmHead, layers, bytes: 0 };
}

export function placeholderAdapter(gpu: Gpu, c: Qwen3Config, r: number, targets: readonly Projection[], dropout: number): LoraAdapter {
  const layers = Array.from({ length: c.numHiddenLayers }, () => {
    const pairs: Partial<Record<Projection, LoraPair>> = {};
    for (const p of targets) {
      const [o, k] = projectionShape(c, p);
      pairs[p] = { a: gpu.tensor(`${p} lora_A`, [r, k], 'f32'), b: gpu.tensor(`${p} lora_B`, [o, r], 'f32') };
    }
    return pairs;
  });
  return { config: { r, alpha: r, dropout, targetModules: targets, useRslora: false }, scale: 1, layers };
}
