import { DeviceLimitError } from '../errors.js';
import { byteLength, numel, type DType } from '../kernels/tensor.js';
import { PROJECTIONS, projectionShape, type Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import type { BaseFormat } from '../model/weights.js';
import { ARENA_ALIGN_ELEMENTS } from './param-arena.js';
import { DEFAULT_MAX_SCRATCH_BYTES } from '../kernels/matmul-backward.js';
import { fusedSlices, FUSED_PARTIAL_WORDS } from '../kernels/cross-entropy-fused.js';
import { gradScratchSpecs, savedSpecs, type LayerDims } from '../model/decoder-layer.js';
import type { LossHeadMode } from '../model/loss-head.js';
import { checkpointedLayers, describeRecompute, type RecomputePolicy } from './recompute.js';

/**
 * The memory plan of a training step: every GPU buffer the run allocates, known before anything
 * is allocated. Pure: the same inputs give the same plan on any machine. The step builder
 * allocates from it, so the printed plan is what the GPU holds.
 *
 * Categories: weights (frozen base), lora (trainable A/B), grads, optimizer, saved (activations kept
 * from the forward for the backward), scratch (reused buffers), inputs (token ids, labels …).
 * Lifetimes: run (whole run), step (rewritten every step), layer (reused by every layer).
 */
export type PlanCategory = 'weights' | 'lora' | 'grads' | 'optimizer' | 'saved' | 'scratch' | 'inputs';
export type PlanLifetime = 'run' | 'step' | 'layer';

export interface PlanBuffer {
  readonly name: string;
  readonly category: PlanCategory;
  readonly lifetime: PlanLifetime;
  readonly shape: readonly number[];
  readonly dtype: DType | 'u8';
  /** How many buffers of this shape (e.g. one per layer). */
  readonly count: number;
  /** Bytes of one buffer. */
  readonly bytes: number;
  /** Bound whole to one shader binding (so it must fit maxStorageBufferBindingSize). */
  readonly bound: boolean;
  /** Who allocates it: the step (default), or the kernels (shared by every step). */
  readonly allocatedBy?: 'step' | 'kernels';
}

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
}

const roundArena = (n: number): number => Math.ceil(n / ARENA_ALIGN_ELEMENTS) * ARENA_ALIGN_ELEMENTS;

