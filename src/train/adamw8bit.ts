import { ConfigError, ShapeError } from '../errors.js';
import type { Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import { groups, Kernel, type KernelSpec, type WritableDispatch } from '../kernels/kernel.js';
import { defineParams } from '../kernels/params.js';
import { expectTensor, numel, tensorView, type Tensor } from '../kernels/tensor.js';
import { Adamw, adamwStateBytes, checkAdamwHyper, oneMinusF32, type AdamwHyper, type AdamwProgram, type AdamwVariant, type OptimizerStep } from './adamw.js';
import { GRAD_NORM_STATE_WORDS } from './grad-norm.js';
import { readStateTensors, writeStateTensors, type NamedStateBuffer, type StateTensor } from './optimizer-state.js';
import { chunkElements, type ArenaLayout, type ArenaSlot } from './param-arena.js';
import { quantileSearch } from '../kernels/quantile-search.js';
import { foldGrid } from '../kernels/grid.js';
import { allocatePlan, planBuffer, type PlanBuffer } from '../model/buffer-plan.js';

/**
 * 8-bit AdamW as bitsandbytes' AdamW8bit / PagedAdamW8bit (what `optim: paged_adamw_8bit` runs on
 * one GPU; "paged" only moves the state to unified memory under pressure, which changes no number):
 * kOptimizerStatic8bit2StateBlockwise with blocks of 256 elements, m in the signed and v in the
 * unsigned dynamic map, weight decay applied after the update. As bitsandbytes, tensors with fewer
 * than min_8bit_size = 4096 elements keep 32-bit state and take its 32-bit Adam kernel (here the
 * AdamW kernel's 'bnb' variant); that needs the tensors' boundaries, which a ParamArena gives.
 * A plain flat buffer is treated as one tensor.
 *
 * Known property of the scheme (bitsandbytes' too): v is quantised relative to its block's largest
 * value, and the unsigned map's smallest non-zero code is 3.25e-7, so an element whose √v is below
 * ~6e-4 of the block's largest √v stores v = 0 and its next steps are too large. Gradients of
 * neighbouring LoRA elements are of similar size, so this rarely bites; a test problem mixing
 * gradient scales of 1e4 inside a block does show it.
 */
export const BNB_BLOCK = 256;
/** bitsandbytes' Optimizer8bit default min_8bit_size. */
export const MIN_8BIT_SIZE = 4096;

export const Adamw8bitParams = defineParams('Adamw8bitParams', [
  ['count', 'u32'],
  ['blockBase', 'u32'],
  ['gradScale', 'f32'],
  ['beta1', 'f32'],
  ['oneMinusBeta1', 'f32'],
  ['beta2', 'f32'],
  ['oneMinusBeta2', 'f32'],
  ['stepSize', 'f32'],
  ['epsTerm', 'f32'],
  ['decay', 'f32'],
] as const);

export const adamw8bitStepSpec: KernelSpec<typeof Adamw8bitParams> = {
  file: 'adamw8bit_step.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'param', access: 'read_write' },
    { name: 'codes1', access: 'read_write' },
    { name: 'codes2', access: 'read_write' },
    { name: 'absmax', access: 'read_write' },
    { name: 'grad', access: 'read' },
    { name: 'qmaps', access: 'read' },
    { name: 'gradNorm', access: 'read' },
  ],
  params: Adamw8bitParams,
};

/** Invocations per workgroup: 64 per 256-element block, 4 blocks at a time. */
export const ADAMW8BIT_WORKGROUP = 256;
const BLOCKS_PER_GROUP = ADAMW8BIT_WORKGROUP / 64;
/**
 * Workgroups per dispatch at most; they loop over the blocks, so each sets up the maps once. On an
 * H100 at 66M parameters: 1.07 ms with one workgroup per 4 blocks, 0.89–0.92 ms capped at
 * 1056–16384 workgroups (0.90 at 4096).
 */
export const ADAMW8BIT_MAX_WORKGROUPS = 4096;

/**
 * bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for exponents
 * i = 0 … 6, the midpoints of torch.linspace(0.1, 1, 2^i + 1) (signed; 2^(i+1) + 1 unsigned) times
 * 10^(i−6), with their negatives when signed, plus 0 and 1, sorted: 256 values in [−0.993, 1]
 * (signed, code 127 = 0) or [0, 1] (unsigned, code 0 = 0). Computed with torch's f32 rounding
 * (linspace's step and each product in f32), so each value is within an ulp of bitsandbytes' table.
 */
