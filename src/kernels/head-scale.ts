import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';
import { foldGrid } from './grid.js';
import { rowScaleRef } from './row-scale.js';

/**
 * Per-(batch row, head) f16 scale for the tensor-core flash attention (issue 11 item 4): for x
 * (B·T, heads·Dh) f32, token-major (row b·T + t holds the heads' vectors of Dh one after another),
 * scale[b·heads + h] is the rule of row-scale.ts — 2^clamp(14 − ceil(log2 amax), −126, 126), 1
 * where amax is 0 or the block holds a NaN or ±Inf — applied to amax = max over t < T, d < Dh of
 * |x[b·T + t][h·Dh + d]|. The attention stages f16(x·scale) for the whole (b, h) block and
 * multiplies its f32 results back by the power of two, exactly. shaders/head_scale.wgsl reads x
 * as vec4, so Dh must be a multiple of 4; the bit arithmetic is shaders/lib/f16_scale.wgsl, shared
 * with row_scale.wgsl. `headScaleRef` is the rule in float64.
 */
export const HeadScaleParams = defineParams('HeadScaleParams', [
  ['groups', 'u32'],
  ['t', 'u32'],
  ['heads', 'u32'],
  ['dh4', 'u32'],
] as const);

export const headScaleSpec: KernelSpec<typeof HeadScaleParams> = {
  file: 'head_scale.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'head_scale', access: 'read_write' },
    { name: 'x', access: 'read' },
  ],
  params: HeadScaleParams,
};

/**
 * Invocations per workgroup, at most (one (b, h) block a workgroup, so B·heads workgroups: 32 at
 * Qwen3-4B's B4, a quarter of an H200's SMs). The pass is bound by loads in flight: with 256 the
 * step's eight head-scale dispatches a layer took 16 ms of a 1.0 s micro-batch (H200, 2026-12-03,
 * bench/results/h200-2026-12-03-s5-profile.json); 1024 keep four times as many in flight.
 */
export const HEAD_SCALE_WORKGROUP = 1024;

/** The sizes of x (B·T, heads·Dh): batch rows, tokens per batch row, heads, head width. */
export interface HeadScaleDims {
  readonly B: number;
  readonly T: number;
  readonly heads: number;
  /** A multiple of 4 (the shader reads vec4). */
  readonly Dh: number;
}

export interface HeadScaleTensors {
  /** (B·heads) f32 — written: the scale of each (b, h), at b·heads + h. */
  readonly scale: Tensor;
  /** (B·T, heads·Dh) f32 — the operand to be converted to f16. */
  readonly x: Tensor;
}

/** Throws a ShapeError naming the first size of `dims` that is not a positive integer, or Dh not a multiple of 4. */
function checkDims(where: string, dims: HeadScaleDims): void {
  for (const key of ['B', 'T', 'heads', 'Dh'] as const) {
    const v = dims[key];
    if (!Number.isInteger(v) || v < 1) throw new ShapeError(`${where}: ${key} = ${v} must be a positive integer`);
  }
  if (dims.Dh % 4 !== 0) throw new ShapeError(`${where}: head width Dh = ${dims.Dh} must be a multiple of 4 (head_scale.wgsl reads x as vec4)`);
}

export class HeadScale {
  private constructor(private readonly kernel: Kernel<typeof HeadScaleParams>) {}

  static async create(gpu: Gpu): Promise<HeadScale> {
    // a power of two (the shader's tree reduction halves it) the device allows
    let wg = HEAD_SCALE_WORKGROUP;
    while (wg > gpu.limits.maxComputeInvocationsPerWorkgroup) wg /= 2;
    return new HeadScale(await Kernel.create(gpu, headScaleSpec, { WG: wg }));
  }

  /** Records scale (B·heads) ← the scale of each (batch row, head) block of x (B·T, heads·Dh). */
  forward(label: string, t: HeadScaleTensors, dims: HeadScaleDims): Dispatch {
    const where = `${label} (headScale)`;
    checkDims(where, dims);
    const { B, T, heads, Dh } = dims;
    expectTensor(where, t.x, [B * T, heads * Dh], 'f32');
    expectTensor(where, t.scale, [B * heads], 'f32');
    const groups = B * heads;
    return this.kernel.bind(label, { head_scale: t.scale, x: t.x }, { groups, t: T, heads, dh4: Dh / 4 }, foldGrid(groups));
  }
}

/**
 * float64 reference: each (b, h) block of x (B·T, heads·Dh) gathered into one row of T·Dh values
 * and given rowScaleRef's rule; the result at b·heads + h.
 */
export function headScaleRef(x: ArrayLike<number>, dims: HeadScaleDims): Float64Array {
  checkDims('headScaleRef', dims);
  const { B, T, heads, Dh } = dims;
  if (x.length !== B * T * heads * Dh) {
    throw new ShapeError(`headScaleRef: x has ${x.length} values, expected B·T·heads·Dh = ${B}·${T}·${heads}·${Dh} = ${B * T * heads * Dh}`);
  }
  const width = T * Dh;
  const blocks = new Float64Array(B * heads * width);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < heads; h++) {
      const out = (b * heads + h) * width;
      for (let t = 0; t < T; t++) {
        const from = ((b * T + t) * heads + h) * Dh;
        for (let d = 0; d < Dh; d++) blocks[out + t * Dh + d] = x[from + d]!;
      }
    }
  }
  return rowScaleRef(blocks, B * heads, width);
}