export function planStep(c: Qwen3Config, s: StepSettings): StepPlan {
  const buffers: PlanBuffer[] = [];
  const add = (name: string, category: PlanCategory, lifetime: PlanLifetime, shape: readonly number[], dtype: DType | 'u8', count = 1, bound = true, allocatedBy?: 'kernels'): void => {
    const raw = dtype === 'u8' ? Math.ceil(numel(shape) / 4) * 4 : byteLength(dtype, numel(shape));
    const bytes = Math.max(16, Math.ceil(raw / 16) * 16); // as Gpu.buffer allocates
    buffers.push(Object.freeze({ name, category, lifetime, shape: Object.freeze([...shape]), dtype, count, bytes, bound, ...(allocatedBy ? { allocatedBy } : {}) }));
  };
  const L = c.numHiddenLayers;
  const D = c.hiddenSize;
  const H = c.numAttentionHeads;
  const Hkv = c.numKeyValueHeads;
  const Dh = c.headDim;
  const F = c.intermediateSize;
  const V = c.vocabSize;
  const N = s.batch * s.seq;
  const R = s.r;

  // Frozen base.
  add('embed_tokens (V, D) bf16', 'weights', 'run', [V, D], 'bf16x2');
  if (!c.tieWordEmbeddings) add('lm_head (V, D) bf16', 'weights', 'run', [V, D], 'bf16x2');
  add('norms (D) bf16: input, post-attention', 'weights', 'run', [D], 'bf16x2', 2 * L + 1);
  add('q_norm, k_norm (Dh) bf16', 'weights', 'run', [Dh], 'bf16x2', 2 * L);
  for (const p of PROJECTIONS) {
    const [o, k] = projectionShape(c, p);
    if (s.base === 'full') {
      add(`${p} (${o}, ${k}) bf16`, 'weights', 'run', [o, k], 'bf16x2', L);
    } else {
      add(`${p} (${o}, ${k}) nf4`, 'weights', 'run', [o, k], 'nf4x8', L);
      const blocks = (o * k) / 64;
      if (s.doubleQuant) {
        add(`${p} absmax codes (${blocks}) u8`, 'weights', 'run', [blocks], 'u8x4', L);
        add(`${p} absmax2 (${Math.ceil(blocks / 256)}) f32`, 'weights', 'run', [Math.ceil(blocks / 256)], 'f32', L);
      } else {
        add(`${p} absmax (${blocks}) f32`, 'weights', 'run', [blocks], 'f32', L);
      }
    }
  }

  // Trainable adapter: one arena of every A and B (each padded to 256 elements), gradients alike.
  let arena = 0;
  let trainable = 0;
  for (const p of s.targets) {
    const [o, k] = projectionShape(c, p);
    arena += L * (roundArena(R * k) + roundArena(o * R));
    trainable += L * (R * k + o * R);
  }
  add('lora params arena f32', 'lora', 'run', [arena], 'f32');
  add('lora grads arena f32', 'grads', 'run', [arena], 'f32');
  if (s.optimizer === 'adamw') {
    add('adamw exp_avg f32', 'optimizer', 'run', [arena], 'f32');
    add('adamw exp_avg_sq f32', 'optimizer', 'run', [arena], 'f32');
  } else {
    add('adamw8bit state1 u8', 'optimizer', 'run', [arena], 'u8');
    add('adamw8bit state2 u8', 'optimizer', 'run', [arena], 'u8');
    add('adamw8bit absmax1, absmax2 f32', 'optimizer', 'run', [arena / 256], 'f32', 2);
  }
  add('grad norm state + partials f32', 'optimizer', 'run', [4 + 1024], 'f32');

  // The micro-batch step: exactly the buffers TrainStep.build allocates, from the same specs.
  const K = checkpointedLayers(s.recompute ?? (s.gradientCheckpointing ? 'full' : 'none'), L);
  const dims: LayerDims = { N, D, H, Hkv, Dh, F, eps: c.rmsNormEps };
  add('input_ids, position_ids, segment_ids (N) i32', 'inputs', 'step', [N], 'i32', 3);
  add('dropout seed (1) u32', 'inputs', 'step', [1], 'u32');
  const targeted = s.targets.length;
  if (s.loraDropout > 0) add('lora dropped input, dU·A before the mask (N, max K)', 'scratch', 'layer', [N, Math.max(D, H * Dh, F)], 'f32', 2);
  add('identity index (N) i32', 'scratch', 'run', [N], 'i32');
  add('x_l (N, D): input of each layer', 'saved', 'step', [N, D], 'f32', L + 1);
  // Layers 0..K−1 are recomputed into one shared Saved set (scratch); layers K..L−1 keep their own.
  for (const sp of savedSpecs(dims, s.targets, R, { save: true, lse: true })) {
    if (K > 0) add(`layer scratch ${sp.name}`, 'scratch', 'layer', sp.shape, sp.dtype);
    if (K < L) add(`saved ${sp.name}`, 'saved', 'step', sp.shape, sp.dtype, L - K);
  }
  for (const sp of gradScratchSpecs(dims, targeted > 0 ? R : undefined)) add(sp.name, 'scratch', sp.key === 'dx' ? 'step' : 'layer', sp.shape, 'f32');
  add('xf, dxf (N, D): final norm output and its gradient', 'scratch', 'step', [N, D], 'f32', 2);
  add('final rstd (N)', 'scratch', 'step', [N], 'f32');
  add('rope cos, sin (T, Dh/2) f32', 'scratch', 'run', [s.seq, Dh / 2], 'f32', 2);
  // The loss head (src/model/loss-head.ts).
  add('targets (N) i32', 'scratch', 'step', [N], 'i32');
  add('token loss, lse, correct (N) f32', 'scratch', 'step', [N], 'f32', 3);
  add('loss sum, correct sum (1) f32', 'scratch', 'step', [1], 'f32', 2);
  if ((s.lossHead ?? 'chunked') === 'fused') {
    const S = fusedSlices(V);
    add('head row positions, row of position (N) i32', 'scratch', 'step', [N], 'i32', 2);
    add('head rows (1) u32', 'scratch', 'step', [1], 'u32');
    add(`head partial (S=${S}, N, 4) f32`, 'scratch', 'step', [S, N, FUSED_PARTIAL_WORDS], 'f32');
    add(`head dx partial (S=${S}, N, D) f32`, 'scratch', 'step', [S, N, D], 'f32');
  } else {
    add(`logits / dlogits chunk (${s.lossChunkTokens}, V) f32`, 'scratch', 'step', [s.lossChunkTokens, V], 'f32');
  }
  // Split reductions of the matmul backward (partial sums, then a fixed-order reduce): one buffer
  // of at most DEFAULT_MAX_SCRATCH_BYTES, allocated by the kernels (not by the step).
  add('matmul backward split-reduction scratch f32', 'scratch', 'run', [DEFAULT_MAX_SCRATCH_BYTES / 4], 'f32', 1, true, 'kernels');

  const totals: Record<PlanCategory, number> = { weights: 0, lora: 0, grads: 0, optimizer: 0, saved: 0, scratch: 0, inputs: 0 };
  let total = 0;
  for (const b of buffers) {
    totals[b.category] += b.bytes * b.count;
    total += b.bytes * b.count;
  }
  return Object.freeze({ settings: s, buffers: Object.freeze(buffers), totals: Object.freeze(totals), total, trainable, layers: L });
}