export function createDynamicMap(signed: boolean): Float32Array {
  const f = Math.fround;
  const scales = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const items = signed ? 2 ** i + 1 : 2 ** (i + 1) + 1;
    const bounds = linspaceF32(0.1, 1, items);
    const scale = f(scales[i]);
    for (let k = 0; k + 1 < items; k++) {
      const mean = f(f(bounds[k] + bounds[k + 1]) / 2);
      data.push(f(scale * mean));
      if (signed) data.push(f(-scale * mean));
    }
  }
  data.push(0, 1);
  if (data.length !== 256) throw new Error(`createDynamicMap: ${data.length} values, expected 256`);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** torch.linspace(start, end, steps) for float32 on the CPU (step and each point rounded to f32). */
function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const f = Math.fround;
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out = new Float32Array(steps);
  for (let i = 0; i < steps; i++) out[i] = i < half ? f(s + f(step * i)) : f(e - f(step * (steps - i - 1)));
  return out;
}

/** Both maps as the kernel binds them: signed (0…255) then unsigned (256…511). */
export function dynamicMaps(): Float32Array {
  const out = new Float32Array(512);
  out.set(createDynamicMap(true), 0);
  out.set(createDynamicMap(false), 256);
  return out;
}

/** bitsandbytes' quantize_2D: the quantile search from −1 (signed map) or 0, without edge clamps. */
export function quantizeDynamic(code: ArrayLike<number>, signed: boolean, x: number): number {
  return quantileSearch(code, x, signed ? -1 : 0, false);
}

/** The step's scalars: bitsandbytes computes them in f32 in the kernel; here in float64, then f32. */
export function adamw8bitScalars(h: AdamwHyper, s: OptimizerStep): Omit<Record<(typeof Adamw8bitParams.fields)[number][0], number>, 'count' | 'blockBase'> {
  const c1 = 1 - h.beta1 ** s.step;
  const c2 = Math.sqrt(1 - h.beta2 ** s.step);
  return {
    gradScale: s.gradScale ?? 1,
    beta1: h.beta1,
    oneMinusBeta1: oneMinusF32(h.beta1),
    beta2: h.beta2,
    oneMinusBeta2: oneMinusF32(h.beta2),
    stepSize: (-s.lr * c2) / c1,
    epsTerm: c2 * h.eps,
    decay: h.weightDecay > 0 ? 1 - s.lr * h.weightDecay : 1,
  };
}

export interface Adamw8bitTensors {
  /** (n) f32 — parameters (n a multiple of 4). */
  params: Tensor;
  /** (n) f32 */
  grads: Tensor;
  /** (n) u8x4 — m codes (zero before the first step). */
  codes1: Tensor;
  /** (n) u8x4 — v codes. */
  codes2: Tensor;
  /** (blocks, 2) f32 — per-block absmax of m and v for the WHOLE state; blockBase picks this range's. */
  absmax: Tensor;
  /** (512) f32 — dynamicMaps(). */
  qmaps: Tensor;
  /** (4) u32 — GradNormState. */
  gradNorm: Tensor;
}

export class Adamw8bitProgram {
  constructor(
    private readonly where: string,
    private readonly hyper: AdamwHyper,
    private readonly stages: readonly { dispatch: WritableDispatch<typeof Adamw8bitParams>; count: number; blockBase: number }[],
  ) {}

  get dispatches(): readonly Dispatch[] {
    return this.stages.map((s) => s.dispatch.dispatch);
  }

  setStep(step: OptimizerStep): void {
    if (!Number.isInteger(step.step) || step.step < 1) throw new ShapeError(`${this.where}: step t = ${step.step} must be an integer ≥ 1`);
    const scalars = adamw8bitScalars(this.hyper, step);
    for (const s of this.stages) s.dispatch.write({ count: s.count, blockBase: s.blockBase, ...scalars });
  }
}

export class Adamw8bit {
  private constructor(
    private readonly gpu: Gpu,
    private readonly kernel: Kernel<typeof Adamw8bitParams>,
  ) {}

