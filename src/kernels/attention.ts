import { ConfigError, DeviceLimitError, ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectPositiveIntegers, expectTensor, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';

/**
 * Causal grouped-query self-attention with packed-segment masking, flash style (see
 * shaders/attention_forward.wgsl for the math and the work split).
 */
export const AttentionParams = defineParams('AttentionParams', [
  ['tokens', 'u32'],
  ['qHeads', 'u32'],
  ['kvHeads', 'u32'],
  ['scale', 'f32'],
] as const);

export const attentionForwardSpec: KernelSpec<typeof AttentionParams> = {
  file: 'attention_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'o', access: 'read_write' },
    { name: 'lse', access: 'read_write' },
    { name: 'q', access: 'read' },
    { name: 'k', access: 'read' },
    { name: 'v', access: 'read' },
    { name: 'segIds', access: 'read' },
  ],
  params: AttentionParams,
};

/**
 * Work split of the shader (its override constants): query rows per workgroup (BR), keys per
 * staged tile (BC), rows per thread block of the score phase (RS: 1, 2 or 4) and vec4 columns per
 * thread of the P·V phase (DV: 1 to 4). RS and DV have defaults (see `resolveTiles`).
 */
export interface AttentionTiles {
  readonly br: number;
  readonly bc: number;
  readonly rs?: number;
  readonly dv?: number;
}

/** Rows per thread in the P·V phase (the shader's `const RO`). */
const RO = 4;

/** Tile sizes tried in order by `Attention.create` when none are given: the first that fits. */
export const ATTENTION_TILE_PREFERENCE: readonly AttentionTiles[] = [
  { br: 64, bc: 16 },
  { br: 32, bc: 32 },
  { br: 32, bc: 16 },
  { br: 16, bc: 16 },
  { br: 16, bc: 8 },
  { br: 8, bc: 8 },
  { br: 4, bc: 4 },
];

/**
 * `tiles` with RS and DV filled in. DV defaults to 4 for head dims of 64 and more (fewer threads,
 * more reuse of each P value), else to 1 (more threads for tiny heads, fewer staging rounds).
 * RS defaults to the largest of 4, 2, 1 that still gives every thread a score block.
 */
export function resolveTiles(dh: number, tiles: AttentionTiles): Required<AttentionTiles> {
  const dv = tiles.dv ?? (dh >= 64 ? 4 : 1);
  const ox = Math.ceil(dh / 4 / dv);
  const rs = tiles.rs ?? [4, 2, 1].find((r) => tiles.br % r === 0 && tiles.bc / r >= ox) ?? 1;
  return { br: tiles.br, bc: tiles.bc, rs, dv };
}

/** Threads per workgroup (the shader's WG). */
export function attentionWorkgroupSize(dh: number, tiles: Required<AttentionTiles>): number {
  return Math.ceil(dh / 4 / tiles.dv) * (tiles.br / RO);
}

/** Bytes of workgroup memory the shader declares for these sizes (mirrors its `var<workgroup>`s). */
export function attentionWorkgroupBytes(dh: number, tiles: AttentionTiles): number {
  const row4 = dh / 4 + 1;
  const srow4 = tiles.bc / 4 + 1;
  return 16 * (tiles.br * row4 + tiles.bc * row4 + tiles.br * srow4) + 4 * (4 * tiles.br + tiles.bc + 1);
}

