import { ShapeError } from '../errors.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import type { LinearWeight } from './matmul.js';
import { defineParams } from './params.js';
import { expectTensor, type Tensor } from './tensor.js';
import { IGNORE_INDEX } from '../labels.js';

/**
 * The lm_head (tied bf16 embedding E (V, D)) and the cross-entropy in one pass, for CPU adapters
 * (Mesa lavapipe): the logits are recomputed where they are needed and never stored, only rows
 * that have a target are computed, and each row's log-sum-exp, loss and "argmax = target" come out
 * of one sweep over the vocabulary. On llvmpipe this is ~10× the chunked path (lm_head matmul into
 * a (Tc, V) buffer, then the cross-entropy kernels): there every load or store with a computed
 * address is a scalar loop over the SIMD lanes, so the chunked path's 151,936 logits per row, each
 * written and read four times, cost far more than the arithmetic. Shader comments give the layout.
 *
 * Rows: the caller lists the positions with a target (compactTargets: rowPos, rowOf, count,
 * uploaded with the batch); the kernels run over compact rows, workgroups past the count return.
 *   forward:  partial (S, N, 4) ← per vocabulary slice: running max, Σ exp, target logit, argmax
 *   merge:    loss, lse, correct (N) by position ← partial
 *   backward: dxPartial (S, N, D) ← Σ_{v in slice} scale·(softmax − one-hot)·E[v]
 *   dx:       dX (N, D) by position ← Σ_s dxPartial (0 for positions without a target)
 * Needs: the `subgroups` feature with a subgroup size of exactly 8 (llvmpipe on AVX2), a bf16 lm_head,
 * D a multiple of 8 and at most 64 (each lane keeps 4 rows × D of x in registers).
 */
export const FUSED_MAX_HIDDEN = 64;
/** Compact rows per workgroup: 8 lanes × 4 rows. */
export const FUSED_ROWS_PER_WORKGROUP = 32;
/** Words per (slice, row) of the forward's partial: max, Σ exp, target logit, argmax (u32 bits). */
export const FUSED_PARTIAL_WORDS = 4;
const MERGE_WORKGROUP = 64;
const DX_WORKGROUP = 64;

export const CrossEntropyFusedParams = defineParams('CrossEntropyFusedParams', [
  ['rows', 'u32'],
  ['vocab', 'u32'],
  ['hidden', 'u32'],
  ['slice', 'u32'],
] as const);

export const crossEntropyFusedForwardSpec: KernelSpec<typeof CrossEntropyFusedParams> = {
  file: 'cross_entropy_fused_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'partial', access: 'read_write' },
    { name: 'x', access: 'read' },
    { name: 'w', access: 'read' },
    { name: 'targets', access: 'read' },
    { name: 'rowPos', access: 'read' },
    { name: 'count', access: 'read' },
  ],
  params: CrossEntropyFusedParams,
};

export const CrossEntropyFusedMergeParams = defineParams('CrossEntropyFusedMergeParams', [
  ['rows', 'u32'],
  ['slices', 'u32'],
] as const);

export const crossEntropyFusedMergeSpec: KernelSpec<typeof CrossEntropyFusedMergeParams> = {
  file: 'cross_entropy_fused_merge.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'loss', access: 'read_write' },
    { name: 'lse', access: 'read_write' },
    { name: 'correct', access: 'read_write' },
    { name: 'partial', access: 'read' },
    { name: 'targets', access: 'read' },
    { name: 'rowOf', access: 'read' },
  ],
  params: CrossEntropyFusedMergeParams,
};

export const CrossEntropyFusedBackwardParams = defineParams('CrossEntropyFusedBackwardParams', [
  ['rows', 'u32'],
  ['vocab', 'u32'],
  ['hidden', 'u32'],
  ['slice', 'u32'],
  ['scale', 'f32'],
] as const);

export const crossEntropyFusedBackwardSpec: KernelSpec<typeof CrossEntropyFusedBackwardParams> = {
  file: 'cross_entropy_fused_backward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dxPartial', access: 'read_write' },
    { name: 'x', access: 'read' },
    { name: 'w', access: 'read' },
    { name: 'targets', access: 'read' },
    { name: 'rowPos', access: 'read' },
    { name: 'count', access: 'read' },
    { name: 'lse', access: 'read' },
  ],
  params: CrossEntropyFusedBackwardParams,
};

