import { AttentionBackward } from '../kernels/attention-backward.js';
import { Dropout } from '../kernels/dropout.js';
import type { Gpu } from '../kernels/gpu.js';
import { LoraDown } from '../kernels/lora-down.js';
import { MatmulBackward } from '../kernels/matmul-backward.js';
import type { Qwen3Config } from '../model/config.js';
import { createModelKernels, type ModelKernels } from '../model/kernels.js';

/** The forward kernels plus the backward-only ones of a training step, compiled once. */
export interface TrainKernels extends ModelKernels {
  readonly matmulBackward: MatmulBackward;
  readonly attentionBackward: AttentionBackward;
  readonly dropout: Dropout;
  readonly loraDown: LoraDown;
}

export async function createTrainKernels(gpu: Gpu, config: Qwen3Config, forward?: ModelKernels): Promise<TrainKernels> {
  const base = forward ?? (await createModelKernels(gpu, config));
  return Object.freeze({
    ...base,
    matmulBackward: await MatmulBackward.create(gpu),
    attentionBackward: await AttentionBackward.create(gpu, { headDim: config.headDim }),
    dropout: await Dropout.create(gpu),
    loraDown: await LoraDown.create(gpu),
  });
}
