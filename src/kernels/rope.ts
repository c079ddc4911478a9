import { ConfigError, ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { groups, Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectPositiveIntegers, expectTensor, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';
import { foldGrid } from './grid.js';

/**
 * Rotary position embedding, "rotate_half" convention (Qwen3, Llama): for a head vector x of Dh
 * values, half = Dh/2 and i < half, angle = pos·theta^(−2i/Dh) and
 *   out[i]        = x[i]·cos − x[i+half]·sin
 *   out[i + half] = x[i+half]·cos + x[i]·sin.
 * Applied in place to q (after q_norm) and k (after k_norm) in one dispatch.
 */
export const RopeParams = defineParams('RopeParams', [
  ['tokens', 'u32'],
  ['qHeads', 'u32'],
  ['kHeads', 'u32'],
  ['maxPos', 'u32'],
] as const);

export const ropeForwardSpec: KernelSpec<typeof RopeParams> = {
  file: 'rope_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'q', access: 'read_write' },
    { name: 'k', access: 'read_write' },
    { name: 'cosT', access: 'read' },
    { name: 'sinT', access: 'read' },
    { name: 'posIds', access: 'read' },
  ],
  params: RopeParams,
};

export const ROPE_WORKGROUP = 256;

/** cos and sin of every (position, frequency): (maxPos, Dh/2) f32 each, row p = position p. */
export interface RopeTable {
  readonly headDim: number;
  readonly maxPos: number;
  readonly cos: Float32Array;
  readonly sin: Float32Array;
}

/**
 * The table for positions 0..maxPos−1, computed in float64 and rounded once to f32 (the shader
 * does no trigonometry: f32 sin/cos of angles up to maxPos radians lose digits).
 * invFreq[i] = theta^(−2i/Dh), angle = p·invFreq[i].
 */
export function ropeTable(theta: number, headDim: number, maxPos: number): RopeTable {
  if (!(theta > 0) || !Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0 || !Number.isInteger(maxPos) || maxPos < 1) {
    throw new ConfigError(`ropeTable: need theta > 0, an even head_dim >= 2 and max positions >= 1; got theta=${theta}, head_dim=${headDim}, maxPos=${maxPos}`);
  }
  const half = headDim / 2;
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let i = 0; i < half; i++) {
    const invFreq = Math.pow(theta, (-2 * i) / headDim);
    for (let p = 0; p < maxPos; p++) {
      cos[p * half + i] = Math.cos(p * invFreq);
      sin[p * half + i] = Math.sin(p * invFreq);
    }
  }
  return { headDim, maxPos, cos, sin };
}

/** The table as two GPU tensors, (maxPos, Dh/2) f32 each; upload once per run. */
export function uploadRopeTable(gpu: Gpu, table: RopeTable, label = 'rope'): { cos: Tensor; sin: Tensor } {
  const shape = [table.maxPos, table.headDim / 2];
  return {
    cos: gpu.tensorFrom(`${label}.cos`, shape, 'f32', table.cos),
    sin: gpu.tensorFrom(`${label}.sin`, shape, 'f32', table.sin),
  };
}

/** Buffers of one rope dispatch: q and k are rotated in place. */
export interface RopeTensors {
  /** (N, H·Dh) f32 — queries after q_norm; rotated in place. */
  readonly q: Tensor;
  /** (N, Hkv·Dh) f32 — keys after k_norm; rotated in place. */
  readonly k: Tensor;
  /** (maxPos, Dh/2) f32 */
  readonly cos: Tensor;
  /** (maxPos, Dh/2) f32 */
  readonly sin: Tensor;
  /** (N) i32 — position of each token inside its (packed) example, restarting at 0. */
  readonly posIds: Tensor;
}

export interface RopeDims {
  readonly N: number;
  readonly H: number;
  readonly Hkv: number;
}