export interface ForwardSettings {
  readonly batch: number;
  readonly seq: number;
  /** LoRA rank and targets (none: no adapter). */
  readonly r?: number;
  readonly targets: readonly Projection[];
  readonly lossChunkTokens: number;
  readonly lossHead?: LossHeadMode;
  readonly captureLayers?: boolean;
  readonly logitsLast?: boolean;
  /** Largest position + 1 (rope table rows; default seq). */
  readonly maxPosition?: number;
}

/**
 * The buffers of the evaluation forward (ForwardProgram.build): the layer's shared, not-saved set
 * (src/model/decoder-layer.ts), the residual stream, the loss head and what the shape asks for.
 */
export function planForward(c: Qwen3Config, s: ForwardSettings): { readonly buffers: readonly PlanBuffer[]; readonly total: number } {
  const buffers: PlanBuffer[] = [];
  const add = (name: string, shape: readonly number[], dtype: DType, count = 1): void => {
    const bytes = Math.max(16, Math.ceil(byteLength(dtype, numel(shape)) / 16) * 16);
    buffers.push(Object.freeze({ name, category: 'scratch', lifetime: 'step', shape: Object.freeze([...shape]), dtype, count, bytes, bound: true }));
  };
  const { hiddenSize: D, numAttentionHeads: H, numKeyValueHeads: Hkv, headDim: Dh, intermediateSize: F, vocabSize: V } = c;
  const B = s.batch;
  const N = B * s.seq;
  add('input_ids, position_ids, segment_ids (N) i32', [N], 'i32', 3);
  add('x (N, D) f32 — residual stream', [N, D], 'f32');
  for (const sp of savedSpecs({ N, D, H, Hkv, Dh, F, eps: c.rmsNormEps }, s.targets, s.r ?? 0, { save: false, lse: true })) add(sp.name, sp.shape, sp.dtype);
  add('xf (N, D) f32', [N, D], 'f32');
  if (s.logitsLast) {
    add('last index (B) i32', [B], 'i32');
    add('last rows (B, D) f32', [B, D], 'f32');
    add('logits_last (B, V) f32', [B, V], 'f32');
  }
  if (s.captureLayers) {
    add('identity index (N) i32', [N], 'i32');
    add('layer_out (N, D) f32', [N, D], 'f32', c.numHiddenLayers);
  }
  add('rope cos, sin (maxPosition, Dh/2) f32', [s.maxPosition ?? s.seq, Dh / 2], 'f32', 2);
  add('targets (N) i32', [N], 'i32');
  add('token loss, lse, correct (N) f32', [N], 'f32', 3);
  add('loss sum, correct sum (1) f32', [1], 'f32', 2);
  if ((s.lossHead ?? 'chunked') === 'fused') {
    add('head row positions, row of position (N) i32', [N], 'i32', 2);
    add('head rows (1) u32', [1], 'u32');
    add(`head partial (S, N, 4) f32`, [fusedSlices(V), N, FUSED_PARTIAL_WORDS], 'f32');
  } else {
    add(`logits chunk (${s.lossChunkTokens}, V) f32`, [s.lossChunkTokens, V], 'f32');
  }
  return Object.freeze({ buffers: Object.freeze(buffers), total: buffers.reduce((a, b) => a + b.bytes * b.count, 0) });
}

/**
 * The buffers of one generation chunk program (src/generate/chunk-program.ts) of C rows: the
 * layer's shared set without lse (KV-cache attention), its split scratch, the step-input buffer,
 * the last row's head and the logits with their readback buffer. The KV cache itself is the
 * Generator's (not listed here).
 */