  static async create(gpu: Gpu): Promise<Adamw8bit> {
    return new Adamw8bit(gpu, await Kernel.create(gpu, adamw8bitStepSpec, { WG: ADAMW8BIT_WORKGROUP }));
  }

  /**
   * Binds the 8-bit update of elements [offset, offset + count) of the state (default: all of
   * params). offset must be a multiple of 256 (a block start); the range is split into chunks
   * that fit a storage binding.
   */
  bind(
    label: string,
    t: Adamw8bitTensors,
    hyper: AdamwHyper,
    options: { offset?: number; count?: number; chunkElements?: number; maxWorkgroups?: number } = {},
  ): Adamw8bitProgram {
    const where = `${label} (adamw8bit)`;
    checkAdamwHyper(where, hyper);
    const n = numel(t.params.shape);
    const start = options.offset ?? 0;
    const total = options.count ?? n - start;
    if (t.params.dtype !== 'f32' || t.grads.dtype !== 'f32' || numel(t.grads.shape) !== n) {
      throw new ShapeError(`${where}: params ${t.params.label} and grads ${t.grads.label} must both be f32 of ${n} elements`);
    }
    for (const c of [t.codes1, t.codes2]) {
      if (c.dtype !== 'u8x4' || numel(c.shape) !== n) throw new ShapeError(`${where}: ${c.label} is ${c.dtype} [${c.shape.join(', ')}], expected u8x4 of ${n} elements`);
    }
    expectTensor(where, t.absmax, [Math.ceil(n / BNB_BLOCK), 2], 'f32');
    expectTensor(where, t.qmaps, [512], 'f32');
    expectTensor(where, t.gradNorm, [GRAD_NORM_STATE_WORDS], 'u32');
    if (start % BNB_BLOCK !== 0 || total < 1 || start + total > n || total % 4 !== 0) {
      throw new ShapeError(`${where}: range [${start}, ${start + total}) must start at a multiple of ${BNB_BLOCK}, hold a multiple of 4 elements and lie within ${n}`);
    }
    const chunk = chunkElements(this.gpu, options.chunkElements);
    const init = adamw8bitScalars(hyper, { lr: 0, step: 1 });
    const stages: { dispatch: WritableDispatch<typeof Adamw8bitParams>; count: number; blockBase: number }[] = [];
    for (let off = start; off < start + total; off += chunk) {
      const count = Math.min(chunk, start + total - off);
      const view = (x: Tensor): Tensor => tensorView(x.buffer, `${x.label}[${off}…]`, [count], x.dtype, x.offset + off * (x.dtype === 'u8x4' ? 1 : 4));
      const blockBase = off / BNB_BLOCK;
      const tensors = { param: view(t.params), grad: view(t.grads), codes1: view(t.codes1), codes2: view(t.codes2), absmax: t.absmax, qmaps: t.qmaps, gradNorm: t.gradNorm };
      const wgs = Math.min(options.maxWorkgroups ?? ADAMW8BIT_MAX_WORKGROUPS, groups(Math.ceil(count / BNB_BLOCK), BLOCKS_PER_GROUP));
      const grid = foldGrid(wgs);
      stages.push({ dispatch: this.kernel.bindWritable(`${label} ${stages.length}`, tensors, { count, blockBase, ...init }, grid), count, blockBase });
    }
    return new Adamw8bitProgram(where, hyper, stages);
  }
}

/** A contiguous range of the flat buffer whose tensors all take the same path. */
interface StateRun {
  readonly offset: number;
  readonly count: number;
  readonly eightBit: boolean;
}

/** Splits the buffer into runs of 8-bit tensors and of small (32-bit state) tensors. */
export function stateRuns(n: number, slots: readonly ArenaSlot[] | undefined, min8bitSize: number): StateRun[] {
  if (!slots || slots.length === 0) return [{ offset: 0, count: n, eightBit: true }];
  const runs: StateRun[] = [];
  slots.forEach((s, i) => {
    const end = i + 1 < slots.length ? slots[i + 1].offset : n;
    const eightBit = s.count >= min8bitSize;
    const last = runs[runs.length - 1];
    if (last && last.eightBit === eightBit && last.offset + last.count === s.offset) runs[runs.length - 1] = { ...last, count: end - last.offset };
    else runs.push({ offset: s.offset, count: end - s.offset, eightBit });
  });
  return runs;
}