export const CrossEntropyFusedDxParams = defineParams('CrossEntropyFusedDxParams', [
  ['rows', 'u32'],
  ['hidden', 'u32'],
  ['slices', 'u32'],
] as const);

export const crossEntropyFusedDxSpec: KernelSpec<typeof CrossEntropyFusedDxParams> = {
  file: 'cross_entropy_fused_dx.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dx', access: 'read_write' },
    { name: 'dxPartial', access: 'read' },
    { name: 'rowOf', access: 'read' },
  ],
  params: CrossEntropyFusedDxParams,
};

/**
 * Why the fused head cannot run on this adapter, or undefined when it can: a CPU adapter
 * (architecture "software" or a fallback adapter: on a GPU the chunked path is the fast one) with
 * `subgroups` and a subgroup size of exactly 8.
 */
export function fusedHeadUnsupported(gpu: Gpu): string | undefined {
  const info = gpu.device.adapterInfo as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number; isFallbackAdapter?: boolean };
  if (!gpu.has('subgroups')) return 'the adapter has no subgroups feature';
  if (info.subgroupMinSize !== 8 || info.subgroupMaxSize !== 8) return `the subgroup size is ${info.subgroupMinSize}..${info.subgroupMaxSize}, not exactly 8`;
  if (info.architecture !== 'software' && info.isFallbackAdapter !== true) return 'the adapter is a GPU (the chunked lm_head is faster there)';
  return undefined;
}

/** Why a model's lm_head cannot take the fused path, or undefined when it can. */
export function fusedWeightUnsupported(w: LinearWeight): string | undefined {
  if (w.format !== 'bf16') return `the lm_head is ${w.format}, the fused path reads bf16`;
  if (w.k % 8 !== 0 || w.k > FUSED_MAX_HIDDEN) return `hidden size ${w.k} is not a multiple of 8 up to ${FUSED_MAX_HIDDEN}`;
  return undefined;
}

/** Vocabulary slices of the fused passes: enough workgroups for a few CPU threads, few partials. */
export function fusedSlices(vocab: number): number {
  return Math.max(1, Math.min(8, Math.ceil(vocab / 1024)));
}

/** The compact-row lists of a batch's shifted targets (uploaded next to them). */
export interface CompactTargets {
  /** (N) i32 — position of compact row r for r < count; the rest −1. */
  readonly rowPos: Int32Array;
  /** (N) i32 — compact row of each position, −1 where the target is IGNORE_INDEX. */
  readonly rowOf: Int32Array;
  readonly count: number;
}

/** Lists the positions with a target; a target outside [0, V) other than −100 is an error naming it. */
export function compactTargets(targets: Int32Array, vocab: number, where: string): CompactTargets {
  const rowPos = new Int32Array(targets.length).fill(-1);
  const rowOf = new Int32Array(targets.length).fill(-1);
  let count = 0;
  for (let p = 0; p < targets.length; p++) {
    const t = targets[p];
    if (t === IGNORE_INDEX) continue;
    if (!Number.isInteger(t) || t < 0 || t >= vocab) {
      throw new ShapeError(`${where}: the target at position ${p} is ${t}; expected -100 or a token id in [0, ${vocab}) (labels are shifted by one position)`);
    }
    rowPos[count] = p;
    rowOf[p] = count++;
  }
  return { rowPos, rowOf, count };
}

export interface FusedShape {
  /** N positions (capacity of the compact list). */
  readonly rows: number;
  /** V */
  readonly vocab: number;
  /** D */
  readonly hidden: number;
  /** S vocabulary slices */
  readonly slices: number;
}

export interface FusedRows {
  /** (N) i32 */
  readonly targets: Tensor;
  /** (N) i32 */
  readonly rowPos: Tensor;
  /** (N) i32 */
  readonly rowOf: Tensor;
  /** (1) u32 */
  readonly count: Tensor;
}

export class CrossEntropyFused {
  private constructor(
    private readonly forwardKernel: Kernel<typeof CrossEntropyFusedParams>,
    private readonly mergeKernel: Kernel<typeof CrossEntropyFusedMergeParams>,
    private readonly backwardKernel: Kernel<typeof CrossEntropyFusedBackwardParams>,
    private readonly dxKernel: Kernel<typeof CrossEntropyFusedDxParams>,
    private readonly gridWidth: number,
  ) {}

