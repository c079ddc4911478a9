import { ConfigError, ShapeError } from '../errors.js';
import type { Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import { groups, Kernel, type KernelSpec, type WritableDispatch } from '../kernels/kernel.js';
import { defineParams } from '../kernels/params.js';
import { expectTensor, numel, tensorView, type Tensor } from '../kernels/tensor.js';
import { chunkElements, chunkElementsFor } from './param-arena.js';
import { allocatePlan, planBuffer, type PlanBuffer } from '../model/buffer-plan.js';

/**
 * Global gradient-norm clipping as torch.nn.utils.clip_grad_norm_ (what the Hugging Face Trainer
 * calls with max_grad_norm, default 1.0) computed on the GPU in two deterministic stages:
 *   1. grad_norm_partial.wgsl: G workgroups each write Σ (gradScale·g)² over their elements and a
 *      count of non-finite elements;
 *   2. grad_norm_finish.wgsl: one workgroup adds the partials and writes the GradNormState
 *      { totalNorm, clipCoef = min(maxNorm / (totalNorm + 1e-6), 1), nonFinite, skippedSteps }.
 * The optimiser kernels read clipCoef and nonFinite from that buffer (no CPU round trip); the CPU
 * reads it only at logging steps (readGradNormState). A step with a non-finite gradient is skipped
 * by the optimisers (torch would write NaN into the parameters); skippedSteps counts such steps.
 */
export const GradNormPartialParams = defineParams('GradNormPartialParams', [
  ['count', 'u32'],
  ['partialBase', 'u32'],
  ['gradScale', 'f32'],
] as const);

export const gradNormPartialSpec: KernelSpec<typeof GradNormPartialParams> = {
  file: 'grad_norm_partial.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'partials', access: 'read_write' },
    { name: 'grads', access: 'read' },
  ],
  params: GradNormPartialParams,
};

export const GradNormFinishParams = defineParams('GradNormFinishParams', [
  ['partialCount', 'u32'],
  ['maxNorm', 'f32'],
  ['clip', 'u32'],
] as const);

export const gradNormFinishSpec: KernelSpec<typeof GradNormFinishParams> = {
  file: 'grad_norm_finish.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'state', access: 'read_write' },
    { name: 'partials', access: 'read' },
  ],
  params: GradNormFinishParams,
};

export const GRAD_NORM_WORKGROUP = 256;
/** Most stage-1 workgroups per chunk: 1024 × 256 invocations fill an H100 (132 SMs × 2048). */
export const GRAD_NORM_MAX_GROUPS = 1024;
/** Elements per invocation below which fewer workgroups are used (small buffers, one trip each). */
const MIN_PER_INVOCATION = 4;

/**
 * The clipping state, (4) u32 words: totalNorm f32, clipCoef f32, nonFinite u32, skippedSteps u32.
 * Created with clipCoef = 1 so that an optimiser bound to it before any norm runs is unscaled.
 */
export const GRAD_NORM_STATE_WORDS = 4;

/** The state's memory-plan entry: "<label>", (4) u32 — what createGradNormState allocates. */
export function planGradNormState(label: string): PlanBuffer {
  return planBuffer(label, 'optimizer', 'run', [GRAD_NORM_STATE_WORDS], 'u32', { allocatedBy: 'optimizer' });
}

/** Allocates the state from planGradNormState and writes clipCoef = 1. */
export function createGradNormState(gpu: Gpu, label: string): Tensor {
  const init = new Uint32Array(GRAD_NORM_STATE_WORDS);
  new Float32Array(init.buffer)[1] = 1;
  const state = allocatePlan(gpu, [planGradNormState(label)]).one(label);
  gpu.write(state, init);
  return state;
}