/** Why `tiles` cannot run on `gpu` for head dim `dh`, or undefined when they can. */
function tilesProblem(gpu: Gpu, dh: number, tiles: Required<AttentionTiles>): string | undefined {
  const { br, bc, rs, dv } = tiles;
  if (!Number.isInteger(br) || !Number.isInteger(bc) || br < 4 || bc < 4 || br % RO !== 0 || bc % 4 !== 0) {
    return `tile sizes br=${br}, bc=${bc} must be multiples of 4`;
  }
  if (![1, 2, 4].includes(rs) || br % rs !== 0) return `rs=${rs} must be 1, 2 or 4 and divide br=${br}`;
  if (![1, 2, 3, 4].includes(dv)) return `dv=${dv} must be 1 to 4`;
  const bytes = attentionWorkgroupBytes(dh, tiles);
  if (bytes > gpu.limits.maxComputeWorkgroupStorageSize) {
    return `br=${br}, bc=${bc} need ${bytes} bytes of workgroup memory, the device allows ${gpu.limits.maxComputeWorkgroupStorageSize}`;
  }
  const wg = attentionWorkgroupSize(dh, tiles);
  if (wg > Math.min(256, gpu.limits.maxComputeInvocationsPerWorkgroup)) {
    return `br=${br}, dv=${dv} with head_dim ${dh} need ${wg} threads per workgroup, more than 256`;
  }
  return undefined;
}

/** Buffers of one attention forward dispatch (N = B·T tokens, token-major). */
export interface AttentionTensors {
  /** (N, H·Dh) f32 — output, the input of o_proj. */
  readonly o: Tensor;
  /** (N, H) f32 — log-sum-exp of each row's scaled scores (natural log), saved for backward. */
  readonly lse: Tensor;
  /** (N, H·Dh) f32 — queries after q_norm and rope. */
  readonly q: Tensor;
  /** (N, Hkv·Dh) f32 — keys after k_norm and rope. */
  readonly k: Tensor;
  /** (N, Hkv·Dh) f32 */
  readonly v: Tensor;
  /** (N) i32 — example id of each token within its batch row (packed examples differ). */
  readonly segIds: Tensor;
}

export interface AttentionDims {
  readonly B: number;
  readonly T: number;
  readonly H: number;
  readonly Hkv: number;
  readonly Dh: number;
  /** Score scale; default 1/sqrt(Dh). */
  readonly scale?: number;
}

export class Attention {
  private constructor(
    readonly headDim: number,
    readonly tiles: Required<AttentionTiles>,
    private readonly forwardKernel: Kernel<typeof AttentionParams>,
  ) {}

  /**
   * Compiles the forward kernel for head dim `headDim` (a multiple of 4, at most 256). Without
   * `tiles`, takes the first entry of ATTENTION_TILE_PREFERENCE that fits the device's
   * workgroup memory; given tiles that do not fit are a DeviceLimitError.
   */
  static async create(gpu: Gpu, options: { headDim: number; tiles?: AttentionTiles }): Promise<Attention> {
    const dh = options.headDim;
    if (!Number.isInteger(dh) || dh < 4 || dh > 256 || dh % 4 !== 0) {
      throw new ConfigError(`Attention: head_dim must be a multiple of 4 between 4 and 256, got ${dh}`);
    }
    let tiles: Required<AttentionTiles> | undefined;
    if (options.tiles) {
      tiles = resolveTiles(dh, options.tiles);
      const problem = tilesProblem(gpu, dh, tiles);
      if (problem) throw new DeviceLimitError(`Attention (attention_forward.wgsl, head_dim ${dh}): ${problem}; choose smaller tiles`);
    } else {
      tiles = ATTENTION_TILE_PREFERENCE.map((t) => resolveTiles(dh, t)).find((t) => tilesProblem(gpu, dh, t) === undefined);
      if (!tiles) {
        throw new DeviceLimitError(
          `Attention (attention_forward.wgsl): no tile size fits head_dim ${dh} in ${gpu.limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory`,
        );
      }
    }
    const kernel = await Kernel.create(gpu, attentionForwardSpec, { DH: dh, BR: tiles.br, BC: tiles.bc, RS: tiles.rs, DV: tiles.dv });
    return new Attention(dh, tiles, kernel);
  }

