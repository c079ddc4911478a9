import type { Gpu } from '../kernels/gpu.js';
import type { Batch } from '../batch.js';
import { ForwardProgram, type ForwardResult, type ForwardShape } from './forward.js';
import { createModelKernels, type ModelKernels } from './kernels.js';
import { loadModelWeights, type LoadOptions } from './load.js';
import type { LoraAdapter } from './lora.js';
import type { ModelWeights } from './weights.js';
import type { Qwen3Config } from './config.js';
import type { ComputePath } from './compute-path.js';
import { baseStoredFormats } from './tensor-core-kernels.js';
import type { TensorSource } from './tensor-source.js';

/** Options of a one-off forward call. */
export interface ForwardOptions {
  readonly adapter?: LoraAdapter;
  readonly logitsLast?: boolean;
  readonly captureLayers?: boolean;
}

/**
 * A Qwen3 model on the GPU: its frozen weights (NF4 or full-precision base) and compiled kernels.
 * `program` builds a reusable forward pass for one batch shape; `forward` is the one-off form.
 */
export class Qwen3Model {
  private constructor(
    readonly gpu: Gpu,
    readonly weights: ModelWeights,
    readonly kernels: ModelKernels,
  ) {}

  /** Loads a checkpoint folder, or any TensorSource (e.g. RandomQwen3Source); `compute` picks the projections' path (default 'f32'). */
  static async load(gpu: Gpu, from: string | TensorSource, options: LoadOptions & { readonly compute?: ComputePath } = {}): Promise<Qwen3Model> {
    const weights = await loadModelWeights(gpu, from, options);
    const formats = baseStoredFormats(weights.base, weights.doubleQuant);
    return new Qwen3Model(gpu, weights, await createModelKernels(gpu, weights.config, { compute: options.compute, formats }));
  }

  get config(): Qwen3Config {
    return this.weights.config;
  }

  /** A forward pass for batches of shape (B, T), buffers and dispatches built once. */
  program(shape: ForwardShape, adapter?: LoraAdapter): ForwardProgram {
    return ForwardProgram.build(this.gpu, this.kernels, this.weights, adapter, shape);
  }

  /** Loss (and optionally logits at the last positions and per-layer outputs) for one batch. */
  async forward(batch: Batch & { B: number; T: number }, options: ForwardOptions = {}): Promise<ForwardResult> {
    const maxPosition = batch.positionIds ? Math.max(batch.T, ...batch.positionIds) + 1 : batch.T;
    const program = this.program({ B: batch.B, T: batch.T, maxPosition, logitsLast: options.logitsLast, captureLayers: options.captureLayers }, options.adapter);
    try {
      return await program.run(batch);
    } finally {
      program.destroy();
    }
  }
}