export class Rope {
  private constructor(
    readonly headDim: number,
    private readonly forwardKernel: Kernel<typeof RopeParams>,
    private readonly inverseKernel: Kernel<typeof RopeParams>,
  ) {}

  static async create(gpu: Gpu, options: { headDim: number }): Promise<Rope> {
    const { headDim } = options;
    if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
      throw new ConfigError(`Rope: head_dim must be an even integer >= 2, got ${headDim}`);
    }
    const constants = { HALF: headDim / 2, WG: ROPE_WORKGROUP };
    const [fwd, inv] = await Promise.all([
      Kernel.create(gpu, ropeForwardSpec, { ...constants, INVERSE: 0 }),
      Kernel.create(gpu, ropeForwardSpec, { ...constants, INVERSE: 1 }),
    ]);
    return new Rope(headDim, fwd, inv);
  }

  /** Rotates q (N, H·Dh) and k (N, Hkv·Dh) in place by each token's position. */
  forward(label: string, t: RopeTensors, dims: RopeDims): Dispatch {
    return this.encode(label, this.forwardKernel, t, dims);
  }

  /**
   * The backward pass: dq (N, H·Dh) and dk (N, Hkv·Dh), gradients with respect to the rotated
   * q and k, become gradients with respect to the unrotated ones in place (dX = Rᵀ·dY, the
   * rotation by −angle).
   */
  backward(label: string, t: Omit<RopeTensors, 'q' | 'k'> & { dq: Tensor; dk: Tensor }, dims: RopeDims): Dispatch {
    return this.encode(label, this.inverseKernel, { q: t.dq, k: t.dk, cos: t.cos, sin: t.sin, posIds: t.posIds }, dims);
  }

  private encode(label: string, kernel: Kernel<typeof RopeParams>, t: RopeTensors, dims: RopeDims): Dispatch {
    const { N, H, Hkv } = dims;
    const Dh = this.headDim;
    expectPositiveIntegers(label, { ...dims });
    expectTensor(label, t.q, [N, H * Dh], 'f32');
    expectTensor(label, t.k, [N, Hkv * Dh], 'f32');
    expectTensor(label, t.posIds, [N], 'i32');
    const half = Dh / 2;
    if (t.cos.dtype !== 'f32' || t.cos.shape.length !== 2 || t.cos.shape[1] !== half) {
      throw new ShapeError(`${label}: ${t.cos.label} has shape [${t.cos.shape.join(', ')}] ${t.cos.dtype}, expected [maxPos, ${half}] f32 (a table built for head_dim ${Dh})`);
    }
    expectTensor(label, t.sin, t.cos.shape, 'f32');
    const maxPos = t.cos.shape[0];
    const g = groups(N * (H + Hkv) * half, ROPE_WORKGROUP);
    const grid = foldGrid(g);
    return kernel.bind(label, { q: t.q, k: t.k, cosT: t.cos, sinT: t.sin, posIds: t.posIds }, { tokens: N, qHeads: H, kHeads: Hkv, maxPos }, grid);
  }
}

/**
 * float64 reference of `Rope.forward` on one (N, heads·Dh) buffer, angles computed directly in
 * float64 (no table). `sign` = −1 gives the inverse rotation (the backward pass).
 */
export function ropeForwardRef(x: ArrayLike<number>, posIds: ArrayLike<number>, heads: number, headDim: number, theta: number, sign = 1): Float64Array {
  const half = headDim / 2;
  const N = posIds.length;
  const out = new Float64Array(N * heads * headDim);
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < heads; h++) {
      const at = (n * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = posIds[n] * Math.pow(theta, (-2 * i) / headDim);
        const c = Math.cos(angle);
        const s = sign * Math.sin(angle);
        const x0 = x[at + i];
        const x1 = x[at + i + half];
        out[at + i] = x0 * c - x1 * s;
        out[at + i + half] = x1 * c + x0 * s;
      }
    }
  }
  return out;
}
