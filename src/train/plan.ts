import { DeviceLimitError } from '../errors.js';
import type { DType } from '../kernels/tensor.js';
import { PROJECTIONS, projectionShape, type Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import type { BaseFormat } from '../model/weights.js';
import { loraArenaSpecsFor, planArena, planParamArena, type ArenaLayout } from './param-arena.js';
import { planAdamw } from './adamw.js';
import { planAdamw8bit } from './adamw8bit.js';
import { planGradNorm } from './grad-norm.js';
import { DEFAULT_MAX_SCRATCH_BYTES } from '../kernels/matmul-backward.js';
import { planBuffer, type PlanBuffer, type PlanCategory, type PlanLifetime } from '../model/buffer-plan.js';
import type { LossHeadMode } from '../model/loss-head.js';
import { describeComputePath, type ComputePath } from '../model/compute-path.js';
import { SGM_INPUT_MAX_SCRATCH_BYTES } from '../kernels/matmul-sgm-input.js';
import { checkpointedLayers, describeRecompute, type RecomputePolicy } from './recompute.js';
import { planMicroBatch, planRunningSums, savesF16 } from './step-plan.js';
import type { TrainerDispatchCounts } from './trainer.js';

/**
 * The memory plan of a training step: every GPU buffer the run allocates, known before anything
 * is allocated. Pure: the same inputs give the same plan on any machine. The micro-batch program
 * allocates its entries from it (src/train/step-plan.ts, src/model/buffer-plan.ts), so the printed
 * plan is what the GPU holds; so do the LoRA arena, the grad-norm program and the optimiser
 * (planTrainerState). Only the frozen weights are the loader's, planned here from their shapes.
 */
export type { PlanBuffer, PlanCategory, PlanLifetime } from '../model/buffer-plan.js';

export interface StepSettings {
  /** per_device_train_batch_size */
  readonly batch: number;
  /** max_seq_length (tokens per row) */
  readonly seq: number;
  readonly r: number;
  readonly targets: readonly Projection[];
  readonly gradientCheckpointing: boolean;
  readonly optimizer: 'adamw' | 'adamw_8bit';
  readonly base: BaseFormat;
  readonly doubleQuant: boolean;
  /** Tokens per logits chunk. */
  readonly lossChunkTokens: number;
  /** lora_dropout > 0 needs a dropped copy of each LoRA input. */
  readonly loraDropout: number;
  /** Which layers are recomputed (default from gradientCheckpointing: 'full' or 'none'). */
  readonly recompute?: RecomputePolicy;
  /** The loss head's implementation (default 'chunked'; 'fused' on CPU adapters). */
  readonly lossHead?: LossHeadMode;
  /** The projections' path (default 'f32'; src/model/compute-path.ts). */
  readonly compute?: ComputePath;
  /** Why that path, in words (chooseComputePath's `why`), for the printed plan. */
  readonly computeWhy?: string;
  /** Keep the saved layers' F16_SAVED activations in f16 (default savesF16: on the tensor-core path; src/train/step-plan.ts). */
  readonly savedF16?: boolean;
  /** Why this recompute policy, when `gradient_checkpointing: auto` chose it (autoRecompute). */
  readonly recomputeWhy?: string;
  /**
   * The device's maxStorageBufferBindingSize (default DEFAULT_MAX_BINDING_BYTES): the grad-norm
   * partials are one set per binding-sized chunk of the gradients.
   */
  readonly maxStorageBufferBindingSize?: number;
}

export interface StepPlan {
  readonly settings: StepSettings;
  readonly buffers: readonly PlanBuffer[];
  readonly totals: Readonly<Record<PlanCategory, number>>;
  readonly total: number;
  /** Trainable parameters (LoRA A and B elements). */
  readonly trainable: number;
  /** Decoder layers of the model. */
  readonly layers: number;
  /**
   * Dispatches per micro-batch and per optimiser step, counted from the lists the Trainer records
   * (countStepDispatches, src/train/dispatch-count.ts); absent from a plan made without a device.
   */
  readonly dispatches?: TrainerDispatchCounts;
}

/** `plan` with its dispatch counts. */
export function withDispatchCounts(plan: StepPlan, dispatches: TrainerDispatchCounts): StepPlan {
  return Object.freeze({ ...plan, dispatches: Object.freeze({ ...dispatches }) });
}

/** "1234 dispatches per micro-batch (forward 400, loss head 12, backward 820, running sums 2), 5 per optimiser step". */
export function formatDispatchCounts(d: TrainerDispatchCounts): string {
  return `${d.microBatch} dispatches per micro-batch (forward ${d.forward}, loss head ${d.lossHead}, backward ${d.backward}, running sums ${d.runningSums}), ${d.optimizerStep} per optimiser step`;
}

/** WebGPU's default maxStorageBufferBindingSize (128 MiB): every device's is at least this. */
export const DEFAULT_MAX_BINDING_BYTES = 2 ** 27;

/** Names of the Trainer's run-long buffers: the arena's label, the grad-norm program's, the optimisers'. */
export const TRAINER_STATE_LABELS = { arena: 'lora', gradNorm: 'grad norm', adamw: 'adamw', adamw8bit: 'adamw8bit' } as const;

/**
 * The run-long buffers the Trainer's parts allocate, in the order they allocate them, for an arena
 * of `layout` on a device whose storage bindings hold maxBindingBytes: the LoRA arena (params,
 * grads; planParamArena), the grad-norm state and partials (planGradNorm), the optimiser state
 * (planAdamw / planAdamw8bit). Trainer.create builds this list from the live adapter and the
 * device, and refuses a plan whose entries differ.
 */
export function trainerStateEntries(layout: ArenaLayout, optimizer: StepSettings['optimizer'], maxBindingBytes: number): PlanBuffer[] {
  const n = TRAINER_STATE_LABELS;
  return [
    ...planParamArena(n.arena, layout),
    ...planGradNorm(n.gradNorm, layout.count, maxBindingBytes),
    ...(optimizer === 'adamw' ? planAdamw(n.adamw, layout.count) : planAdamw8bit(n.adamw8bit, layout.count, layout.slots)),
  ];
}

/** trainerStateEntries from the model's shapes (the arena of r on `targets`), before any adapter exists. */
export function planTrainerState(c: Qwen3Config, s: Pick<StepSettings, 'r' | 'targets' | 'optimizer' | 'maxStorageBufferBindingSize'>): PlanBuffer[] {
  return trainerStateEntries(planArena(loraArenaSpecsFor(c, s.r, s.targets)), s.optimizer, s.maxStorageBufferBindingSize ?? DEFAULT_MAX_BINDING_BYTES);
}

export function planStep(c: Qwen3Config, s: StepSettings): StepPlan {
  const buffers: PlanBuffer[] = [];
  const add = (name: string, category: PlanCategory, lifetime: PlanLifetime, shape: readonly number[], dtype: DType | 'u8', count = 1, bound = true, allocatedBy?: PlanBuffer['allocatedBy']): void => {
    buffers.push(planBuffer(name, category, lifetime, shape, dtype, { count, bound, allocatedBy }));
  };
  const L = c.numHiddenLayers;
  const D = c.hiddenSize;
  const Dh = c.headDim;
  const V = c.vocabSize;
  const R = s.r;

  // Frozen base.
  add('embed_tokens (V, D) bf16', 'weights', 'run', [V, D], 'bf16x2', 1, true, 'model');
  if (!c.tieWordEmbeddings) add('lm_head (V, D) bf16', 'weights', 'run', [V, D], 'bf16x2', 1, true, 'model');
  add('norms (D) bf16: input, post-attention', 'weights', 'run', [D], 'bf16x2', 2 * L + 1, true, 'model');
  add('q_norm, k_norm (Dh) bf16', 'weights', 'run', [Dh], 'bf16x2', 2 * L, true, 'model');
  for (const p of PROJECTIONS) {
    const [o, k] = projectionShape(c, p);
    if (s.base === 'full') {
      add(`${p} (${o}, ${k}) bf16`, 'weights', 'run', [o, k], 'bf16x2', L, true, 'model');
    } else {
      add(`${p} (${o}, ${k}) nf4`, 'weights', 'run', [o, k], 'nf4x8', L, true, 'model');
      const blocks = (o * k) / 64;
      if (s.doubleQuant) {
        add(`${p} absmax codes (${blocks}) u8`, 'weights', 'run', [blocks], 'u8x4', L, true, 'model');
        add(`${p} absmax2 (${Math.ceil(blocks / 256)}) f32`, 'weights', 'run', [Math.ceil(blocks / 256)], 'f32', L, true, 'model');
      } else {
        add(`${p} absmax (${blocks}) f32`, 'weights', 'run', [blocks], 'f32', L, true, 'model');
      }
    }
  }

  // Trainable adapter: one arena of every A and B (each padded to 256 elements), gradients alike;
  // the clipping state and partials; the optimiser state. The arena, GradNorm and the optimiser
  // allocate exactly these entries (planParamArena, planGradNorm, planAdamw / planAdamw8bit).
  for (const b of planTrainerState(c, s)) buffers.push(b);
  const trainable = s.targets.reduce((a, p) => {
    const [o, k] = projectionShape(c, p);
    return a + L * (R * k + o * R);
  }, 0);

  // The micro-batch program: exactly the buffers TrainStep.build allocates (it takes them from this list).
  buffers.push(
    ...planMicroBatch(c, {
      batch: s.batch,
      seq: s.seq,
      r: R,
      targets: s.targets,
      recompute: s.recompute ?? (s.gradientCheckpointing ? 'full' : 'none'),
      loraDropout: s.loraDropout,
      lossHead: s.lossHead ?? 'chunked',
      lossChunkTokens: s.lossChunkTokens,
      compute: s.compute,
      savedF16: s.savedF16,
    }),
  );
  buffers.push(...planRunningSums());
  // Split reductions of the matmul backward (partial sums, then a fixed-order reduce): one buffer
  // of at most DEFAULT_MAX_SCRATCH_BYTES, allocated by the kernels (not by the step).
  add('matmul backward split-reduction scratch f32', 'scratch', 'run', [DEFAULT_MAX_SCRATCH_BYTES / 4], 'f32', 1, true, 'kernels');
  // The tensor-core input gradient's split reductions: one more such buffer, of at most SGM_INPUT_MAX_SCRATCH_BYTES.
  if (s.compute === 'tensor-cores') add('matmul-sgm input-gradient split-reduction scratch f32', 'scratch', 'run', [SGM_INPUT_MAX_SCRATCH_BYTES / 4], 'f32', 1, true, 'kernels');

  const totals: Record<PlanCategory, number> = { weights: 0, lora: 0, grads: 0, optimizer: 0, saved: 0, scratch: 0, inputs: 0 };
  let total = 0;
  for (const b of buffers) {
    totals[b.category] += b.bytes * b.count;
    total += b.bytes * b.count;
  }
  return Object.freeze({ settings: s, buffers: Object.freeze(buffers), totals: Object.freeze(totals), total, trainable, layers: L });
}

export interface DeviceBudget {
  readonly maxBufferSize: number;
  readonly maxStorageBufferBindingSize: number;
  /** Device memory in bytes when known (WebGPU does not report it; see guessDeviceMemory). */
  readonly memoryBytes?: number;
}

/** The settings that shrink buffer `b` (only those: not a smaller batch for a weight, not checkpointing when it is on). */
export function shrinkingSettings(b: PlanBuffer, s: StepSettings, layers: number): string[] {
  const out: string[] = [];
  const checkpointedAll = checkpointedLayers(s.recompute ?? (s.gradientCheckpointing ? 'full' : 'none'), layers) === layers;
  switch (b.category) {
    case 'weights':
      if (s.base === 'full') out.push('use_4bit: true (NF4 base)');
      // double quantisation trades speed on the tensor-core path: 659 against 587 ms a B4×512 step
      // of Qwen3-4B for 0.15 GiB (H200, 2026-12-04, bench/results/h200-2026-12-04-s4.md)
      else if (!s.doubleQuant && b.name.includes('absmax')) out.push(`bnb_4bit_use_double_quant: true${s.compute === 'tensor-cores' ? ' (about 12 % slower on tensor cores)' : ''}`);
      if (b.name.startsWith('embed_tokens') || b.name.startsWith('lm_head')) out.push('a device with a larger maxStorageBufferBindingSize (the vocabulary matrix is bound whole)');
      break;
    case 'lora':
    case 'grads':
      out.push('lora_r', 'fewer lora_target_modules');
      break;
    case 'optimizer':
      out.push('lora_r', 'fewer lora_target_modules');
      if (s.optimizer === 'adamw') out.push('optim: paged_adamw_8bit');
      break;
    default:
      if (b.name.startsWith('logits')) {
        out.push('a smaller logits chunk (lossChunkTokens)');
        break;
      }
      if (b.name.startsWith('rope')) out.push('max_seq_length');
      else out.push('per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch)', 'max_seq_length');
      if (b.name.startsWith('saved') && !checkpointedAll) out.push('gradient_checkpointing: true (or checkpoint more layers)');
      if (b.name.includes('dropped input')) out.push('lora_dropout: 0');
  }
  return out;
}

/** The largest buffers of the plan, each with the settings that would shrink it. */
function largestWithRemedies(plan: StepPlan, n = 3): string {
  const big = [...plan.buffers].sort((a, b) => b.bytes * b.count - a.bytes * a.count).slice(0, n);
  return big.map((b) => `  ${fmtBytes(b.bytes * b.count)} ${b.count > 1 ? `${b.count} × ` : ''}"${b.name}" [${b.category}]: lower ${shrinkingSettings(b, plan.settings, plan.layers).join(', ') || 'nothing in the config'}`).join('\n');
}

/** The refusal of the first buffer over a device's buffer limits (maxBufferSize, or maxStorageBufferBindingSize when bound), or undefined. */
export function bufferLimitError(plan: StepPlan, device: DeviceBudget): DeviceLimitError | undefined {
  for (const b of plan.buffers) {
    const remedy = `lower ${shrinkingSettings(b, plan.settings, plan.layers).join(', ') || 'nothing in the config'}`;
    if (b.bytes > device.maxBufferSize) {
      return new DeviceLimitError(`memory plan: buffer "${b.name}" needs ${fmtBytes(b.bytes)}, over this device's maxBufferSize ${fmtBytes(device.maxBufferSize)}; ${remedy}`);
    }
    if (b.bound && b.bytes > device.maxStorageBufferBindingSize) {
      return new DeviceLimitError(
        `memory plan: buffer "${b.name}" needs ${fmtBytes(b.bytes)} in one shader binding, over this device's maxStorageBufferBindingSize ${fmtBytes(device.maxStorageBufferBindingSize)}; ${remedy}`,
      );
    }
  }
  return undefined;
}

export interface PlanCheck {
  /** Whether the device's memory is known (else only per-buffer limits were checked). */
  readonly memoryKnown: boolean;
  /** One line for the log: the plan against the device memory, or that it is unknown. */
  readonly note: string;
}

/**
 * Refuses a plan that breaks a device limit or the device's memory, naming the buffers and only
 * the settings that shrink them. Returns whether the device memory was known.
 */
export function checkPlan(plan: StepPlan, device: DeviceBudget): PlanCheck {
  const broken = bufferLimitError(plan, device);
  if (broken) throw broken;
  if (device.memoryBytes === undefined) {
    return { memoryKnown: false, note: `memory plan: ${fmtBytes(plan.total)}; this device does not report its memory (WebGPU does not tell it), so only its buffer limits were checked` };
  }
  if (plan.total > device.memoryBytes * 0.95) {
    throw new DeviceLimitError(
      `memory plan: the step needs ${fmtBytes(plan.total)} but the device has ${fmtBytes(device.memoryBytes)} (95% usable). The largest buffers:\n${largestWithRemedies(plan)}\n${formatPlan(plan)}`,
    );
  }
  return { memoryKnown: true, note: `memory plan: ${fmtBytes(plan.total)} of the device's ${fmtBytes(device.memoryBytes)}` };
}

/**
 * Device memory guessed from the adapter's names; undefined when unknown. WebGPU reports no memory
 * size (Dawn's adapter info has vendor, architecture, device, description, subgroup sizes: no heap
 * sizes), so this reads the card's name, where a size may stand ("NVIDIA H100 80GB HBM3"), or looks
 * it up in a table of common cards. The name is in `device`, not `description`: on Vulkan Dawn's
 * description is the driver ("NVIDIA: 580.159.04 580.159.4.0" on the H100 and the H200 hosts, as
 * the bench records show; "llvmpipe: Mesa …" on lavapipe) and `device` the card's name lowercased
 * with runs of other characters as '-' ("llvmpipe-llvm-15-0-6-256-bits-" on lavapipe; "nvidia-h200"
 * expected for "NVIDIA H200", not yet seen on that host), so both are read, and the table's
 * patterns accept '-' for a space.
 */
export function guessDeviceMemory(adapter: { readonly description: string; readonly device: string }): number | undefined {
  const names = `${adapter.description} ${adapter.device}`;
  const m = /(\d+)\s*GB\b/i.exec(names);
  if (m) return Number(m[1]) * 2 ** 30;
  const known: [RegExp, number][] = [
    [/RTX[\s-]*4090/i, 24],
    [/RTX[\s-]*3090/i, 24],
    [/RTX[\s-]*5090/i, 32],
    [/RTX[\s-]*4080/i, 16],
    [/A100/i, 40],
    [/H100/i, 80],
    // 141 GB of HBM3e (SXM and NVL); 139 GiB taken, a little under, for what the driver keeps
    [/\bH200\b/i, 139],
    [/L4\b/i, 24],
  ];
  for (const [re, gib] of known) if (re.test(names)) return gib * 2 ** 30;
  return undefined;
}

export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${n} B`;
}

/** The plan as a table: per category, then the buffers over 1% of the total. */
export function formatPlan(plan: StepPlan): string {
  const s = plan.settings;
  const recompute = s.recompute ?? (s.gradientCheckpointing ? 'full' : 'none');
  const f16 = savesF16(s) && checkpointedLayers(recompute, plan.layers) < plan.layers ? ' (saved q, k, v, attention output, gate and up in f16)' : '';
  const lines = [
    `memory plan: batch ${s.batch} × ${s.seq}, LoRA r=${s.r} on ${s.targets.join(',')}, ${s.base}${s.doubleQuant ? '+double-quant' : ''} base, ` +
      `checkpointing ${describeRecompute(recompute, plan.layers)}, ${s.lossHead ?? 'chunked'} loss head, ${s.optimizer}, compute ${describeComputePath(s.compute ?? 'f32')}${f16}; ${(plan.trainable / 1e6).toFixed(2)} M trainable parameters`,
  ];
  if (plan.dispatches) lines.push(`  ${formatDispatchCounts(plan.dispatches)}`);
  for (const [cat, bytes] of Object.entries(plan.totals)) lines.push(`  ${cat.padEnd(10)} ${fmtBytes(bytes).padStart(11)}`);
  lines.push(`  ${'total'.padEnd(10)} ${fmtBytes(plan.total).padStart(11)}`);
  const big = plan.buffers.filter((b) => b.bytes * b.count > plan.total * 0.01).sort((a, b) => b.bytes * b.count - a.bytes * a.count);
  lines.push('  largest buffers:');
  for (const b of big) lines.push(`    ${fmtBytes(b.bytes * b.count).padStart(11)}  ${b.count > 1 ? `${b.count} × ` : ''}${b.name} [${b.category}, ${b.lifetime}]`);
  return lines.join('\n');
}
