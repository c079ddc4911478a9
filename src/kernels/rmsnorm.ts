import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { groups, Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectNoReadWriteAlias, expectTensor, numel, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';

/**
 * RMSNorm forward as transformers' Qwen3RMSNorm: rstd = 1/sqrt(mean(x²) + eps), y = weight ⊙ (x·rstd),
 * per row of width W. The decoder's input / post-attention / final norms use rows = N, W = D; Qwen3's
 * per-head q/k norm views the (N, H·Dh) projection output as rows = N·H of width Dh with one weight
 * (Dh) shared by all heads. The backward pass gives the input gradient only (the norm weights are
 * frozen) from the saved rstd, added into dx (residual stream) or overwriting it (q/k norms).
 */
export const RmsnormParams = defineParams('RmsnormParams', [
  ['rows', 'u32'],
  ['width', 'u32'],
  ['eps', 'f32'],
] as const);

export const rmsnormForwardSpec: KernelSpec<typeof RmsnormParams> = {
  file: 'rmsnorm_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'y', access: 'read_write' },
    { name: 'rstd', access: 'read_write' },
    { name: 'x', access: 'read' },
    { name: 'weight', access: 'read' },
  ],
  params: RmsnormParams,
};

export const rmsnormBackwardSpec: KernelSpec<typeof RmsnormParams> = {
  file: 'rmsnorm_backward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dx', access: 'read_write' },
    { name: 'dy', access: 'read' },
    { name: 'x', access: 'read' },
    { name: 'weight', access: 'read' },
    { name: 'rstd', access: 'read' },
  ],
  params: RmsnormParams,
};

/** Wide rows (W > RMSNORM_NARROW_MAX_WIDTH, e.g. D = 2560): one row per workgroup of 256. */
export const RMSNORM_WIDE_WORKGROUP = 256;
/**
 * Narrow rows (e.g. the q/k norms' Dh = 128): 16 invocations a row, 8 rows a workgroup of 128
 * (measured on an H100: 16 a row beat 8 and 32, and 128-wide workgroups beat 256).
 */
export const RMSNORM_NARROW_WORKGROUP = 128;
export const RMSNORM_NARROW_ROW_THREADS = 16;
export const RMSNORM_NARROW_MAX_WIDTH = 256;

/** What the forward pass saves for backward. */
export interface RmsnormSaved {
  /** (rows) f32 — 1 / sqrt(mean(x²) + eps) per row. */
  rstd: Tensor;
}

export interface RmsnormForwardTensors extends RmsnormSaved {
  /** (rows, W) f32 — output, a buffer separate from x. */
  y: Tensor;
  /** (rows, W) f32 — input; any shape of rows·W elements whose last dimension is a multiple of W. */
  x: Tensor;
  /** (W) bf16x2 — the checkpoint's norm weight. */
  weight: Tensor;
}

export interface RmsnormShape {
  rows: number;
  width: number;
  eps: number;
}

export interface RmsnormBackwardTensors extends RmsnormSaved {
  /** (rows, W) f32 — input gradient, added into (accumulate) or overwritten; its own buffer. */
  dx: Tensor;
  /** (rows, W) f32 — gradient of the forward output y. */
  dy: Tensor;
  /** (rows, W) f32 — the forward input (same shape rules as forward's x). */
  x: Tensor;
  /** (W) bf16x2 — the forward's norm weight. */
  weight: Tensor;
}

export interface RmsnormBackwardShape {
  rows: number;
  width: number;
  /**
   * true: dx += ∂L/∂x (the residual stream's gradient, which already holds the skip connection's
   * part); false: dx = ∂L/∂x (q/k norms).
   */
  accumulate: boolean;
}

/** One compiled pipeline per row geometry (wide / narrow). */
interface RowKernels {
  wide: Kernel<typeof RmsnormParams>;
  narrow: Kernel<typeof RmsnormParams>;
}