/**
 * The state's memory-plan entries for n parameters (tensors at `slots`; none: one flat tensor):
 * "<label> state1", "<label> state2" (n) u8x4 codes, "<label> absmax" (blocks, 2) f32, "<label> qmaps"
 * (512) f32 and, when some tensors are under min_8bit_size, "<label> small exp_avg" / "small
 * exp_avg_sq" (s) f32 — what Adamw8bitOptimizer.create allocates.
 */
export function planAdamw8bit(label: string, n: number, slots: readonly ArenaSlot[] | undefined, options: { min8bitSize?: number } = {}): PlanBuffer[] {
  const runs = stateRuns(n, slots, options.min8bitSize ?? MIN_8BIT_SIZE);
  const o = { allocatedBy: 'optimizer' } as const;
  const out = [
    planBuffer(`${label} state1`, 'optimizer', 'run', [n], 'u8x4', o),
    planBuffer(`${label} state2`, 'optimizer', 'run', [n], 'u8x4', o),
    planBuffer(`${label} absmax`, 'optimizer', 'run', [Math.ceil(n / BNB_BLOCK), 2], 'f32', o),
    planBuffer(`${label} qmaps`, 'optimizer', 'run', [512], 'f32', o),
  ];
  const smallTotal = runs.filter((r) => !r.eightBit).reduce((a, r) => a + r.count, 0);
  if (smallTotal > 0) out.push(planBuffer(`${label} small exp_avg`, 'optimizer', 'run', [smallTotal], 'f32', o), planBuffer(`${label} small exp_avg_sq`, 'optimizer', 'run', [smallTotal], 'f32', o));
  return out;
}

/** 8-bit AdamW with its own state (from planAdamw8bit) for one flat parameter set (a ParamArena, or any params/grads pair). */
export class Adamw8bitOptimizer {
  private constructor(
    private readonly gpu: Gpu,
    private readonly programs: readonly (Adamw8bitProgram | AdamwProgram)[],
    /** (n) u8x4, (n) u8x4, (blocks, 2) f32, (512) f32 */
    readonly state: { codes1: Tensor; codes2: Tensor; absmax: Tensor; qmaps: Tensor },
    /** (s) f32 each — exp_avg / exp_avg_sq of the small tensors, packed run after run; absent when none. */
    readonly small: { m: Tensor; v: Tensor } | undefined,
  ) {}

  static async create(
    gpu: Gpu,
    label: string,
    target: { readonly params: Tensor; readonly grads: Tensor; readonly slots?: readonly ArenaSlot[] },
    gradNorm: Tensor,
    hyper: AdamwHyper,
    options: { min8bitSize?: number; chunkElements?: number } = {},
  ): Promise<Adamw8bitOptimizer> {
    const n = numel(target.params.shape);
    const runs = stateRuns(n, target.slots, options.min8bitSize ?? MIN_8BIT_SIZE);
    const state = allocatePlan(gpu, planAdamw8bit(label, n, target.slots, options));
    const codes1 = state.one(`${label} state1`);
    const codes2 = state.one(`${label} state2`);
    const absmax = state.one(`${label} absmax`);
    const qmaps = state.one(`${label} qmaps`);
    gpu.write(qmaps, dynamicMaps());
    const smallM = state.maybe(`${label} small exp_avg`);
    const smallV = state.maybe(`${label} small exp_avg_sq`);
    const small = smallM && smallV ? { m: smallM, v: smallV } : undefined;
    const programs: (Adamw8bitProgram | AdamwProgram)[] = [];
    const k8 = runs.some((r) => r.eightBit) ? await Adamw8bit.create(gpu) : undefined;
    const k32 = small ? await Adamw.create(gpu, 'bnb') : undefined;
    let smallOffset = 0;
    for (const r of runs) {
      if (r.eightBit && k8) {
        programs.push(
          k8.bind(`${label} [${r.offset}, ${r.offset + r.count})`, { params: target.params, grads: target.grads, codes1, codes2, absmax, qmaps, gradNorm }, hyper, {
            offset: r.offset,
            count: r.count,
            chunkElements: options.chunkElements,
          }),
        );
      } else if (!r.eightBit && k32 && small) {
        const view = (x: Tensor, at: number): Tensor => tensorView(x.buffer, `${x.label}[${at}…]`, [r.count], 'f32', x.offset + at * 4);
        programs.push(
          k32.bind(
            `${label} 32-bit [${r.offset}, ${r.offset + r.count})`,
            { params: view(target.params, r.offset), grads: view(target.grads, r.offset), m: view(small.m, smallOffset), v: view(small.v, smallOffset), gradNorm },
            hyper,
            { chunkElements: options.chunkElements },
          ),
        );
        smallOffset += r.count;
      }
    }
    return new Adamw8bitOptimizer(gpu, programs, { codes1, codes2, absmax, qmaps }, small);
  }

