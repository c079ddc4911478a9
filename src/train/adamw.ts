import { ConfigError, ShapeError } from '../errors.js';
import type { Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import { groups, Kernel, type KernelSpec, type WritableDispatch } from '../kernels/kernel.js';
import { defineParams } from '../kernels/params.js';
import { expectTensor, numel, tensorView, type Tensor } from '../kernels/tensor.js';
import { GRAD_NORM_STATE_WORDS } from './grad-norm.js';
import { readStateTensors, writeStateTensors, type NamedStateBuffer, type StateTensor } from './optimizer-state.js';
import { chunkElements } from './param-arena.js';
import { foldGrid } from '../kernels/grid.js';
import { allocatePlan, planBuffer, type PlanBuffer } from '../model/buffer-plan.js';

/**
 * AdamW on the GPU, exactly as torch.optim.AdamW (torch's _single_tensor_adamw / Adam with
 * decoupled weight decay), one element per invocation over a flat f32 buffer. With a ParamArena
 * the whole adapter is one buffer, so one dispatch updates every LoRA tensor (more only where the
 * buffer exceeds a storage binding). Order of operations, as torch:
 *   1. p ← p·(1 − lr·wd)
 *   2. m ← lerp(m, g, 1 − β1)
 *   3. v ← v·β2 + (1 − β2)·g·g
 *   4. p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
 * g is the gradient times the step's gradScale (a uniform) and the clip coefficient that the
 * grad-norm kernel wrote into the GradNormState buffer (read on the GPU, no CPU round trip).
 * The 'bnb' variant is bitsandbytes' 32-bit Adam kernel (paged_adamw_32bit, and the small tensors
 * of its 8-bit optimiser): weight decay after the update and eps scaled by √(1 − β2^t).
 *
 * lr and t change every step: setStep rewrites the dispatches' uniforms (no new bind groups).
 * `step` is t, the 1-based count of updates including this one (torch's state["step"] after its
 * increment).
 */
export const AdamwParams = defineParams('AdamwParams', [
  ['count', 'u32'],
  ['gradScale', 'f32'],
  ['decayPre', 'f32'],
  ['beta1', 'f32'],
  ['oneMinusBeta1', 'f32'],
  ['beta2', 'f32'],
  ['oneMinusBeta2', 'f32'],
  ['denomDiv', 'f32'],
  ['epsTerm', 'f32'],
  ['stepScale', 'f32'],
  ['decayPost', 'f32'],
] as const);

export const adamwStepSpec: KernelSpec<typeof AdamwParams> = {
  file: 'adamw_step.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'param', access: 'read_write' },
    { name: 'm', access: 'read_write' },
    { name: 'v', access: 'read_write' },
    { name: 'grad', access: 'read' },
    { name: 'gradNorm', access: 'read' },
  ],
  params: AdamwParams,
};

export const ADAMW_WORKGROUP = 256;

/** 'torch': torch.optim.AdamW. 'bnb': bitsandbytes' 32-bit Adam kernel (kOptimizer32bit2State). */
export type AdamwVariant = 'torch' | 'bnb';

/** Hyperparameters fixed for a run (TrainingArguments adam_beta1, adam_beta2, adam_epsilon, weight_decay). */
export interface AdamwHyper {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
}

/** What changes from step to step. */
export interface OptimizerStep {
  /** Learning rate of this update (the schedule's lrAt(step − 1)). */
  readonly lr: number;
  /** t: 1 for the first update (torch's state["step"] after its increment). */
  readonly step: number;
  /** Factor on the raw gradients, e.g. 1 / target tokens of the step; default 1. */
  readonly gradScale?: number;
}