/** Stage-1 chunks of n gradient elements, `chunk` elements each: their workgroups and first partial. */
function partialPlan(n: number, chunk: number): { plans: { offset: number; count: number; groups: number; partialBase: number }[]; partialCount: number } {
  const plans: { offset: number; count: number; groups: number; partialBase: number }[] = [];
  let partialCount = 0;
  for (let offset = 0; offset < n; offset += chunk) {
    const count = Math.min(chunk, n - offset);
    const g = Math.min(GRAD_NORM_MAX_GROUPS, groups(count, GRAD_NORM_WORKGROUP * MIN_PER_INVOCATION));
    plans.push({ offset, count, groups: g, partialBase: partialCount });
    partialCount += g;
  }
  return { plans, partialCount };
}

/**
 * The partials' memory-plan entry for n gradient elements in chunks of `chunk` (chunkElements of
 * the device): "<label> partials", (P, 2) u32 — what GradNorm.bind(label, …) allocates.
 */
export function planGradNormPartials(label: string, n: number, chunk: number): PlanBuffer {
  return planBuffer(`${label} partials`, 'optimizer', 'run', [partialPlan(n, chunk).partialCount, 2], 'u32', { allocatedBy: 'optimizer' });
}

/**
 * Both entries of the clipping program of n gradient elements on a device whose storage bindings
 * hold maxBindingBytes: the state "<label> state" (createGradNormState) and the partials of
 * GradNorm.bind("<label>", …), in the order the Trainer allocates them.
 */
export function planGradNorm(label: string, n: number, maxBindingBytes: number): PlanBuffer[] {
  const chunk = chunkElementsFor(maxBindingBytes);
  return [planGradNormState(`${label} state`), planGradNormPartials(label, n, chunk)];
}

export interface GradNormReadout {
  /** ‖gradScale·g‖₂ of the last step; Infinity when a gradient was non-finite (as torch reports). */
  totalNorm: number;
  /** The norm over the finite elements only (what the kernel stores). */
  finiteNorm: number;
  clipCoef: number;
  /** Non-finite gradient elements in the last step (0 normally). */
  nonFinite: number;
  /** Steps skipped so far because of non-finite gradients. */
  skippedSteps: number;
}

/** Reads the state back (logging steps only: this waits for the GPU). */
export async function readGradNormState(gpu: Gpu, state: Tensor): Promise<GradNormReadout> {
  const bytes = await gpu.read(state);
  const f = new Float32Array(bytes);
  const u = new Uint32Array(bytes);
  return { totalNorm: u[2] > 0 ? Infinity : f[0], finiteNorm: f[0], clipCoef: f[1], nonFinite: u[2], skippedSteps: u[3] };
}

export interface GradNormOptions {
  /** max_grad_norm; 0 turns clipping off (clipCoef stays 1) while the norm is still computed. */
  maxNorm: number;
  /** Elements per stage-1 dispatch (default: as many as one storage binding holds). For tests. */
  chunkElements?: number;
}

/** The recorded stages for one gradient buffer; replay `dispatches` every optimiser step. */
export class GradNormProgram {
  constructor(
    /** Stage-1 dispatches (one per chunk of the buffer), then the stage-2 dispatch. */
    readonly dispatches: readonly Dispatch[],
    private readonly partialStages: readonly WritableDispatch<typeof GradNormPartialParams>[],
    private readonly partialArgs: readonly { count: number; partialBase: number }[],
    /** (P) {f32, u32} — the stage-1 partials (scratch, 8 bytes per workgroup). */
    readonly partials: Tensor,
  ) {}

  /**
   * Sets the factor the gradients are multiplied by before the norm (e.g. 1 / target tokens of the
   * step when the backward pass accumulates summed token losses). Call before submitting the step.
   */
  setGradScale(gradScale: number): void {
    this.partialStages.forEach((s, i) => s.write({ ...this.partialArgs[i], gradScale }));
  }
}

export class GradNorm {
  private constructor(
    private readonly gpu: Gpu,
    private readonly partialKernel: Kernel<typeof GradNormPartialParams>,
    private readonly finishKernel: Kernel<typeof GradNormFinishParams>,
  ) {}

