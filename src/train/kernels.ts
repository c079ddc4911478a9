import { AttentionBackward } from '../kernels/attention-backward.js';
import { Dropout } from '../kernels/dropout.js';
import type { Gpu } from '../kernels/gpu.js';
import { LoraDown } from '../kernels/lora-down.js';
import { MatmulBackward } from '../kernels/matmul-backward.js';
import type { Qwen3Config } from '../model/config.js';
import type { StoredFormat } from '../kernels/matmul.js';
import type { ComputePath } from '../model/compute-path.js';
import { createModelKernels, modelKernelsOn, type ModelKernels } from '../model/kernels.js';
import { withInputGradient } from '../model/tensor-core-kernels.js';

/** The forward kernels plus the backward-only ones of a training step, compiled once. */
export interface TrainKernels extends ModelKernels {
  readonly matmulBackward: MatmulBackward;
  readonly attentionBackward: AttentionBackward;
  readonly dropout: Dropout;
  readonly loraDown: LoraDown;
}

export interface TrainKernelOptions {
  /** The projections' path (default: `forward`'s, else 'f32'). */
  readonly compute?: ComputePath;
  /** The base's stored weight formats, for the tensor-core kernels (default all four; the lm_head's bf16 is compiled besides, createTensorCoreKernels). */
  readonly formats?: readonly StoredFormat[];
}

/**
 * The training kernels over `forward` (or newly compiled forward kernels). On the tensor-core path
 * (`forward`'s, or options.compute) they include the subgroup-matrix input gradient.
 */
export async function createTrainKernels(gpu: Gpu, config: Qwen3Config, forward?: ModelKernels, options: TrainKernelOptions = {}): Promise<TrainKernels> {
  const compute = options.compute ?? (forward?.tensorCores ? 'tensor-cores' : 'f32');
  const model = forward ? await modelKernelsOn(gpu, forward, compute, options.formats) : await createModelKernels(gpu, config, { compute, formats: options.formats });
  const base = model.tensorCores ? { ...model, tensorCores: await withInputGradient(gpu, model.tensorCores, options.formats ?? model.tensorCores.formats) } : model;
  return Object.freeze({
    ...base,
    matmulBackward: await MatmulBackward.create(gpu),
    attentionBackward: await AttentionBackward.create(gpu, { headDim: config.headDim }),
    dropout: await Dropout.create(gpu),
    loraDown: base.loraDown ?? (await LoraDown.create(gpu)),
  });
}
