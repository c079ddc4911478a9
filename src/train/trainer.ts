import type { RecomputePolicy } from './recompute.js';
import { CheckpointError, ConfigError } from '../errors.js';
import { encodeDispatches, type Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import type { Tensor } from '../kernels/tensor.js';
import type { Batch } from '../batch.js';
import type { LoraAdapter } from '../model/lora.js';
import type { Qwen3Model } from '../model/qwen3.js';
import { AdamwOptimizer, type AdamwHyper, type AdamwVariant } from './adamw.js';
import { Adamw8bitOptimizer } from './adamw8bit.js';
import { createGradNormState, GradNorm, GRAD_NORM_STATE_WORDS, readGradNormState, type GradNormProgram, type GradNormReadout } from './grad-norm.js';
import { createTrainKernels, type TrainKernels } from './kernels.js';
import type { StateTensor } from './optimizer-state.js';
import { loraArenaSpecs, moveLoraToArena, planArena, type ArenaLoraAdapter } from './param-arena.js';
import { TRAINER_STATE_LABELS, trainerStateEntries, type StepPlan } from './plan.js';
import { TrainStep } from './step.js';
import { planDifferences, planRunningSums, TRAINER_BUFFERS } from './step-plan.js';
import { allocatePlan, type PlanAllocation } from '../model/buffer-plan.js';

export interface TrainerOptions {
  readonly B: number;
  readonly T: number;
  readonly checkpointing: boolean;
  /** Which layers are recomputed (src/train/recompute.ts); default from `checkpointing`. */
  readonly recompute?: RecomputePolicy;
  readonly optimizer: { readonly kind: 'adamw' | 'adamw_8bit'; readonly variant?: AdamwVariant };
  readonly hyper: AdamwHyper;
  /** max_grad_norm (0 = no clipping). */
  readonly maxGradNorm: number;
  readonly lossChunkTokens?: number;
  /** Seed of the LoRA-dropout masks (each micro-batch derives its own from it and its index). */
  readonly seed?: number;
  /** The run's memory plan (planStep, as printed): the micro-batch program allocates its buffers from it. */
  readonly plan?: StepPlan;
  /** Keep the saved layers' F16_SAVED activations in f16 (default: the plan's, else savesF16: on the tensor-core path). */
  readonly savedF16?: boolean;
}

type Optimizer = AdamwOptimizer | Adamw8bitOptimizer;

/** Dispatches the Trainer records: per micro-batch (its step's phases and the two running sums) and per optimiser step. */
export interface TrainerDispatchCounts {
  readonly forward: number;
  readonly lossHead: number;
  readonly backward: number;
  /** lossAccum += loss sum, correctAccum += correct count. */
  readonly runningSums: number;
  /** forward + lossHead + backward + runningSums: one micro-batch's submit. */
  readonly microBatch: number;
  /** Gradient norm and clipping, then the optimiser update: one optimiser step's submit. */
  readonly optimizerStep: number;
}

/**
 * Everything of a Trainer that a checkpoint must hold to continue bit for bit (the data position,
 * schedule and histories are the loop's). Plain host data.
 */
export interface TrainerState {
  /** The LoRA parameters by PEFT key, (R, K) / (Nout, R) f32 row-major. */
  readonly params: ReadonlyMap<string, Float32Array>;
  /** The optimiser's buffers (AdamW: exp_avg, exp_avg_sq; 8-bit: codes, absmax, small moments). */
  readonly optimizer: readonly StateTensor[];
  /** Optimiser updates so far: t of the last update (bias corrections use it). */
  readonly optimizerSteps: number;
  /** Micro-batches run so far: micro-batch i draws its LoRA-dropout masks from (seed, i). */
  readonly microBatches: number;
  /** (4) u32 GradNormState: totalNorm, clipCoef, nonFinite, skippedSteps (the sticky counter). */
  readonly gradNorm: Uint32Array;
  /**
   * The running loss sum since the last readLoss(reset), its target tokens and (absent in
   * checkpoints written before token accuracy was measured: 0) the right-argmax count.
   */
  readonly pendingLoss: { readonly sum: number; readonly targets: number; readonly correct?: number };
}

/** The mean-loss record of the micro-batches since the last reset. */
export interface LossReadout {
  /** Σ token loss (f32, summed on the GPU). */
  readonly sum: number;
  /** Target tokens of those micro-batches. */
  readonly targets: number;
  /** Target tokens whose argmax logit was the target (f32 sum on the GPU; exact below 2^24). */
  readonly correct: number;
  /** Micro-batches summed. */
  readonly microBatches: number;
}

/**
 * The training loop's GPU side: the adapter in one parameter arena, the micro-batch program
 * (forward + backward, gradients added into the arena), the gradient-norm + clipping program and the
 * optimiser. Per optimiser step: `accumulate` each micro-batch (one submit each, no readback), then
 * `step(lr)`: scale by 1 / (target tokens of all the micro-batches), clip, update, clear.
 * Each micro-batch's loss sum is also added into a running sum on the GPU, read (and reset) by
 * `readLoss` at logging steps. `exportState` / `importState` carry everything a checkpoint needs.
 */
export class Trainer {
  private targets = 0;
  private steps = 0;
  private cleared = false;
  private microBatches = 0;
  /** Target tokens and micro-batches added into lossAccum since its last reset. */
  private lossTargets = 0;
  private lossMicroBatches = 0;

  private constructor(
    private readonly gpu: Gpu,
    readonly adapter: ArenaLoraAdapter,
    readonly program: TrainStep,
    private readonly norm: GradNormProgram,
    readonly normState: ReturnType<typeof createGradNormState>,
    private readonly optimizer: Optimizer,
    private readonly seed: number,
    /** (1) f32 — Σ token loss of every micro-batch since the last reset (stays on the GPU). */
    private readonly lossAccum: Tensor,
    /** lossAccum += the micro-batch's loss sum, recorded after each micro-batch. */
    private readonly lossAdd: Dispatch,
    /** (1) f32 — Σ right-argmax target tokens since the last reset (token accuracy's numerator). */
    private readonly correctAccum: Tensor,
    private readonly correctAdd: Dispatch,
    /** The Trainer's own buffers (the running sums), from the plan. */
    private readonly own: PlanAllocation,
  ) {}

  static async create(gpu: Gpu, model: Qwen3Model, adapter: LoraAdapter, options: TrainerOptions, kernels?: TrainKernels): Promise<Trainer> {
    const k = kernels ?? (await createTrainKernels(gpu, model.config, model.kernels));
    // The run-long buffers come from their plan entries (trainerStateEntries): checked against the
    // printed plan before anything is allocated, then each part allocates its own entries.
    const n = TRAINER_STATE_LABELS;
    const kind = options.optimizer.kind;
    const state = trainerStateEntries(planArena(loraArenaSpecs(adapter)), kind, gpu.limits.maxStorageBufferBindingSize);
    const plannedState = options.plan?.buffers.filter((b) => b.allocatedBy === 'arena' || b.allocatedBy === 'optimizer');
    if (plannedState && planDifferences(plannedState, state).length > 0) {
      throw new ConfigError(`Trainer: the memory plan's arena and optimiser state differ from the Trainer's: ${planDifferences(plannedState, state).join('; ')}`);
    }
    const arena = moveLoraToArena(gpu, n.arena, adapter, { destroySource: true });
    const program = TrainStep.build(gpu, k, model.weights, arena.adapter, arena.grads, { B: options.B, T: options.T, checkpointing: options.checkpointing, recompute: options.recompute, lossChunkTokens: options.lossChunkTokens, plan: options.plan?.buffers, lossHead: options.plan?.settings.lossHead, savedF16: options.savedF16 ?? options.plan?.settings.savedF16 });
    const normState = createGradNormState(gpu, `${n.gradNorm} state`);
    const norm = (await GradNorm.create(gpu)).bind(n.gradNorm, { state: normState, grads: arena.arena.grads }, { maxNorm: options.maxGradNorm });
    const target = { params: arena.arena.params, grads: arena.arena.grads, slots: arena.arena.layout.slots };
    const optimizer: Optimizer =
      kind === 'adamw'
        ? await AdamwOptimizer.create(gpu, n.adamw, target, normState, options.hyper, { variant: options.optimizer.variant })
        : await Adamw8bitOptimizer.create(gpu, n.adamw8bit, target, normState, options.hyper);
    const sums = planRunningSums();
    const planned = options.plan?.buffers.filter((b) => b.allocatedBy === 'trainer');
    if (planned && planDifferences(planned, sums).length > 0) throw new ConfigError(`Trainer: the memory plan's running sums differ from the Trainer's: ${planDifferences(planned, sums).join('; ')}`);
    const own = allocatePlan(gpu, sums);
    const lossAccum = own.one(TRAINER_BUFFERS.lossAccum);
    const lossAdd = k.sum.forward('running loss sum += micro-batch loss', { out: lossAccum, values: program.lossSum }, { n: 1, accumulate: true });
    const correctAccum = own.one(TRAINER_BUFFERS.correctAccum);
    const correctAdd = k.sum.forward('running right-argmax count += micro-batch count', { out: correctAccum, values: program.correctSum }, { n: 1, accumulate: true });
    return new Trainer(gpu, arena, program, norm, normState, optimizer, options.seed ?? 0, lossAccum, lossAdd, correctAccum, correctAdd, own);
  }

  /** Recorded after each micro-batch: the running loss and right-argmax sums. */
  private get runningSums(): readonly Dispatch[] {
    return [this.lossAdd, this.correctAdd];
  }

  /** The dispatches of a micro-batch and of an optimiser step, as recorded. */
  get dispatchCounts(): TrainerDispatchCounts {
    const p = this.program.phases;
    const runningSums = this.runningSums.length;
    return { ...p, runningSums, microBatch: p.forward + p.lossHead + p.backward + runningSums, optimizerStep: this.norm.dispatches.length + this.optimizer.dispatches.length };
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
    encodeDispatches(this.gpu, enc, this.runningSums);
    this.gpu.device.queue.submit([enc.finish()]);
    this.targets += n;
    this.lossTargets += n;
    this.lossMicroBatches++;
    return n;
  }

  /**
   * The loss summed on the GPU over every micro-batch since the last reset (a readback: call at
   * logging steps). With `reset` the sum starts again from zero.
   */
  async readLoss(reset: boolean): Promise<LossReadout> {
    const sum = (await this.gpu.readF32(this.lossAccum))[0];
    const correct = (await this.gpu.readF32(this.correctAccum))[0];
    const out = { sum, targets: this.lossTargets, correct, microBatches: this.lossMicroBatches };
    if (reset) {
      this.gpu.write(this.lossAccum, new Float32Array(1));
      this.gpu.write(this.correctAccum, new Float32Array(1));
      this.lossTargets = 0;
      this.lossMicroBatches = 0;
    }
    return out;
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

  /** Optimiser updates so far (t of the last update). */
  get optimizerSteps(): number {
    return this.steps;
  }

  /**
   * Reads the whole training state back for a checkpoint (waits for the GPU). Call between
   * optimiser steps: gradients of a half-accumulated step are not part of it.
   */
  async exportState(): Promise<TrainerState> {
    if (this.targets > 0) throw new CheckpointError(`Trainer.exportState: ${this.targets} target tokens are accumulated for an optimiser step not yet taken; save between steps`);
    const params = await this.readParameters();
    const optimizer = await this.optimizer.exportState();
    const gradNorm = new Uint32Array(await this.gpu.read(this.normState));
    const loss = await this.readLoss(false);
    return { params, optimizer, optimizerSteps: this.steps, microBatches: this.microBatches, gradNorm, pendingLoss: { sum: loss.sum, targets: loss.targets, correct: loss.correct } };
  }

  /**
   * Writes a checkpoint's state into this trainer (same adapter shapes and optimiser kind): every
   * LoRA tensor by PEFT key, the optimiser buffers, the counters. `where` names the checkpoint
   * in errors. Everything is checked before anything is written.
   */
  importState(where: string, state: TrainerState): void {
    const slots = this.adapter.arena.layout.slots;
    for (const slot of slots) {
      const p = state.params.get(slot.name);
      if (!p) throw new CheckpointError(`${where}: the adapter has no tensor ${slot.name}; the checkpoint was written for other lora_target_modules or another model`);
      if (p.length !== slot.count) throw new CheckpointError(`${where}: ${slot.name} has ${p.length} values, expected ${slot.count} [${slot.shape.join(', ')}] (another lora_r?)`);
    }
    if (state.params.size !== slots.length) throw new CheckpointError(`${where}: the adapter has ${state.params.size} tensors, this run ${slots.length}`);
    if (state.gradNorm.length !== GRAD_NORM_STATE_WORDS) throw new CheckpointError(`${where}: grad-norm state has ${state.gradNorm.length} words, expected ${GRAD_NORM_STATE_WORDS}`);
    this.optimizer.importState(where, state.optimizer);
    for (const slot of slots) this.gpu.write(this.adapter.arena.param(slot.name), state.params.get(slot.name)!);
    this.gpu.write(this.normState, state.gradNorm);
    this.gpu.write(this.lossAccum, new Float32Array([state.pendingLoss.sum]));
    this.gpu.write(this.correctAccum, new Float32Array([state.pendingLoss.correct ?? 0]));
    this.lossTargets = state.pendingLoss.targets;
    this.lossMicroBatches = 0;
    this.steps = state.optimizerSteps;
    this.microBatches = state.microBatches;
    this.targets = 0;
    this.cleared = false;
  }

  destroy(): void {
    this.program.destroy();
    this.adapter.arena.destroy();
    this.own.destroy();
  }
}