  get dispatches(): readonly Dispatch[] {
    return this.programs.flatMap((p) => p.dispatches);
  }

  setStep(step: OptimizerStep): void {
    for (const p of this.programs) p.setStep(step);
  }

  get stateBytes(): number {
    const s = this.state;
    return s.codes1.byteSize + s.codes2.byteSize + s.absmax.byteSize + s.qmaps.byteSize + (this.small ? this.small.m.byteSize + this.small.v.byteSize : 0);
  }

  /**
   * The saved buffers (bitsandbytes' state names): state1 / state2 (n) u8 codes of m and v,
   * absmax (blocks, 2) f32, and the 32-bit moments of the small tensors when there are any. The
   * maps are constants (dynamicMaps) and are not saved.
   */
  private get stateBuffers(): NamedStateBuffer[] {
    const out: NamedStateBuffer[] = [
      { name: 'state1', tensor: this.state.codes1 },
      { name: 'state2', tensor: this.state.codes2 },
      { name: 'absmax', tensor: this.state.absmax },
    ];
    if (this.small) out.push({ name: 'small.exp_avg', tensor: this.small.m }, { name: 'small.exp_avg_sq', tensor: this.small.v });
    return out;
  }

  /** Reads the quantised state and scales back (a checkpoint; waits for the GPU). */
  exportState(): Promise<StateTensor[]> {
    return readStateTensors(this.gpu, this.stateBuffers);
  }

  /** Writes the state from a checkpoint (`where` names it in errors); shapes must match exactly. */
  importState(where: string, tensors: readonly StateTensor[]): void {
    writeStateTensors(this.gpu, where, this.stateBuffers, tensors);
  }
}

export type OptimizerKind = 'adamw' | 'adamw_8bit';

/**
 * How each `optim` name of the config runs here: torch's AdamW for adamw_torch / adamw_torch_fused /
 * adamw (the fused kernel computes the same formula); bitsandbytes' 32-bit Adam kernel for
 * paged_adamw_32bit; bitsandbytes' blockwise 8-bit AdamW for adamw_8bit / paged_adamw_8bit
 * (paging changes where the state lives, not a number).
 */
export function resolveOptim(optim: string): { kind: OptimizerKind; variant: AdamwVariant } {
  switch (optim) {
    case 'adamw_torch':
    case 'adamw_torch_fused':
    case 'adamw':
      return { kind: 'adamw', variant: 'torch' };
    case 'paged_adamw_32bit':
      return { kind: 'adamw', variant: 'bnb' };
    case 'adamw_8bit':
    case 'paged_adamw_8bit':
      return { kind: 'adamw_8bit', variant: 'bnb' };
    default:
      throw new ConfigError(`optim "${optim}" is not supported; use one of adamw_torch, adamw_torch_fused, adamw, paged_adamw_32bit, adamw_8bit, paged_adamw_8bit`);
  }
}

/**
 * Bytes of optimiser state for n parameters (a number: one flat tensor) or for an arena (its
 * tensors under min_8bit_size keep fp32 state in the 8-bit optimiser, as bitsandbytes):
 *   adamw       8 bytes per element (m, v in f32)
 *   adamw_8bit  2 bytes per element (one code each for m and v) + 8 bytes per 256-element block
 *               (absmax of m and v) + 2 KiB of maps; 8 bytes per element of small tensors.
 */
export function optimizerStateBytes(kind: OptimizerKind, params: number | ArenaLayout, options: { min8bitSize?: number } = {}): number {
  const n = typeof params === 'number' ? params : params.count;
  if (kind === 'adamw') return adamwStateBytes(n);
  const runs = stateRuns(n, typeof params === 'number' ? undefined : params.slots, options.min8bitSize ?? MIN_8BIT_SIZE);
  const small = runs.filter((r) => !r.eightBit).reduce((a, r) => a + r.count, 0);
  const words = (bytes: number): number => Math.ceil(bytes / 4) * 4;
  return 2 * words(n) + Math.ceil(n / BNB_BLOCK) * 8 + 512 * 4 + adamwStateBytes(small);
}