const WIDE = { WG: RMSNORM_WIDE_WORKGROUP, ROW_THREADS: RMSNORM_WIDE_WORKGROUP } as const;
const NARROW = { WG: RMSNORM_NARROW_WORKGROUP, ROW_THREADS: RMSNORM_NARROW_ROW_THREADS } as const;

export class Rmsnorm {
  private constructor(
    private readonly wide: Kernel<typeof RmsnormParams>,
    private readonly narrow: Kernel<typeof RmsnormParams>,
    /** Backward pipelines: overwrite dx, add into dx. */
    private readonly backwardSet: RowKernels,
    private readonly backwardAddSet: RowKernels,
    private readonly gridWidth: number,
  ) {}

  /** `gridWidth`: most workgroups along x before the grid folds into y (default: the device limit, 65535). */
  static async create(gpu: Gpu, options: { gridWidth?: number } = {}): Promise<Rmsnorm> {
    const [wide, narrow, bWide, bNarrow, aWide, aNarrow] = await Promise.all([
      Kernel.create(gpu, rmsnormForwardSpec, WIDE),
      Kernel.create(gpu, rmsnormForwardSpec, NARROW),
      Kernel.create(gpu, rmsnormBackwardSpec, { ...WIDE, ACCUMULATE: false }),
      Kernel.create(gpu, rmsnormBackwardSpec, { ...NARROW, ACCUMULATE: false }),
      Kernel.create(gpu, rmsnormBackwardSpec, { ...WIDE, ACCUMULATE: true }),
      Kernel.create(gpu, rmsnormBackwardSpec, { ...NARROW, ACCUMULATE: true }),
    ]);
    return new Rmsnorm(
      wide,
      narrow,
      { wide: bWide, narrow: bNarrow },
      { wide: aWide, narrow: aNarrow },
      options.gridWidth ?? gpu.limits.maxComputeWorkgroupsPerDimension,
    );
  }

  /** y (rows, W) f32, rstd (rows) f32 ← RMSNorm of x (rows, W) f32 with weight (W) bf16x2. */
  forward(label: string, t: RmsnormForwardTensors, shape: RmsnormShape): Dispatch {
    const { rows, width, eps } = shape;
    if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(width) || width < 1) {
      throw new ShapeError(`${label} (rmsnormForward): rows=${rows} and width=${width} must be positive integers`);
    }
    if (!(eps > 0)) throw new ShapeError(`${label} (rmsnormForward): eps=${eps} must be positive (config.json rms_norm_eps)`);
    expectRows(`${label} (rmsnormForward)`, t.x, rows, width);
    expectTensor(label, t.y, t.x.shape, 'f32');
    expectTensor(label, t.rstd, [rows], 'f32');
    expectWeight(`${label} (rmsnormForward)`, t.weight, width);
    expectNoReadWriteAlias(`${label} (rmsnormForward)`, [t.y, t.rstd], [t.x, t.weight], 'give the output its own buffer (the backward pass needs x too)');
    const narrow = width <= RMSNORM_NARROW_MAX_WIDTH;
    const rowsPerGroup = narrow ? RMSNORM_NARROW_WORKGROUP / RMSNORM_NARROW_ROW_THREADS : 1;
    const kernel = narrow ? this.narrow : this.wide;
    return kernel.bind(label, { y: t.y, rstd: t.rstd, x: t.x, weight: t.weight }, { rows, width, eps }, foldGrid(groups(rows, rowsPerGroup), this.gridWidth));
  }

  /**
   * dx (rows, W) f32 (+)= ∂L/∂x from dy (rows, W) f32, the forward's x (rows, W) f32 and weight (W)
   * bf16x2, and its saved rstd (rows) f32. No weight gradient (the norms are frozen).
   */
  backward(label: string, t: RmsnormBackwardTensors, shape: RmsnormBackwardShape): Dispatch {
    const { rows, width, accumulate } = shape;
    const where = `${label} (rmsnormBackward)`;
    if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(width) || width < 1) {
      throw new ShapeError(`${where}: rows=${rows} and width=${width} must be positive integers`);
    }
    expectRows(where, t.x, rows, width);
    expectTensor(where, t.dy, t.x.shape, 'f32');
    expectTensor(where, t.dx, t.x.shape, 'f32');
    expectTensor(where, t.rstd, [rows], 'f32');
    expectWeight(where, t.weight, width);
    expectNoReadWriteAlias(where, [t.dx], [t.dy, t.x, t.weight, t.rstd], 'give dx its own buffer');
    const narrow = width <= RMSNORM_NARROW_MAX_WIDTH;
    const rowsPerGroup = narrow ? RMSNORM_NARROW_WORKGROUP / RMSNORM_NARROW_ROW_THREADS : 1;
    const set = accumulate ? this.backwardAddSet : this.backwardSet;
    const kernel = narrow ? set.narrow : set.wide;
    // eps is not used by the backward shader (rstd is saved); the shared params struct carries it.
    return kernel.bind(label, { dx: t.dx, dy: t.dy, x: t.x, weight: t.weight, rstd: t.rstd }, { rows, width, eps: 0 }, foldGrid(groups(rows, rowsPerGroup), this.gridWidth));
  }
}