  /** Compiles the four pipelines; throws a ShapeError naming the reason on an adapter that cannot run them. */
  static async create(gpu: Gpu): Promise<CrossEntropyFused> {
    const why = fusedHeadUnsupported(gpu);
    if (why) throw new ShapeError(`fused lm_head + cross-entropy: ${why}`);
    const [forward, merge, backward, dx] = await Promise.all([
      Kernel.create(gpu, crossEntropyFusedForwardSpec),
      Kernel.create(gpu, crossEntropyFusedMergeSpec, { WG: MERGE_WORKGROUP }),
      Kernel.create(gpu, crossEntropyFusedBackwardSpec),
      Kernel.create(gpu, crossEntropyFusedDxSpec, { WG: DX_WORKGROUP }),
    ]);
    return new CrossEntropyFused(forward, merge, backward, dx, gpu.limits.maxComputeWorkgroupsPerDimension);
  }

  private check(where: string, shape: FusedShape, x: Tensor, w: LinearWeight, rows: FusedRows): void {
    const { rows: N, vocab, hidden, slices } = shape;
    for (const [k, v] of Object.entries(shape)) {
      if (!Number.isInteger(v) || v < 1) throw new ShapeError(`${where}: ${k}=${v} must be a positive integer`);
    }
    const bad = fusedWeightUnsupported(w);
    if (bad) throw new ShapeError(`${where}: ${bad}; use the chunked lm_head`);
    if (w.nOut !== vocab || w.k !== hidden) throw new ShapeError(`${where}: lm_head is (${w.nOut}, ${w.k}), expected (V, D) = (${vocab}, ${hidden})`);
    expectTensor(where, w.data, [vocab, hidden], 'bf16x2');
    expectTensor(where, x, [N, hidden], 'f32');
    expectTensor(where, rows.targets, [N], 'i32');
    expectTensor(where, rows.rowPos, [N], 'i32');
    expectTensor(where, rows.rowOf, [N], 'i32');
    expectTensor(where, rows.count, [1], 'u32');
    if (slices > vocab) throw new ShapeError(`${where}: ${slices} slices of a vocabulary of ${vocab}`);
  }

  private grid(shape: FusedShape): [number, number] {
    const groups = Math.ceil(shape.rows / FUSED_ROWS_PER_WORKGROUP);
    if (groups > this.gridWidth || shape.slices > this.gridWidth) throw new ShapeError(`fused cross-entropy: ${shape.rows} rows need ${groups} workgroups along y, over ${this.gridWidth}`);
    return [shape.slices, groups];
  }

  /** partial (S, N, 4) f32 ← per slice and compact row: max, Σ exp, target logit, argmax of x·Eᵀ. */
  forward(label: string, t: { partial: Tensor; x: Tensor; w: LinearWeight } & FusedRows, shape: FusedShape): Dispatch {
    const where = `${label} (crossEntropyFusedForward)`;
    this.check(where, shape, t.x, t.w, t);
    expectTensor(where, t.partial, [shape.slices, shape.rows, FUSED_PARTIAL_WORDS], 'f32');
    const slice = Math.ceil(shape.vocab / shape.slices);
    return this.forwardKernel.bind(
      label,
      { partial: t.partial, x: t.x, w: t.w.data, targets: t.targets, rowPos: t.rowPos, count: t.count },
      { rows: shape.rows, vocab: shape.vocab, hidden: shape.hidden, slice },
      this.grid(shape),
    );
  }

  /** loss, lse, correct (N) f32 by position ← the forward's partial (0 where a position has no target). */
  merge(label: string, t: { loss: Tensor; lse: Tensor; correct: Tensor; partial: Tensor; targets: Tensor; rowOf: Tensor }, shape: FusedShape): Dispatch {
    const where = `${label} (crossEntropyFusedMerge)`;
    const N = shape.rows;
    for (const out of [t.loss, t.lse, t.correct]) expectTensor(where, out, [N], 'f32');
    expectTensor(where, t.partial, [shape.slices, N, FUSED_PARTIAL_WORDS], 'f32');
    expectTensor(where, t.targets, [N], 'i32');
    expectTensor(where, t.rowOf, [N], 'i32');
    const groups = Math.ceil(N / MERGE_WORKGROUP);
    if (groups > this.gridWidth) throw new ShapeError(`${where}: ${N} rows need ${groups} workgroups, over ${this.gridWidth}`);
    return this.mergeKernel.bind(label, { loss: t.loss, lse: t.lse, correct: t.correct, partial: t.partial, targets: t.targets, rowOf: t.rowOf }, { rows: N, slices: shape.slices }, [groups]);
  }

