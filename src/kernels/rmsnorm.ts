import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { groups, Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, numel, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';

/**
 * RMSNorm forward as transformers' Qwen3RMSNorm: rstd = 1/sqrt(mean(x²) + eps), y = weight ⊙ (x·rstd),
 * per row of width W. The decoder's input / post-attention / final norms use rows = N, W = D; Qwen3's
 * per-head q/k norm views the (N, H·Dh) projection output as rows = N·H of width Dh with one weight
 * (Dh) shared by all heads. The backward pass (in the training issue) uses the saved rstd.
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

export class Rmsnorm {
  private constructor(
    private readonly wide: Kernel<typeof RmsnormParams>,
    private readonly narrow: Kernel<typeof RmsnormParams>,
    private readonly gridWidth: number,
  ) {}

  /** `gridWidth`: most workgroups along x before the grid folds into y (default: the device limit, 65535). */
  static async create(gpu: Gpu, options: { gridWidth?: number } = {}): Promise<Rmsnorm> {
    const [wide, narrow] = await Promise.all([
      Kernel.create(gpu, rmsnormForwardSpec, { WG: RMSNORM_WIDE_WORKGROUP, ROW_THREADS: RMSNORM_WIDE_WORKGROUP }),
      Kernel.create(gpu, rmsnormForwardSpec, { WG: RMSNORM_NARROW_WORKGROUP, ROW_THREADS: RMSNORM_NARROW_ROW_THREADS }),
    ]);
    return new Rmsnorm(wide, narrow, options.gridWidth ?? gpu.limits.maxComputeWorkgroupsPerDimension);
  }

  /** y (rows, W) f32, rstd (rows) f32 ← RMSNorm of x (rows, W) f32 with weight (W) bf16x2. */
  forward(label: string, t: RmsnormForwardTensors, shape: RmsnormShape): Dispatch {
    const { rows, width, eps } = shape;
    if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(width) || width < 1) {
      throw new ShapeError(`${label} (rmsnormForward): rows=${rows} and width=${width} must be positive integers`);
    }
    if (!(eps > 0)) throw new ShapeError(`${label} (rmsnormForward): eps=${eps} must be positive (config.json rms_norm_eps)`);
    expectRows(label, t.x, rows, width);
    expectTensor(label, t.y, t.x.shape, 'f32');
    expectTensor(label, t.rstd, [rows], 'f32');
    if (t.weight.dtype !== 'bf16x2' || numel(t.weight.shape) !== width) {
      throw new ShapeError(
        `${label} (rmsnormForward): weight ${t.weight.label} is ${t.weight.dtype} [${t.weight.shape.join(', ')}] but x has rows of width ${width}; ` +
          'expected bf16x2 [' + width + ']; the checkpoint and config.json disagree on the norm size',
      );
    }
    for (const out of [t.y, t.rstd]) {
      for (const input of [t.x, t.weight]) {
        if (out.buffer === input.buffer) {
          throw new ShapeError(
            `${label} (rmsnormForward): output ${out.label} shares a GPU buffer with input ${input.label}; WebGPU forbids writing a buffer ` +
              'that the same dispatch reads (and the backward pass needs x): give the output its own buffer',
          );
        }
      }
    }
    const narrow = width <= RMSNORM_NARROW_MAX_WIDTH;
    const rowsPerGroup = narrow ? RMSNORM_NARROW_WORKGROUP / RMSNORM_NARROW_ROW_THREADS : 1;
    const kernel = narrow ? this.narrow : this.wide;
    return kernel.bind(label, { y: t.y, rstd: t.rstd, x: t.x, weight: t.weight }, { rows, width, eps }, foldGrid(groups(rows, rowsPerGroup), this.gridWidth));
  }
}

/** x must hold rows·width f32 in rows of `width`: (rows, W), (B, T, D) or (N, H·Dh) viewed as (N·H, Dh). */
function expectRows(label: string, x: Tensor, rows: number, width: number): void {
  const last = x.shape[x.shape.length - 1] ?? 0;
  if (x.dtype !== 'f32' || numel(x.shape) !== rows * width || last % width !== 0) {
    throw new ShapeError(
      `${label} (rmsnormForward): x ${x.label} is ${x.dtype} [${x.shape.join(', ')}], expected f32 of ${rows} rows × ${width} ` +
        `(last dimension a multiple of ${width})`,
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