/**
 * x must hold rows·width f32 in rows of `width`: (rows, W), (B, T, D) or (N, H·Dh) viewed as (N·H, Dh).
 * `where` names the call, e.g. "layer 3 q_norm (rmsnormBackward)".
 */
function expectRows(where: string, x: Tensor, rows: number, width: number): void {
  const last = x.shape[x.shape.length - 1] ?? 0;
  if (x.dtype !== 'f32' || numel(x.shape) !== rows * width || last % width !== 0) {
    throw new ShapeError(
      `${where}: x ${x.label} is ${x.dtype} [${x.shape.join(', ')}], expected f32 of ${rows} rows × ${width} ` +
        `(last dimension a multiple of ${width})`,
    );
  }
}

function expectWeight(where: string, weight: Tensor, width: number): void {
  if (weight.dtype !== 'bf16x2' || numel(weight.shape) !== width) {
    throw new ShapeError(
      `${where}: weight ${weight.label} is ${weight.dtype} [${weight.shape.join(', ')}] but x has rows of width ${width}; ` +
        'expected bf16x2 [' + width + ']; the checkpoint and config.json disagree on the norm size',
    );
  }
}

/**
 * `count` workgroups as a grid of at most `width` along x, as square as the rows allow so that few
 * spare workgroups run (the shader recovers g = wg.y·gx + wg.x and skips g ≥ count).
 */
function foldGrid(count: number, width: number): [number, number] {
  const y = Math.ceil(count / width);
  return [Math.ceil(count / y), y];
}

/**
 * float64 reference. x (rows·width), weight (width) as numbers (the bf16 values); returns
 * y (rows·width) and rstd (rows). Two passes: the statistic first, then the scaling.
 */
export function rmsnormForwardRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  rows: number,
  width: number,
  eps: number,
): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(rows * width);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < width; j++) ss += x[r * width + j] * x[r * width + j];
    const s = 1 / Math.sqrt(ss / width + eps);
    rstd[r] = s;
    for (let j = 0; j < width; j++) y[r * width + j] = weight[j] * (x[r * width + j] * s);
  }
  return { y, rstd };
}

/**
 * float64 reference of the backward pass: dy, x (rows·width), weight (width), rstd (rows) as
 * numbers; returns dx (rows·width) = rstd·(w⊙dy) − x·rstd³·mean(x ⊙ w⊙dy) per row (see
 * shaders/rmsnorm_backward.wgsl for the derivation). Two passes per row: the mean, then dx.
 */
export function rmsnormBackwardRef(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  rstd: ArrayLike<number>,
  rows: number,
  width: number,
): Float64Array {
  const dx = new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) {
    const s = rstd[r];
    let dot = 0;
    for (let j = 0; j < width; j++) dot += weight[j] * dy[r * width + j] * x[r * width + j];
    const c = dot / width;
    for (let j = 0; j < width; j++) {
      const i = r * width + j;
      dx[i] = s * weight[j] * dy[i] - x[i] * s * s * s * c;
    }
  }
  return dx;
}
