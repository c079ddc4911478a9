import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, numel, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';
import { foldGrid } from './grid.js';

/**
 * Per-row f16 scale (issue 11 item 4): rowScale (M) f32 = 2^(14 − ceil(log2 max_k |X[m][k]|)) for
 * X (M, K) f32, the exponent clamped to −126..126 (the scale and its reciprocal both normal f32,
 * which GPUs do not flush; only rows with max |x| ≤ 2^-113 reach the clamp), and 1 where the row
 * is all zeros or holds a NaN or ±Inf (so a non-finite activation or gradient still reaches the loss and the
 * step's NaN check). The tensor-core kernels stage f16(X[m][k]·rowScale[m]) — at most 2^14 in
 * magnitude, far from f16's 65504, and at least 2^13 for the row's largest element, far above
 * f16's subnormals at 2^-14 — and multiply their f32 results by 1/rowScale[m], exactly, the scale
 * being a power of two. The forward matmul (matmul-sgm.ts) scales the rows of X, the input
 * gradient the rows of dY; both read this one (M) f32 layout. shaders/row_scale.wgsl has the bit
 * arithmetic; `rowScaleRef` is the rule in float64.
 */
export const RowScaleParams = defineParams('RowScaleParams', [
  ['m', 'u32'],
  ['k', 'u32'],
] as const);

export const rowScaleSpec: KernelSpec<typeof RowScaleParams> = {
  file: 'row_scale.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'row_scale', access: 'read_write' },
    { name: 'x', access: 'read' },
  ],
  params: RowScaleParams,
};

/** Invocations per workgroup (one row a workgroup). */
export const ROW_SCALE_WORKGROUP = 256;

/** The exponent of rowScale before clamping: the largest |value| of a scaled row is ≤ 2^ROW_SCALE_TARGET_LOG2. */
export const ROW_SCALE_TARGET_LOG2 = 14;

/** The clamp of rowScale's exponent: 2^±126 are the extreme normal f32 whose reciprocal is normal too. */
export const ROW_SCALE_MAX_LOG2 = 126;

export interface RowScaleTensors {
  /** (M) f32 — written: the scale of each row. */
  readonly rowScale: Tensor;
  /** (M, K) f32 (any leading shape with M rows of K) — the rows to be converted to f16. */
  readonly x: Tensor;
}

export class RowScale {
  private constructor(private readonly kernel: Kernel<typeof RowScaleParams>) {}

  static async create(gpu: Gpu): Promise<RowScale> {
    return new RowScale(await Kernel.create(gpu, rowScaleSpec, { WG: ROW_SCALE_WORKGROUP }));
  }

  /** Records rowScale (M) ← the scale of each row of x (M, k). */
  forward(label: string, t: RowScaleTensors, k: number): Dispatch {
    const where = `${label} (rowScale)`;
    if (!Number.isInteger(k) || k < 1) throw new ShapeError(`${where}: row width k = ${k} must be a positive integer`);
    const count = numel(t.x.shape);
    if (t.x.dtype !== 'f32' || count % k !== 0 || t.x.shape[t.x.shape.length - 1] !== k) {
      throw new ShapeError(`${where}: x ${t.x.label} is ${t.x.dtype} [${t.x.shape.join(', ')}], expected f32 (…, ${k})`);
    }
    const m = count / k;
    expectTensor(where, t.rowScale, [m], 'f32');
    return this.kernel.bind(label, { row_scale: t.rowScale, x: t.x }, { m, k }, foldGrid(m));
  }
}

/**
 * float64 reference of the rule: for each of the m rows of x (m, k), 2^clamp(14 − c, −126, 126)
 * with c the least integer such that max |x| ≤ 2^c; 1 for a row of zeros or one holding NaN/±Inf.
 */
export function rowScaleRef(x: ArrayLike<number>, m: number, k: number): Float64Array {
  const out = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    let amax = 0;
    let finite = true;
    for (let j = 0; j < k; j++) {
      const v = x[i * k + j];
      if (!Number.isFinite(v)) finite = false;
      else amax = Math.max(amax, Math.abs(v));
    }
    if (!finite || amax === 0) {
      out[i] = 1;
      continue;
    }
    // c = ceil(log2 amax), corrected where Math.log2 rounds across an integer
    let c = Math.ceil(Math.log2(amax));
    while (2 ** c < amax) c++;
    while (2 ** (c - 1) >= amax) c--;
    out[i] = 2 ** Math.min(ROW_SCALE_MAX_LOG2, Math.max(-ROW_SCALE_MAX_LOG2, ROW_SCALE_TARGET_LOG2 - c));
  }
  return out;
}
