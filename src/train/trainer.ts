import { ConfigError } from '../errors.js';
import { encodeDispatches } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import type { Batch } from '../model/forward.js';
import type { LoraAdapter } from '../model/lora.js';
import type { Qwen3Model } from '../model/qwen3.js';
import { AdamwOptimizer, type AdamwHyper, type AdamwVariant } from './adamw.js';
import { Adamw8bitOptimizer } from './adamw8bit.js';
import { createGradNormState, GradNorm, readGradNormState, type GradNormProgram, type GradNormReadout } from './grad-norm.js';
import { createTrainKernels, type TrainKernels } from './kernels.js';
import { moveLoraToArena, type ArenaLoraAdapter } from './param-arena.js';
import { TrainStep } from './step.js';

export interface TrainerOptions {
  readonly B: number;
  readonly T: number;
  readonly checkpointing: boolean;
  readonly optimizer: { readonly kind: 'adamw' | 'adamw_8bit'; readonly variant?: AdamwVariant };
  readonly hyper: AdamwHyper;
  /** max_grad_norm (0 = no clipping). */
  readonly maxGradNorm: number;
  readonly lossChunkTokens?: number;
  /** Seed of the LoRA-dropout masks (each micro-batch derives its own from it and its index). */
  readonly seed?: number;
}

type Optimizer = AdamwOptimizer | Adamw8bitOptimizer;

/**
 * The training loop's GPU side: the adapter in one parameter arena, the micro-batch program
 * (forward + backward, gradients added into the arena), the gradient-norm + clipping program and the
 * optimiser. Per optimiser step: `accumulate` each micro-batch (one submit each, no readback), then
 * `step(lr)`: scale by 1 / (target tokens of all the micro-batches), clip, update, clear.
 */
export class Trainer {
  private targets = 0;
  private steps = 0;
  private cleared = false;
  private microBatches = 0;

  private constructor(
    private readonly gpu: Gpu,
    readonly adapter: ArenaLoraAdapter,
    readonly program: TrainStep,
    private readonly norm: GradNormProgram,
    readonly normState: ReturnType<typeof createGradNormState>,
    private readonly optimizer: Optimizer,
    private readonly seed: number,
  ) {}

  static async create(gpu: Gpu, model: Qwen3Model, adapter: LoraAdapter, options: TrainerOptions, kernels?: TrainKernels): Promise<Trainer> {
    const k = kernels ?? (await createTrainKernels(gpu, model.config, model.kernels));
    const arena = moveLoraToArena(gpu, 'lora', adapter, { destroySource: true });
    const program = TrainStep.build(gpu, k, model.weights, arena.adapter, arena.grads, { B: options.B, T: options.T, checkpointing: options.checkpointing, lossChunkTokens: options.lossChunkTokens });
    const normState = createGradNormState(gpu, 'grad norm');
    const norm = (await GradNorm.create(gpu)).bind('grad norm', { state: normState, grads: arena.arena.grads }, { maxNorm: options.maxGradNorm });
    const target = { params: arena.arena.params, grads: arena.arena.grads, slots: arena.arena.layout.slots };
    const optimizer: Optimizer =
      options.optimizer.kind === 'adamw'
        ? await AdamwOptimizer.create(gpu, 'adamw', target, normState, options.hyper, { variant: options.optimizer.variant })
        : await Adamw8bitOptimizer.create(gpu, 'adamw8bit', target, normState, options.hyper);
    return new Trainer(gpu, arena, program, norm, normState, optimizer, options.seed ?? 0);
  }

  /** The adapter whose tensors are the live (trained) parameters. */
  get lora(): LoraAdapter {
    return this.adapter.adapter;
  }

  /** Forward + backward of one micro-batch, gradients added; returns its target tokens. */
  accumulate(batch: Batch): number {
    // The dropout seed of micro-batch i: a fixed function of (seed, i), so a resumed run that
    // restores the counter draws the same masks.
    const n = this.program.upload(batch, (Math.imul(this.seed + 1, 0x9e3779b1) ^ this.microBatches++) >>> 0);
    const enc = this.gpu.device.createCommandEncoder({ label: 'micro-batch' });
    if (!this.cleared) {
      this.adapter.arena.encodeClearGrads(enc);
      this.cleared = true;
    }
    this.program.encode(enc);
    this.gpu.device.queue.submit([enc.finish()]);
    this.targets += n;
    return n;
  }

  /** Micro-batches run so far (part of the state a checkpoint saves). */
  get microBatchCount(): number {
    return this.microBatches;
  }

  /** Target tokens accumulated since the last optimiser step. */
  get pendingTargets(): number {
    return this.targets;
  }

  /** Mean-loss gradients of the accumulated micro-batches by PEFT key (tests, inspect --grads). */
  async readGradients(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    const scale = this.targets > 0 ? 1 / this.targets : 0;
    const all = await this.gpu.readF32(this.adapter.arena.grads);
    for (const slot of this.adapter.arena.layout.slots) {
      out.set(slot.name, Float32Array.from(all.subarray(slot.offset, slot.offset + slot.count), (g) => g * scale));
    }
    return out;
  }

  /** The live parameters by PEFT key. */
  async readParameters(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    const all = await this.gpu.readF32(this.adapter.arena.params);
    for (const slot of this.adapter.arena.layout.slots) out.set(slot.name, all.slice(slot.offset, slot.offset + slot.count));
    return out;
  }

  /** One optimiser update with learning rate `lr`, then the gradients start again from zero. */
  step(lr: number): void {
    if (this.targets === 0) throw new ConfigError('optimiser step without any target token: every label of the accumulated micro-batches is -100');
    const gradScale = 1 / this.targets;
    this.steps++;
    this.norm.setGradScale(gradScale);
    this.optimizer.setStep({ lr, step: this.steps, gradScale });
    const enc = this.gpu.device.createCommandEncoder({ label: 'optimizer step' });
    encodeDispatches(this.gpu, enc, [...this.norm.dispatches, ...this.optimizer.dispatches]);
    this.gpu.device.queue.submit([enc.finish()]);
    this.targets = 0;
    this.cleared = false;
  }

  /** Gradient norm, clip coefficient and non-finite flag of the last step (a readback). */
  async readGradNorm(): Promise<GradNormReadout> {
    return readGradNormState(this.gpu, this.normState);
  }

  /** Σ token loss of the last micro-batch (a readback). */
  readLossSum(): Promise<number> {
    return this.program.readLossSum();
  }

  destroy(): void {
    this.program.destroy();
    this.adapter.arena.destroy();
  }
}