export function checkAdamwHyper(where: string, h: AdamwHyper): void {
  const bad = (key: string, v: number, want: string): never => {
    throw new ConfigError(`${where}: ${key} = ${v} is out of range (${want})`);
  };
  if (!(h.beta1 >= 0 && h.beta1 < 1)) bad('adam_beta1', h.beta1, 'must be in [0, 1)');
  if (!(h.beta2 >= 0 && h.beta2 < 1)) bad('adam_beta2', h.beta2, 'must be in [0, 1)');
  if (!(h.eps > 0 && Number.isFinite(h.eps))) bad('adam_epsilon', h.eps, 'must be > 0');
  if (!(h.weightDecay >= 0 && Number.isFinite(h.weightDecay))) bad('weight_decay', h.weightDecay, 'must be ≥ 0');
}

function checkStep(where: string, s: OptimizerStep): void {
  if (!Number.isInteger(s.step) || s.step < 1) throw new ConfigError(`${where}: step t = ${s.step} must be an integer ≥ 1 (1 for the first update)`);
  if (!(s.lr >= 0) || !Number.isFinite(s.lr)) throw new ConfigError(`${where}: learning rate ${s.lr} must be a finite number ≥ 0`);
  const gs = s.gradScale ?? 1;
  if (!Number.isFinite(gs)) throw new ConfigError(`${where}: gradScale ${gs} must be finite`);
}

/**
 * The step's scalars in float64, as torch computes them in Python before handing them to its f32
 * tensor ops (the uniform rounds them to f32). Exported for the reference and for tests.
 */
export function adamwScalars(variant: AdamwVariant, h: AdamwHyper, s: OptimizerStep): Omit<Record<(typeof AdamwParams.fields)[number][0], number>, 'count'> {
  const bc1 = 1 - h.beta1 ** s.step;
  const bc2Sqrt = Math.sqrt(1 - h.beta2 ** s.step);
  const gradScale = s.gradScale ?? 1;
  if (variant === 'torch') {
    // Python computes 1 − β in double; the f32 op then rounds it.
    const common = { gradScale, beta1: h.beta1, oneMinusBeta1: 1 - h.beta1, beta2: h.beta2, oneMinusBeta2: 1 - h.beta2 };
    return { ...common, decayPre: 1 - s.lr * h.weightDecay, denomDiv: bc2Sqrt, epsTerm: h.eps, stepScale: -s.lr / bc1, decayPost: 1 };
  }
  // bitsandbytes computes 1.0f − beta in f32 inside the kernel.
  const common = { gradScale, beta1: h.beta1, oneMinusBeta1: oneMinusF32(h.beta1), beta2: h.beta2, oneMinusBeta2: oneMinusF32(h.beta2) };
  return { ...common, decayPre: 1, denomDiv: 1, epsTerm: h.eps * bc2Sqrt, stepScale: (-s.lr * bc2Sqrt) / bc1, decayPost: 1 - s.lr * h.weightDecay };
}

/** 1 − β computed in f32 from f32(β), as a CUDA kernel given `const float beta` does. */
export function oneMinusF32(beta: number): number {
  return Math.fround(1 - Math.fround(beta));
}

/** Tensors of one AdamW update: four f32 buffers of the same length and the grad-norm state. */
export interface AdamwTensors {
  /** (n) f32 — parameters, updated in place. */
  params: Tensor;
  /** (n) f32 — gradients (read). */
  grads: Tensor;
  /** (n) f32 — exp_avg, zero before the first step. */
  m: Tensor;
  /** (n) f32 — exp_avg_sq, zero before the first step. */
  v: Tensor;
  /** (4) u32 — GradNormState from createGradNormState / GradNorm. */
  gradNorm: Tensor;
}

/** Recorded AdamW dispatches; replay `dispatches` after the grad-norm program every step. */
export class AdamwProgram {
  constructor(
    private readonly where: string,
    private readonly variant: AdamwVariant,
    private readonly hyper: AdamwHyper,
    private readonly stages: readonly { dispatch: WritableDispatch<typeof AdamwParams>; count: number }[],
  ) {}

  get dispatches(): readonly Dispatch[] {
    return this.stages.map((s) => s.dispatch.dispatch);
  }