  /** dxPartial (S, N, D) f32 ← per slice: scale · (softmax − one-hot) · E, from the merge's lse. */
  backward(label: string, t: { dxPartial: Tensor; x: Tensor; w: LinearWeight; lse: Tensor } & FusedRows, shape: FusedShape & { scale: number }): Dispatch {
    const where = `${label} (crossEntropyFusedBackward)`;
    const { scale, ...s } = shape;
    this.check(where, s, t.x, t.w, t);
    if (!Number.isFinite(scale)) throw new ShapeError(`${where}: scale=${scale} must be a finite number`);
    expectTensor(where, t.dxPartial, [s.slices, s.rows, s.hidden], 'f32');
    expectTensor(where, t.lse, [s.rows], 'f32');
    const slice = Math.ceil(s.vocab / s.slices);
    return this.backwardKernel.bind(
      label,
      { dxPartial: t.dxPartial, x: t.x, w: t.w.data, targets: t.targets, rowPos: t.rowPos, count: t.count, lse: t.lse },
      { rows: s.rows, vocab: s.vocab, hidden: s.hidden, slice, scale },
      this.grid(s),
    );
  }

  /** dx (N, D) f32 by position ← Σ_s dxPartial (zero rows for positions without a target). */
  dx(label: string, t: { dx: Tensor; dxPartial: Tensor; rowOf: Tensor }, shape: FusedShape): Dispatch {
    const where = `${label} (crossEntropyFusedDx)`;
    const { rows: N, hidden: D, slices } = shape;
    expectTensor(where, t.dx, [N, D], 'f32');
    expectTensor(where, t.dxPartial, [slices, N, D], 'f32');
    expectTensor(where, t.rowOf, [N], 'i32');
    const total = Math.ceil((N * D) / DX_WORKGROUP);
    const gy = Math.ceil(total / this.gridWidth);
    return this.dxKernel.bind(label, { dx: t.dx, dxPartial: t.dxPartial, rowOf: t.rowOf }, { rows: N, hidden: D, slices }, [Math.ceil(total / gy), gy]);
  }
}

/**
 * float64 reference of the fused head, spelled as the unfused chain: logits = x · Eᵀ (x (N, D),
 * e the dense (V, D) lm_head), the cross-entropy forward reference per row, and for the backward
 * dx = scale · (softmax − one-hot) · E (zero rows where the target is IGNORE_INDEX).
 */
export function crossEntropyFusedRef(
  x: ArrayLike<number>,
  e: ArrayLike<number>,
  targets: Int32Array,
  N: number,
  D: number,
  V: number,
  scale: number,
): { loss: Float64Array; lse: Float64Array; correct: Float64Array; argmax: Int32Array; dx: Float64Array } {
  const loss = new Float64Array(N);
  const lse = new Float64Array(N);
  const correct = new Float64Array(N);
  const argmax = new Int32Array(N);
  const dx = new Float64Array(N * D);
  const logits = new Float64Array(V);
  for (let p = 0; p < N; p++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) {
      let a = 0;
      for (let k = 0; k < D; k++) a += x[p * D + k] * e[v * D + k];
      logits[v] = a;
      if (a > m) {
        m = a;
        argmax[p] = v;
      }
    }
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(logits[v] - m);
    lse[p] = m + Math.log(s);
    const t = targets[p];
    if (t === IGNORE_INDEX) continue;
    loss[p] = lse[p] - logits[t];
    correct[p] = argmax[p] === t ? 1 : 0;
    for (let v = 0; v < V; v++) {
      const g = scale * (Math.exp(logits[v] - lse[p]) - (v === t ? 1 : 0));
      for (let k = 0; k < D; k++) dx[p * D + k] += g * e[v * D + k];
    }
  }
  return { loss, lse, correct, argmax, dx };
}