  /**
   * o (N, H·Dh) and lse (N, H) ← causal GQA attention of q (N, H·Dh) over k, v (N, Hkv·Dh) within
   * each batch row, a key visible to a query when it is not later and has the same segment id.
   */
  forward(label: string, t: AttentionTensors, dims: AttentionDims): Dispatch {
    const { B, T, H, Hkv, Dh } = dims;
    expectPositiveIntegers(label, { B, T, H, Hkv, Dh });
    if (Dh !== this.headDim) throw new ShapeError(`${label}: Dh=${Dh} but the kernel was compiled for head_dim ${this.headDim}`);
    if (H % Hkv !== 0) throw new ShapeError(`${label}: H=${H} query heads is not a multiple of Hkv=${Hkv} key/value heads`);
    const N = B * T;
    expectTensor(label, t.q, [N, H * Dh], 'f32');
    expectTensor(label, t.k, [N, Hkv * Dh], 'f32');
    expectTensor(label, t.v, [N, Hkv * Dh], 'f32');
    expectTensor(label, t.segIds, [N], 'i32');
    expectTensor(label, t.o, [N, H * Dh], 'f32');
    expectTensor(label, t.lse, [N, H], 'f32');
    const scale = dims.scale ?? 1 / Math.sqrt(Dh);
    const qTiles = Math.ceil(T / this.tiles.br);
    return this.forwardKernel.bind(label, { o: t.o, lse: t.lse, q: t.q, k: t.k, v: t.v, segIds: t.segIds }, { tokens: T, qHeads: H, kvHeads: Hkv, scale }, [B * H, qTiles]);
  }
}

/**
 * float64 reference of `Attention.forward`: plain loops, max-subtracted softmax.
 * q (B·T, H·Dh), k and v (B·T, Hkv·Dh), segIds (B·T) → o (B·T, H·Dh), lse (B·T, H).
 */
export function attentionForwardRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  segIds: ArrayLike<number>,
  dims: AttentionDims,
): { o: Float64Array; lse: Float64Array } {
  const { B, T, H, Dh } = dims;
  const o = new Float64Array(B * T * H * Dh);
  const lse = new Float64Array(B * T * H);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < T; i++) {
      for (let h = 0; h < H; h++) {
        const row = attentionRowRef(q, k, v, segIds, dims, b, i, h);
        o.set(row.o, ((b * T + i) * H + h) * Dh);
        lse[(b * T + i) * H + h] = row.lse;
      }
    }
  }
  return { o, lse };
}

/**
 * float64 reference for one query: batch row b, token i, head h → o (Dh) and lse. A row with no
 * visible key gives o = 0, lse = 0 (as the shader).
 */
export function attentionRowRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  segIds: ArrayLike<number>,
  dims: AttentionDims,
  b: number,
  i: number,
  h: number,
): { o: Float64Array; lse: number } {
  const { T, H, Hkv, Dh } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(Dh);
  const g = Math.floor(h / (H / Hkv));
  const qi = ((b * T + i) * H + h) * Dh;
  const s = new Float64Array(i + 1).fill(-Infinity);
  let m = -Infinity;
  for (let j = 0; j <= i; j++) {
    if (segIds[b * T + j] !== segIds[b * T + i]) continue;
    const kj = ((b * T + j) * Hkv + g) * Dh;
    let dot = 0;
    for (let d = 0; d < Dh; d++) dot += q[qi + d] * k[kj + d];
    s[j] = dot * scale;
    m = Math.max(m, s[j]);
  }
  const o = new Float64Array(Dh);
  let sum = 0;
  for (let j = 0; j <= i; j++) if (s[j] !== -Infinity) sum += Math.exp(s[j] - m);
  if (sum === 0) return { o, lse: 0 };
  for (let j = 0; j <= i; j++) {
    if (s[j] === -Infinity) continue;
    const p = Math.exp(s[j] - m) / sum;
    const vj = ((b * T + j) * Hkv + g) * Dh;
    for (let d = 0; d < Dh; d++) o[d] += p * v[vj + d];
  }
  return { o, lse: m + Math.log(sum) };
}