/** The state the reference updates (float64 numbers, byte codes). */
export interface Adamw8bitRefState {
  params: Float64Array;
  codes1: Uint8Array;
  codes2: Uint8Array;
  /** (blocks, 2): absmax of m then of v per block. */
  absmax: Float64Array;
}

/**
 * float64 reference of kOptimizerStatic8bit2StateBlockwise on one flat tensor (blocks of 256, the
 * last one partial), with the kernel's scalars. `maps` = dynamicMaps().
 */
export function adamw8bitStepRef(
  state: Adamw8bitRefState,
  grads: ArrayLike<number>,
  maps: Float32Array,
  hyper: AdamwHyper,
  step: OptimizerStep,
  clip: { clipCoef: number; nonFinite: number } = { clipCoef: 1, nonFinite: 0 },
): void {
  if (clip.nonFinite > 0) return;
  const k = adamw8bitScalars(hyper, step);
  const f = Math.fround;
  const [b1, omb1, b2, omb2] = [f(k.beta1), f(k.oneMinusBeta1), f(k.beta2), f(k.oneMinusBeta2)];
  const [stepSize, epsTerm, decay] = [f(k.stepSize), f(k.epsTerm), f(k.decay)];
  const scale = f(k.gradScale) * clip.clipCoef;
  const code1 = maps.subarray(0, 256);
  const code2 = maps.subarray(256, 512);
  const n = state.params.length;
  const s1 = new Float64Array(BNB_BLOCK);
  const s2 = new Float64Array(BNB_BLOCK);
  for (let b = 0; b * BNB_BLOCK < n; b++) {
    const lo = b * BNB_BLOCK;
    const hi = Math.min(n, lo + BNB_BLOCK);
    let a1 = 0;
    let a2 = 0;
    for (let i = lo; i < hi; i++) {
      const g = grads[i];
      if (Number.isFinite(g)) {
        const gv = g * scale;
        s2[i - lo] = code2[state.codes2[i]] * state.absmax[2 * b + 1] * b2 + omb2 * gv * gv;
        s1[i - lo] = code1[state.codes1[i]] * state.absmax[2 * b] * b1 + omb1 * gv;
      } else {
        s1[i - lo] = 0;
        s2[i - lo] = 0;
      }
      a1 = Math.max(a1, Math.abs(s1[i - lo]));
      a2 = Math.max(a2, Math.abs(s2[i - lo]));
    }
    state.absmax[2 * b] = a1;
    state.absmax[2 * b + 1] = a2;
    for (let i = lo; i < hi; i++) {
      const m = s1[i - lo];
      const v = s2[i - lo];
      if (Number.isFinite(grads[i])) state.params[i] = (state.params[i] + stepSize * (m / (Math.sqrt(v) + epsTerm))) * decay;
      let q1 = quantizeDynamic(code1, true, a1 === 0 ? 0 : m / a1);
      if (signBit(code1[q1]) !== signBit(m)) q1 = m > 0 ? (q1 + 1) & 255 : (q1 + 255) & 255;
      state.codes1[i] = q1;
      state.codes2[i] = quantizeDynamic(code2, false, a2 === 0 ? 0 : v / a2);
    }
  }
}

function signBit(x: number): boolean {
  return x < 0 || Object.is(x, -0);
}

/** Decodes the moments of the reference or GPU state: m[i] = code1[c]·absmax, v likewise. */
export function decodeMoments(codes1: Uint8Array, codes2: Uint8Array, absmax: ArrayLike<number>, maps: Float32Array): { m: Float64Array; v: Float64Array } {
  const m = new Float64Array(codes1.length);
  const v = new Float64Array(codes2.length);
  for (let i = 0; i < m.length; i++) {
    const b = Math.floor(i / BNB_BLOCK);
    m[i] = maps[codes1[i]] * absmax[2 * b];
    v[i] = maps[256 + codes2[i]] * absmax[2 * b + 1];
  }
  return { m, v };
}
