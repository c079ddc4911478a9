import { DeviceError, ShapeError } from '../errors.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { foldGrid } from './grid.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { roundToF16 } from './matmul-sgm.js';
import { defineParams } from './params.js';
import { rowScaleRef } from './row-scale.js';
import { expectTensor, type Tensor } from './tensor.js';

/**
 * f16 storage of saved activations (issue 11 item 4): `pack` writes each row of X (M, K) f32 as
 * f16(X[m]·scale[m]) with scale[m] its power-of-two row scale (RowScale's rule: the row's largest
 * |x| lands in [2^13, 2^14], 1 for a row of zeros or one holding NaN/±Inf), so that neither
 * activations past f16's 65504 overflow nor tiny rows underflow; `unpack` writes X back as
 * f32(Y[m])·(1/scale[m]) — exact but for the pack's one f16 rounding (relative 2^-11; below 2^-14
 * in scaled units, absolute 2^-25 / scale[m]). Half the bytes of the f32 rows plus 4 bytes a row.
 * shaders/f16_pack.wgsl and shaders/f16_unpack.wgsl; `f16PackRef` is the rule in float64.
 * Needs the device's shader-f16.
 */
/** The params of both passes: the rows' shape (M, K). */
export const F16PackParams = defineParams('F16PackParams', [
  ['m', 'u32'],
  ['k', 'u32'],
] as const);

export const f16PackSpec: KernelSpec<typeof F16PackParams> = {
  file: 'f16_pack.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'y', access: 'read_write' },
    { name: 'scale', access: 'read_write' },
    { name: 'x', access: 'read' },
  ],
  params: F16PackParams,
};

/** The unpack takes the pack's params (the shape of the rows). */
export const f16UnpackSpec: KernelSpec<typeof F16PackParams> = {
  file: 'f16_unpack.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'x', access: 'read_write' },
    { name: 'y', access: 'read' },
    { name: 'scale', access: 'read' },
  ],
  params: F16PackParams,
};

/** Invocations per workgroup: the pack's one row a workgroup, the unpack's one element an invocation. */
export const F16_PACK_WORKGROUP = 256;

/** The packed form of (M, K) f32 rows. */
export interface F16Packed {
  /** (M, K) f16 */
  readonly y: Tensor;
  /** (M) f32 powers of two */
  readonly scale: Tensor;
}

export class F16Pack {
  private constructor(
    private readonly packKernel: Kernel<typeof F16PackParams>,
    private readonly unpackKernel: Kernel<typeof F16PackParams>,
  ) {}

  /** Compiles both passes; a DeviceError where the device lacks shader-f16. */
  static async create(gpu: Gpu): Promise<F16Pack> {
    if (!gpu.has('shader-f16')) throw new DeviceError('F16Pack: the device has no shader-f16 (f16 storage); keep the activations in f32');
    const constants = { WG: F16_PACK_WORKGROUP };
    return new F16Pack(await Kernel.create(gpu, f16PackSpec, constants), await Kernel.create(gpu, f16UnpackSpec, constants));
  }

  /** Records p.y, p.scale ← the packed rows of x (M, K) f32. */
  pack(label: string, p: F16Packed, x: Tensor): Dispatch {
    const { m, k } = this.check(`${label} (f16 pack)`, p, x);
    return this.packKernel.bind(label, { y: p.y, scale: p.scale, x }, { m, k }, foldGrid(m));
  }

  /** Records x (M, K) f32 ← the rows p holds. */
  unpack(label: string, x: Tensor, p: F16Packed): Dispatch {
    const { m, k } = this.check(`${label} (f16 unpack)`, p, x);
    return this.unpackKernel.bind(label, { x, y: p.y, scale: p.scale }, { m, k }, foldGrid(Math.ceil((m * k) / F16_PACK_WORKGROUP)));
  }

  private check(where: string, p: F16Packed, x: Tensor): { m: number; k: number } {
    if (x.shape.length !== 2) throw new ShapeError(`${where}: ${x.label} has shape [${x.shape.join(', ')}], expected (M, K)`);
    const [m, k] = x.shape;
    expectTensor(where, x, [m, k], 'f32');
    expectTensor(where, p.y, [m, k], 'f16');
    expectTensor(where, p.scale, [m], 'f32');
    if (x.buffer === p.y.buffer || x.buffer === p.scale.buffer) throw new ShapeError(`${where}: ${x.label} shares a GPU buffer with the packed rows; give each its own`);
    return { m, k };
  }
}

/** float64 reference: the scales (rowScaleRef) and the rows as f16 values of x·scale (roundToF16), and what unpack gives back. */
export function f16PackRef(x: ArrayLike<number>, m: number, k: number): { scale: Float64Array; y: Float64Array; unpacked: Float64Array } {
  const scale = rowScaleRef(x, m, k);
  const y = new Float64Array(m * k);
  const unpacked = new Float64Array(m * k);
  for (let i = 0; i < m * k; i++) {
    const s = scale[Math.floor(i / k)];
    y[i] = roundToF16(x[i] * s);
    unpacked[i] = y[i] / s;
  }
  return { scale, y, unpacked };
}
