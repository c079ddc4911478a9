import { Attention } from '../kernels/attention.js';
import { CrossEntropy } from '../kernels/cross-entropy.js';
import { CrossEntropyFused, fusedHeadUnsupported } from '../kernels/cross-entropy-fused.js';
import { Embedding } from '../kernels/embedding.js';
import { F16Pack } from '../kernels/f16-pack.js';
import { GatherRows } from '../kernels/gather-rows.js';
import { LoraDown } from '../kernels/lora-down.js';
import type { Gpu } from '../kernels/gpu.js';
import { Matmul } from '../kernels/matmul.js';
import { SumReduce } from '../kernels/reduce.js';
import { Rmsnorm } from '../kernels/rmsnorm.js';
import { Rope } from '../kernels/rope.js';
import { Swiglu } from '../kernels/swiglu.js';
import type { StoredFormat } from '../kernels/matmul.js';
import type { ComputePath } from './compute-path.js';
import type { Qwen3Config } from './config.js';
import { createTensorCoreKernels, type TensorCoreKernels } from './tensor-core-kernels.js';

/** Every pipeline the model's forward pass uses, compiled once per run. */
export interface ModelKernels {
  readonly embedding: Embedding;
  readonly rmsnorm: Rmsnorm;
  readonly rope: Rope;
  readonly attention: Attention;
  readonly matmul: Matmul;
  readonly swiglu: Swiglu;
  readonly crossEntropy: CrossEntropy;
  /** The fused lm_head + cross-entropy of CPU adapters (lavapipe); absent where the adapter cannot run it. */
  readonly crossEntropyFused?: CrossEntropyFused;
  readonly sum: SumReduce;
  readonly gatherRows: GatherRows;
  /** U = x·Aᵀ of the LoRA projections (src/kernels/lora-down.ts) in place of a lora_A matmul each. */
  readonly loraDown?: LoraDown;
  /** f16 storage of saved activations (Saved.packed); present where the device has shader-f16. */
  readonly f16Pack?: F16Pack;
  /**
   * The tensor-core path's kernels (src/model/compute-path.ts): present exactly when the base
   * projections run on subgroup matrices; the programs built from these kernels take that path.
   */
  readonly tensorCores?: TensorCoreKernels;
}

export interface ModelKernelOptions {
  /** The projections' path (default 'f32'). */
  readonly compute?: ComputePath;
  /** The base's stored weight formats, for the tensor-core kernels (default all four; the lm_head's bf16 is compiled besides, createTensorCoreKernels). */
  readonly formats?: readonly StoredFormat[];
}

export async function createModelKernels(gpu: Gpu, config: Qwen3Config, options: ModelKernelOptions = {}): Promise<ModelKernels> {
  const [embedding, rmsnorm, rope, attention, matmul, swiglu, crossEntropy, sum, gatherRows, loraDown] = await Promise.all([
    Embedding.create(gpu),
    Rmsnorm.create(gpu),
    Rope.create(gpu, { headDim: config.headDim }),
    Attention.create(gpu, { headDim: config.headDim }),
    Matmul.create(gpu),
    Swiglu.create(gpu),
    CrossEntropy.create(gpu),
    SumReduce.create(gpu),
    GatherRows.create(gpu),
    LoraDown.create(gpu),
  ]);
  const crossEntropyFused = fusedHeadUnsupported(gpu) === undefined ? await CrossEntropyFused.create(gpu) : undefined;
  const f16Pack = gpu.has('shader-f16') ? await F16Pack.create(gpu) : undefined;
  const tensorCores = options.compute === 'tensor-cores' ? await createTensorCoreKernels(gpu, { formats: options.formats, headDim: config.headDim }) : undefined;
  return Object.freeze({ embedding, rmsnorm, rope, attention, matmul, swiglu, crossEntropy, crossEntropyFused, sum, gatherRows, loraDown, f16Pack, tensorCores });
}

/**
 * `k` on `path`: the same kernels without the tensor-core ones ('f32'), or with them, compiled
 * now unless `k` has them ('tensor-cores'): for running both paths over one model (tests, bench).
 */
export async function modelKernelsOn(gpu: Gpu, k: ModelKernels, path: ComputePath, formats?: readonly StoredFormat[]): Promise<ModelKernels> {
  if (path === 'f32') return Object.freeze({ ...k, tensorCores: undefined });
  return k.tensorCores ? k : Object.freeze({ ...k, tensorCores: await createTensorCoreKernels(gpu, { formats, headDim: k.attention.headDim }) });
}

/** The path kernels `k` take. */
export function kernelsComputePath(k: Pick<ModelKernels, 'tensorCores'>): ComputePath {
  return k.tensorCores ? 'tensor-cores' : 'f32';
}