  static async create(gpu: Gpu): Promise<GradNorm> {
    const c = { WG: GRAD_NORM_WORKGROUP };
    return new GradNorm(gpu, await Kernel.create(gpu, gradNormPartialSpec, c), await Kernel.create(gpu, gradNormFinishSpec, c));
  }

  /**
   * Records the two stages for `grads` (any f32 tensor, e.g. ParamArena.grads) writing `state`
   * ((4) u32 from createGradNormState). Buffers larger than a storage binding are split into chunks,
   * each with its own stage-1 dispatch; the chunking depends only on the sizes, so results are
   * reproducible. gradScale starts at 1 (see GradNormProgram.setGradScale).
   */
  bind(label: string, t: { state: Tensor; grads: Tensor }, options: GradNormOptions): GradNormProgram {
    const where = `${label} (gradNorm)`;
    expectTensor(where, t.state, [GRAD_NORM_STATE_WORDS], 'u32');
    if (t.grads.dtype !== 'f32') throw new ShapeError(`${where}: grads ${t.grads.label} is ${t.grads.dtype}, expected f32`);
    if (!(options.maxNorm >= 0) || !Number.isFinite(options.maxNorm)) {
      throw new ConfigError(`${where}: max_grad_norm must be a finite number ≥ 0 (0 turns clipping off), got ${options.maxNorm}`);
    }
    const n = numel(t.grads.shape);
    const chunk = chunkElements(this.gpu, options.chunkElements);
    const { plans, partialCount } = partialPlan(n, chunk);
    const partials = allocatePlan(this.gpu, [planGradNormPartials(label, n, chunk)]).one(`${label} partials`);
    const stages = plans.map((p, i) => {
      const grads = tensorView(t.grads.buffer, `${t.grads.label}[${p.offset}…]`, [p.count], 'f32', t.grads.offset + p.offset * 4);
      return this.partialKernel.bindWritable(`${label} partial ${i}`, { partials, grads }, { count: p.count, partialBase: p.partialBase, gradScale: 1 }, [p.groups]);
    });
    const finish = this.finishKernel.bind(
      `${label} finish`,
      { state: t.state, partials },
      { partialCount, maxNorm: options.maxNorm, clip: options.maxNorm > 0 ? 1 : 0 },
      [1],
    );
    return new GradNormProgram(
      [...stages.map((s) => s.dispatch), finish],
      stages,
      plans.map((p) => ({ count: p.count, partialBase: p.partialBase })),
      partials,
    );
  }
}

/** float64 reference of clip_grad_norm_ on one flat gradient: norm of gradScale·g and the coefficient. */
export function gradNormRef(grads: ArrayLike<number>, gradScale: number, maxNorm: number): { totalNorm: number; finiteNorm: number; clipCoef: number; nonFinite: number } {
  let sumSq = 0;
  let nonFinite = 0;
  for (let i = 0; i < grads.length; i++) {
    const x = grads[i];
    if (!Number.isFinite(x)) {
      nonFinite++;
      continue;
    }
    sumSq += (gradScale * x) ** 2;
  }
  const finiteNorm = Math.sqrt(sumSq);
  const coef = maxNorm > 0 ? Math.min(maxNorm / (finiteNorm + 1e-6), 1) : 1;
  return { totalNorm: nonFinite > 0 ? Infinity : finiteNorm, finiteNorm, clipCoef: nonFinite > 0 ? 0 : coef, nonFinite };
}

/** Scratch bytes of the stage-1 partials for n gradient elements (for the memory plan). */
export function gradNormScratchBytes(n: number, maxBindingBytes: number): number {
  const chunk = chunkElementsFor(maxBindingBytes);
  return partialPlan(n, chunk).partialCount * 8 + GRAD_NORM_STATE_WORDS * 4;
}
