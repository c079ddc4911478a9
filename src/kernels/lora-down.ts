import { ShapeError } from '../errors.js';
import type { Dispatch } from './dispatch.js';
import { dropoutConstants, dropoutRef } from './dropout.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { matmulRef, MAX_LORA_RANK } from './matmul.js';
import { defineParams } from './params.js';
import { expectTensor, numel, type Tensor } from './tensor.js';

/**
 * LoRA down-projection of the projections that share one input, one dispatch and one pass over it:
 *   U_g (M, R) = dropout_g(X) (M, K) · A_gᵀ,  g < G ≤ 3
 * (q/k/v read the same normed hidden state, gate/up the same; o_proj and down_proj run alone).
 * Replaces, per projection, the lora_A matmul and, with LoRA dropout, the dropout dispatch that
 * wrote the dropped input first: the mask (lib/dropout_hash.wgsl, each projection its own salt) is
 * applied as X is read. Each workgroup owns 8 rows × 32 columns of one projection and splits K over its
 * threads, so M = 2048 makes 256 · G · ceil(R / 32) workgroups. X and A are read four elements a
 * load, so K must be a multiple of 4 (loraDownTakes; every Qwen3 width is: the projections send
 * other widths to dropout + the tiled matmul, src/model/projection.ts). See
 * shaders/lora_down_forward.wgsl.
 */
export const LoraDownParams = defineParams('LoraDownParams', [
  ['m', 'u32'],
  ['k', 'u32'],
  ['r', 'u32'],
  ['groups', 'u32'],
  ['threshold', 'u32'],
  ['scale', 'f32'],
  ['salt0', 'u32'],
  ['salt1', 'u32'],
  ['salt2', 'u32'],
] as const);

export const loraDownForwardSpec: KernelSpec<typeof LoraDownParams> = {
  file: 'lora_down_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'u0', access: 'read_write' },
    { name: 'u1', access: 'read_write' },
    { name: 'u2', access: 'read_write' },
    { name: 'x', access: 'read' },
    { name: 'a0', access: 'read' },
    { name: 'a1', access: 'read' },
    { name: 'a2', access: 'read' },
    { name: 'seed', access: 'read' },
  ],
  params: LoraDownParams,
};

/** Whether LoraDown takes inputs of width k: a multiple of 4 (the shader reads X and A as vec4). */
export function loraDownTakes(k: number): boolean {
  return Number.isInteger(k) && k >= 4 && k % 4 === 0;
}

/** Projections one dispatch takes (the shader's bindings u0..u2, a0..a2). */
export const LORA_DOWN_GROUPS = 3;
/** Rows of one workgroup and columns (of one projection's R) of one workgroup (the shader's BM, BC). */
const BM = 8;
const BC = 32;

export interface LoraDownTensors {
  /** G × (M, R) f32 outputs, each its own buffer. */
  readonly u: readonly Tensor[];
  /** (M, K) f32 — the input the G projections share. */
  readonly x: Tensor;
  /** G × (R, K) f32 lora_A weights. */
  readonly a: readonly Tensor[];
  /** (1) u32 dropout seed (needed only with dropout). */
  readonly seed?: Tensor;
}

export interface LoraDownOptions {
  /** LoRA dropout: probability and one salt per projection (as given to Dropout.forward). */
  readonly dropout?: { readonly p: number; readonly salts: readonly number[] };
}

export class LoraDown {
  private constructor(
    private readonly kernel: Kernel<typeof LoraDownParams>,
    /** Stand-ins for unused bindings: two writable ones (they must not alias) and a seed. */
    private readonly unusedU: readonly [Tensor, Tensor],
    private readonly unusedSeed: Tensor,
  ) {}

  static async create(gpu: Gpu): Promise<LoraDown> {
    return new LoraDown(
      await Kernel.create(gpu, loraDownForwardSpec),
      [gpu.tensor('lora down unused u1', [4], 'f32'), gpu.tensor('lora down unused u2', [4], 'f32')],
      gpu.tensor('lora down unused seed', [1], 'u32'),
    );
  }

  /** Records U_g = dropout_g(x)·A_gᵀ for the G given projections. */
  forward(label: string, t: LoraDownTensors, o: LoraDownOptions = {}): Dispatch {
    const G = t.u.length;
    const where = `${label} (lora down ×${G})`;
    if (G < 1 || G > LORA_DOWN_GROUPS || t.a.length !== G) {
      throw new ShapeError(`${where}: ${G} outputs and ${t.a.length} lora_A weights; expected the same count, 1..${LORA_DOWN_GROUPS}`);
    }
    const k = t.x.shape[t.x.shape.length - 1] ?? 0;
    const r = t.a[0].shape[0] ?? 0;
    if (t.x.dtype !== 'f32' || k < 1) throw new ShapeError(`${where}: x ${t.x.label} is ${t.x.dtype} [${t.x.shape.join(', ')}], expected f32 (…, K)`);
    if (!loraDownTakes(k)) throw new ShapeError(`${where}: K = ${k} is not a multiple of 4 (the kernel reads four elements a load); run dropout and the tiled matmul for this width`);
    if (r < 1 || r > MAX_LORA_RANK) throw new ShapeError(`${where}: LoRA rank ${r} outside 1..${MAX_LORA_RANK}`);
    const m = numel(t.x.shape) / k;
    t.a.forEach((a) => expectTensor(where, a, [r, k], 'f32'));
    t.u.forEach((u) => expectTensor(where, u, [m, r], 'f32'));
    const buffers = new Set([t.x.buffer, ...t.u.map((u) => u.buffer)]);
    if (buffers.size !== G + 1) throw new ShapeError(`${where}: each U needs its own buffer, apart from x (one dispatch writes them all)`);
    const d = o.dropout;
    if (d && d.salts.length !== G) throw new ShapeError(`${where}: ${d.salts.length} dropout salts for ${G} projections`);
    if (d && d.p > 0 && !t.seed) throw new ShapeError(`${where}: dropout needs the seed buffer`);
    if (t.seed) expectTensor(where, t.seed, [1], 'u32');
    const { threshold, scale } = dropoutConstants(d?.p ?? 0);
    const salt = (g: number) => (d?.salts[g] ?? 0) >>> 0;
    const pick = <T>(g: number, fallback: T, list: readonly T[]) => list[g] ?? fallback;
    return this.kernel.bind(
      where,
      {
        u0: t.u[0],
        u1: pick(1, this.unusedU[0], t.u),
        u2: pick(2, this.unusedU[1], t.u),
        x: t.x,
        a0: t.a[0],
        a1: pick(1, t.a[0], t.a),
        a2: pick(2, t.a[0], t.a),
        seed: t.seed ?? this.unusedSeed,
      },
      { m, k, r, groups: G, threshold, scale, salt0: salt(0), salt1: salt(1), salt2: salt(2) },
      [Math.ceil(m / BM), G * Math.ceil(r / BC)],
    );
  }
}

/** float64 reference: U_g (m, r) = dropout(x; p, seed, salts[g]) (m, k) · a_gᵀ (a_g (r, k)). */
export function loraDownRef(
  x: ArrayLike<number>,
  a: readonly ArrayLike<number>[],
  m: number,
  k: number,
  r: number,
  dropout?: { readonly p: number; readonly seed: number; readonly salts: readonly number[] },
): Float64Array[] {
  return a.map((ag, g) => matmulRef(dropout ? dropoutRef(x, dropout.p, dropout.seed, dropout.salts[g]) : x, ag, m, r, k));
}