export function planChunkProgram(c: Qwen3Config, s: { readonly rows: number; readonly splits: number; readonly r?: number; readonly targets: readonly Projection[]; readonly inputWords: number }): { readonly buffers: readonly PlanBuffer[]; readonly total: number } {
  const buffers: PlanBuffer[] = [];
  const add = (name: string, shape: readonly number[], dtype: DType, count = 1): void => {
    const bytes = Math.max(16, Math.ceil(byteLength(dtype, numel(shape)) / 16) * 16);
    buffers.push(Object.freeze({ name, category: 'scratch', lifetime: 'step', shape: Object.freeze([...shape]), dtype, count, bytes, bound: true }));
  };
  const { hiddenSize: D, numAttentionHeads: H, numKeyValueHeads: Hkv, headDim: Dh, intermediateSize: F, vocabSize: V } = c;
  const C = s.rows;
  add('step input (ids | positions | chunk | last) i32', [s.inputWords], 'i32');
  add('x (C, D) f32 — residual stream', [C, D], 'f32');
  for (const sp of savedSpecs({ N: C, D, H, Hkv, Dh, F, eps: c.rmsNormEps }, s.targets, s.r ?? 0, { save: false, lse: false, rows: 'C' })) add(sp.name, sp.shape, sp.dtype);
  add('attention splits (S, C, H·Dh) f32', [s.splits, C, H * Dh], 'f32');
  add('attention split stats (S, C, H, 2) f32', [s.splits, C, H, 2], 'f32');
  add('x last, xf (1, D) f32', [1, D], 'f32', 2);
  add('rstd last (1) f32', [1], 'f32');
  add('logits (1, V) f32, its readback', [1, V], 'f32', 2);
  return Object.freeze({ buffers: Object.freeze(buffers), total: buffers.reduce((a, b) => a + b.bytes * b.count, 0) });
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
      else if (!s.doubleQuant && b.name.includes('absmax')) out.push('bnb_4bit_use_double_quant: true');
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
  for (const b of plan.buffers) {
    const remedy = `lower ${shrinkingSettings(b, plan.settings, plan.layers).join(', ') || 'nothing in the config'}`;
    if (b.bytes > device.maxBufferSize) {
      throw new DeviceLimitError(`memory plan: buffer "${b.name}" needs ${fmtBytes(b.bytes)}, over this device's maxBufferSize ${fmtBytes(device.maxBufferSize)}; ${remedy}`);
    }
    if (b.bound && b.bytes > device.maxStorageBufferBindingSize) {
      throw new DeviceLimitError(
        `memory plan: buffer "${b.name}" needs ${fmtBytes(b.bytes)} in one shader binding, over this device's maxStorageBufferBindingSize ${fmtBytes(device.maxStorageBufferBindingSize)}; ${remedy}`,
      );
    }
  }
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
 * Device memory from the adapter's description where it says so (NVIDIA's Vulkan driver reports
 * e.g. "NVIDIA H100 80GB HBM3"), or from a table of common cards; undefined when unknown.
 */
export function guessDeviceMemory(description: string): number | undefined {
  const m = /(\d+)\s*GB\b/i.exec(description);
  if (m) return Number(m[1]) * 2 ** 30;
  const known: [RegExp, number][] = [
    [/RTX\s*4090/i, 24],
    [/RTX\s*3090/i, 24],
    [/RTX\s*5090/i, 32],
    [/RTX\s*4080/i, 16],
    [/A100/i, 40],
    [/H100/i, 80],
    [/L4\b/i, 24],
  ];
  for (const [re, gib] of known) if (re.test(description)) return gib * 2 ** 30;
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
  const lines = [
    `memory plan: batch ${s.batch} × ${s.seq}, LoRA r=${s.r} on ${s.targets.join(',')}, ${s.base}${s.doubleQuant ? '+double-quant' : ''} base, ` +
      `checkpointing ${describeRecompute(s.recompute ?? (s.gradientCheckpointing ? 'full' : 'none'), plan.layers)}, ${s.lossHead ?? 'chunked'} loss head, ${s.optimizer}; ${(plan.trainable / 1e6).toFixed(2)} M trainable parameters`,
  ];
  for (const [cat, bytes] of Object.entries(plan.totals)) lines.push(`  ${cat.padEnd(10)} ${fmtBytes(bytes).padStart(11)}`);
  lines.push(`  ${'total'.padEnd(10)} ${fmtBytes(plan.total).padStart(11)}`);
  const big = plan.buffers.filter((b) => b.bytes * b.count > plan.total * 0.01).sort((a, b) => b.bytes * b.count - a.bytes * a.count);
  lines.push('  largest buffers:');
  for (const b of big) lines.push(`    ${fmtBytes(b.bytes * b.count).padStart(11)}  ${b.count > 1 ? `${b.count} × ` : ''}${b.name} [${b.category}, ${b.lifetime}]`);
  return lines.join('\n');
}