  /** Writes this step's lr, t and gradScale into the uniforms; call before submitting the step. */
  setStep(step: OptimizerStep): void {
    checkStep(this.where, step);
    const scalars = adamwScalars(this.variant, this.hyper, step);
    for (const s of this.stages) s.dispatch.write({ count: s.count, ...scalars });
  }
}

export class Adamw {
  private constructor(
    private readonly gpu: Gpu,
    readonly variant: AdamwVariant,
    private readonly kernel: Kernel<typeof AdamwParams>,
  ) {}

  static async create(gpu: Gpu, variant: AdamwVariant = 'torch'): Promise<Adamw> {
    return new Adamw(gpu, variant, await Kernel.create(gpu, adamwStepSpec, { WG: ADAMW_WORKGROUP, LERP: variant === 'torch' }));
  }

  /**
   * Binds one flat buffer set (any length; split into chunks that fit a storage binding). The
   * uniforms start as step 1 with lr 0 (a no-op update apart from the moments); call setStep.
   */
  bind(label: string, t: AdamwTensors, hyper: AdamwHyper, options: { chunkElements?: number } = {}): AdamwProgram {
    const where = `${label} (adamw)`;
    checkAdamwHyper(where, hyper);
    const n = numel(t.params.shape);
    for (const [name, x] of [['params', t.params], ['grads', t.grads], ['m', t.m], ['v', t.v]] as const) {
      if (x.dtype !== 'f32' || numel(x.shape) !== n) {
        throw new ShapeError(`${where}: ${name} ${x.label} is ${x.dtype} [${x.shape.join(', ')}], expected f32 of ${n} elements like params ${t.params.label}`);
      }
    }
    expectTensor(where, t.gradNorm, [GRAD_NORM_STATE_WORDS], 'u32');
    const chunk = chunkElements(this.gpu, options.chunkElements);
    const init = adamwScalars(this.variant, hyper, { lr: 0, step: 1 });
    const stages: { dispatch: WritableDispatch<typeof AdamwParams>; count: number }[] = [];
    for (let offset = 0; offset < n; offset += chunk) {
      const count = Math.min(chunk, n - offset);
      const view = (x: Tensor): Tensor => tensorView(x.buffer, `${x.label}[${offset}…]`, [count], 'f32', x.offset + offset * 4);
      const tensors = { param: view(t.params), m: view(t.m), v: view(t.v), grad: view(t.grads), gradNorm: t.gradNorm };
      stages.push({ dispatch: this.kernel.bindWritable(`${label} ${stages.length}`, tensors, { count, ...init }, grid(count)), count });
    }
    return new AdamwProgram(where, this.variant, hyper, stages);
  }
}

/** 2-D grid of one invocation per element (x ≤ 65535 workgroups). */
function grid(count: number): [number, number] {
  const g = groups(count, ADAMW_WORKGROUP);
  return foldGrid(g);
}

/** The moments' memory-plan entries for n parameters: "<label> exp_avg", "<label> exp_avg_sq", (n) f32 — what AdamwOptimizer.create allocates. */
export function planAdamw(label: string, n: number): PlanBuffer[] {
  return [
    planBuffer(`${label} exp_avg`, 'optimizer', 'run', [n], 'f32', { allocatedBy: 'optimizer' }),
    planBuffer(`${label} exp_avg_sq`, 'optimizer', 'run', [n], 'f32', { allocatedBy: 'optimizer' }),
  ];
}

/** AdamW with its own moment buffers (from planAdamw) for one flat parameter set (e.g. a ParamArena). */
export class AdamwOptimizer {
  private constructor(
    private readonly gpu: Gpu,
    readonly program: AdamwProgram,
    /** (n) f32 — exp_avg */
    readonly m: Tensor,
    /** (n) f32 — exp_avg_sq */
    readonly v: Tensor,
  ) {}

