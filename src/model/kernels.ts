import { Attention } from '../kernels/attention.js';
import { CrossEntropy } from '../kernels/cross-entropy.js';
import { CrossEntropyFused, fusedHeadUnsupported } from '../kernels/cross-entropy-fused.js';
import { Embedding } from '../kernels/embedding.js';
import { GatherRows } from '../kernels/gather-rows.js';
import type { Gpu } from '../kernels/gpu.js';
import { Matmul } from '../kernels/matmul.js';
import { SumReduce } from '../kernels/reduce.js';
import { Rmsnorm } from '../kernels/rmsnorm.js';
import { Rope } from '../kernels/rope.js';
import { Swiglu } from '../kernels/swiglu.js';
import type { Qwen3Config } from './config.js';

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
}

export async function createModelKernels(gpu: Gpu, config: Qwen3Config): Promise<ModelKernels> {
  const [embedding, rmsnorm, rope, attention, matmul, swiglu, crossEntropy, sum, gatherRows] = await Promise.all([
    Embedding.create(gpu),
    Rmsnorm.create(gpu),
    Rope.create(gpu, { headDim: config.headDim }),
    Attention.create(gpu, { headDim: config.headDim }),
    Matmul.create(gpu),
    Swiglu.create(gpu),
    CrossEntropy.create(gpu),
    SumReduce.create(gpu),
    GatherRows.create(gpu),
  ]);
  const crossEntropyFused = fusedHeadUnsupported(gpu) === undefined ? await CrossEntropyFused.create(gpu) : undefined;
  return Object.freeze({ embedding, rmsnorm, rope, attention, matmul, swiglu, crossEntropy, crossEntropyFused, sum, gatherRows });
}