  static async create(
    gpu: Gpu,
    label: string,
    target: { readonly params: Tensor; readonly grads: Tensor },
    gradNorm: Tensor,
    hyper: AdamwHyper,
    options: { variant?: AdamwVariant; chunkElements?: number } = {},
  ): Promise<AdamwOptimizer> {
    const n = numel(target.params.shape);
    const state = allocatePlan(gpu, planAdamw(label, n));
    const m = state.one(`${label} exp_avg`);
    const v = state.one(`${label} exp_avg_sq`);
    const kernel = await Adamw.create(gpu, options.variant ?? 'torch');
    const program = kernel.bind(label, { params: target.params, grads: target.grads, m, v, gradNorm }, hyper, { chunkElements: options.chunkElements });
    return new AdamwOptimizer(gpu, program, m, v);
  }

  get dispatches(): readonly Dispatch[] {
    return this.program.dispatches;
  }

  setStep(step: OptimizerStep): void {
    this.program.setStep(step);
  }

  /** Bytes of optimiser state: m and v, f32 each. */
  get stateBytes(): number {
    return this.m.byteSize + this.v.byteSize;
  }

  /** The saved buffers: exp_avg and exp_avg_sq, (n) f32 each (torch's state names). */
  private get stateBuffers(): NamedStateBuffer[] {
    return [
      { name: 'exp_avg', tensor: this.m },
      { name: 'exp_avg_sq', tensor: this.v },
    ];
  }

  /** Reads m and v back (a checkpoint; waits for the GPU). The step count t is the caller's. */
  exportState(): Promise<StateTensor[]> {
    return readStateTensors(this.gpu, this.stateBuffers);
  }

  /** Writes m and v from a checkpoint (`where` names it in errors); shapes must match exactly. */
  importState(where: string, tensors: readonly StateTensor[]): void {
    writeStateTensors(this.gpu, where, this.stateBuffers, tensors);
  }
}

/**
 * float64 reference of one update of every element (arrays updated in place). The gradient used is
 * grads[i]·gradScale·clipCoef; with nonFinite (the grad-norm flag) the step is skipped, as the kernel does.
 */
export function adamwStepRef(
  variant: AdamwVariant,
  state: { params: Float64Array; m: Float64Array; v: Float64Array },
  grads: ArrayLike<number>,
  hyper: AdamwHyper,
  step: OptimizerStep,
  clip: { clipCoef: number; nonFinite: number } = { clipCoef: 1, nonFinite: 0 },
): void {
  if (clip.nonFinite > 0) return;
  const { params: p, m, v } = state;
  const gs = step.gradScale ?? 1;
  const bc1 = 1 - hyper.beta1 ** step.step;
  const bc2Sqrt = Math.sqrt(1 - hyper.beta2 ** step.step);
  for (let i = 0; i < p.length; i++) {
    const g = grads[i] * gs * clip.clipCoef;
    if (variant === 'torch') {
      p[i] *= 1 - step.lr * hyper.weightDecay;
      m[i] += (1 - hyper.beta1) * (g - m[i]);
      v[i] = v[i] * hyper.beta2 + (1 - hyper.beta2) * g * g;
      p[i] -= (step.lr / bc1) * (m[i] / (Math.sqrt(v[i]) / bc2Sqrt + hyper.eps));
    } else {
      m[i] = m[i] * hyper.beta1 + oneMinusF32(hyper.beta1) * g;
      v[i] = v[i] * hyper.beta2 + oneMinusF32(hyper.beta2) * g * g;
      p[i] += ((-step.lr * bc2Sqrt) / bc1) * (m[i] / (Math.sqrt(v[i]) + hyper.eps * bc2Sqrt));
      p[i] *= 1 - step.lr * hyper.weightDecay;
    }
  }
}

/** Bytes of fp32 AdamW state for n parameters (exp_avg and exp_avg_sq). */
export function adamwStateBytes(n: number): number {
  return 8 * n;
}
