import { ConfigError, DeviceLimitError, ShapeError } from '../errors.js';
import type { AttentionDims } from './attention.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { Kernel, storageBufferCount, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectDisjoint, expectNoReadWriteAlias, expectPositiveIntegers, expectTensor, type Tensor } from './tensor.js';
import { foldGrid } from './grid.js';

/**
 * Backward pass of `Attention.forward` (causal GQA attention with packed-segment masking) in the
 * FlashAttention-2 form: three dispatches, no T×T matrix in memory.
 *   1. delta = rowsum(dO ⊙ O)                                   shaders/attention_backward_delta.wgsl
 *   2. dK, dV: one workgroup per key tile of one KV head, looping over the query heads of its
 *      group and the query tiles at or after it (no atomics)   shaders/attention_backward_dkdv.wgsl
 *   3. dQ: one workgroup per query tile of one head            shaders/attention_backward_dq.wgsl
 * Both 2 and 3 recompute P = exp(scale·q·k − lse) from the forward's saved lse.
 */
export const AttentionBackwardParams = defineParams('AttentionBackwardParams', [
  ['batch', 'u32'],
  ['tokens', 'u32'],
  ['qHeads', 'u32'],
  ['kvHeads', 'u32'],
  ['scale', 'f32'],
] as const);

export const attentionBackwardDeltaSpec: KernelSpec<typeof AttentionBackwardParams> = {
  file: 'attention_backward_delta.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'delta', access: 'read_write' },
    { name: 'dO', access: 'read' },
    { name: 'o', access: 'read' },
  ],
  params: AttentionBackwardParams,
};

export const attentionBackwardDkdvSpec: KernelSpec<typeof AttentionBackwardParams> = {
  file: 'attention_backward_dkdv.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dk', access: 'read_write' },
    { name: 'dv', access: 'read_write' },
    { name: 'dO', access: 'read' },
    { name: 'q', access: 'read' },
    { name: 'k', access: 'read' },
    { name: 'v', access: 'read' },
    { name: 'segIds', access: 'read' },
    { name: 'lse', access: 'read' },
    { name: 'delta', access: 'read' },
  ],
  params: AttentionBackwardParams,
};

export const attentionBackwardDqSpec: KernelSpec<typeof AttentionBackwardParams> = {
  file: 'attention_backward_dq.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dq', access: 'read_write' },
    { name: 'dO', access: 'read' },
    { name: 'q', access: 'read' },
    { name: 'k', access: 'read' },
    { name: 'v', access: 'read' },
    { name: 'segIds', access: 'read' },
    { name: 'lse', access: 'read' },
    { name: 'delta', access: 'read' },
  ],
  params: AttentionBackwardParams,
};

/** Storage buffers bound by the dK/dV pass (its `maxStorageBuffersPerShaderStage` need). */
const DKDV_STORAGE_BUFFERS = storageBufferCount(attentionBackwardDkdvSpec);
/** Threads per workgroup of the delta pass, and threads per row (both override constants there). */
const DELTA_WORKGROUP = 256;

/**
 * Work split of the dK/dV pass: bc keys per workgroup, br query rows per inner tile, rb rows per
 * thread block of the score phase (1, 2 or 4), kg groups of 4 keys per thread (1 or 2).
 */
export interface DkdvTiles {
  readonly bc: number;
  readonly br: number;
  readonly rb?: number;
  readonly kg?: number;
}

/**
 * Work split of the dQ pass: br query rows per workgroup, bc keys per tile, rb rows per thread
 * block of the score phase (1, 2 or 4), rq rows of dQ per thread (dividing br, at most 8).
 */
export interface DqTiles {
  readonly br: number;
  readonly bc: number;
  readonly rb?: number;
  readonly rq?: number;
}

export interface AttentionBackwardTiles {
  readonly dkdv: DkdvTiles;
  readonly dq: DqTiles;
}

/**
 * Tried in order by `AttentionBackward.create`; the first that fits the device's workgroup memory
 * is taken. 16×16 needs 36 KB at Dh = 128 (the H100's 48 KiB); the next ones fit lavapipe's 32 KiB.
 */
export const DKDV_TILE_PREFERENCE: readonly DkdvTiles[] = [
  { bc: 16, br: 16 },
  { bc: 16, br: 8 },
  { bc: 8, br: 8 },
  { bc: 4, br: 4 },
];
export const DQ_TILE_PREFERENCE: readonly DqTiles[] = [
  { br: 16, bc: 16 },
  { br: 16, bc: 8 },
  { br: 8, bc: 8 },
  { br: 4, bc: 4 },
];

/** Bytes of workgroup memory the dK/dV shader declares (mirrors its `var<workgroup>`s). */
export function dkdvWorkgroupBytes(dh: number, t: DkdvTiles): number {
  const row4 = dh / 4 + 1;
  return 16 * (2 * t.bc * row4 + 2 * t.br * row4 + 2 * t.br * (t.bc / 4)) + 4 * (3 * t.br + t.bc + 1);
}

/** Bytes of workgroup memory the dQ shader declares (mirrors its `var<workgroup>`s). */
export function dqWorkgroupBytes(dh: number, t: DqTiles): number {
  const row4 = dh / 4 + 1;
  return 16 * (2 * t.br * row4 + 2 * t.bc * row4 + t.br * (t.bc / 4)) + 4 * (3 * t.br + t.bc + 1);
}

/** Threads per workgroup of the dK/dV pass. */
export function dkdvWorkgroupSize(dh: number, t: DkdvTiles): number {
  return (t.bc / 4 / (t.kg ?? defaultKg(t.bc))) * (dh / 4);
}

/** Threads per workgroup of the dQ pass. */
export function dqWorkgroupSize(dh: number, t: DqTiles): number {
  return (t.br / (t.rq ?? defaultRq(t.br))) * (dh / 4);
}

function defaultKg(bc: number): number {
  return (bc / 4) % 2 === 0 ? 2 : 1;
}

function defaultRq(br: number): number {
  return [8, 4, 2, 1].find((rq) => br % rq === 0) ?? 1;
}

/** The largest of 4, 2, 1 dividing br that still gives every thread a score block. */
function defaultRb(br: number, bc: number, wg: number): number {
  return [4, 2, 1].find((rb) => br % rb === 0 && (br / rb) * (bc / 4) >= wg) ?? 1;
}

function withDefaultsDkdv(dh: number, t: DkdvTiles): Required<DkdvTiles> {
  const kg = t.kg ?? defaultKg(t.bc);
  const wg = (t.bc / 4 / kg) * (dh / 4);
  return { bc: t.bc, br: t.br, kg, rb: t.rb ?? defaultRb(t.br, t.bc, wg) };
}

function withDefaultsDq(dh: number, t: DqTiles): Required<DqTiles> {
  const rq = t.rq ?? defaultRq(t.br);
  const wg = (t.br / rq) * (dh / 4);
  return { br: t.br, bc: t.bc, rq, rb: t.rb ?? defaultRb(t.br, t.bc, wg) };
}

/** Why a tile choice cannot run on `gpu`, or undefined when it can. */
function commonProblem(gpu: Gpu, bytes: number, wg: number, t: { br: number; bc: number; rb: number }): string | undefined {
  const { br, bc, rb } = t;
  if (!Number.isInteger(br) || !Number.isInteger(bc) || br < 4 || bc < 4 || br % 4 !== 0 || bc % 4 !== 0) {
    return `tile sizes br=${br}, bc=${bc} must be multiples of 4`;
  }
  if (![1, 2, 4].includes(rb) || br % rb !== 0) return `rb=${rb} must be 1, 2 or 4 and divide br=${br}`;
  if (bytes > gpu.limits.maxComputeWorkgroupStorageSize) {
    return `br=${br}, bc=${bc} need ${bytes} bytes of workgroup memory, the device allows ${gpu.limits.maxComputeWorkgroupStorageSize}`;
  }
  if (wg > Math.min(256, gpu.limits.maxComputeInvocationsPerWorkgroup)) return `${wg} threads per workgroup, more than 256`;
  return undefined;
}

function dkdvProblem(gpu: Gpu, dh: number, t: Required<DkdvTiles>): string | undefined {
  if (![1, 2].includes(t.kg) || (t.bc / 4) % t.kg !== 0) return `kg=${t.kg} must be 1 or 2 and divide bc/4=${t.bc / 4}`;
  return commonProblem(gpu, dkdvWorkgroupBytes(dh, t), dkdvWorkgroupSize(dh, t), t);
}

function dqProblem(gpu: Gpu, dh: number, t: Required<DqTiles>): string | undefined {
  if (!Number.isInteger(t.rq) || t.rq < 1 || t.rq > 8 || t.br % t.rq !== 0) return `rq=${t.rq} must divide br=${t.br} and be at most 8`;
  return commonProblem(gpu, dqWorkgroupBytes(dh, t), dqWorkgroupSize(dh, t), t);
}

function pickTiles<T, R>(
  what: string,
  given: T | undefined,
  preference: readonly T[],
  complete: (t: T) => R,
  problem: (t: R) => string | undefined,
  dh: number,
  limit: number,
): R {
  if (given) {
    const t = complete(given);
    const p = problem(t);
    if (p) throw new DeviceLimitError(`AttentionBackward (${what}, head_dim ${dh}): ${p}; choose other tiles`);
    return t;
  }
  for (const candidate of preference) {
    const t = complete(candidate);
    if (problem(t) === undefined) return t;
  }
  throw new DeviceLimitError(`AttentionBackward (${what}): no tile size fits head_dim ${dh} in ${limit} bytes of workgroup memory`);
}

/** Buffers of one attention backward (N = B·T tokens, token-major). */
export interface AttentionBackwardTensors {
  /** (N, H·Dh) f32 — gradient of q (after q_norm and rope); overwritten. */
  readonly dq: Tensor;
  /** (N, Hkv·Dh) f32 — gradient of k (after k_norm and rope); overwritten. */
  readonly dk: Tensor;
  /** (N, Hkv·Dh) f32 — gradient of v; overwritten. */
  readonly dv: Tensor;
  /** (N, H·Dh) f32 — gradient of the attention output o. */
  readonly dO: Tensor;
  /** (N, H·Dh) f32 — the forward's queries. */
  readonly q: Tensor;
  /** (N, Hkv·Dh) f32 — the forward's keys. */
  readonly k: Tensor;
  /** (N, Hkv·Dh) f32 — the forward's values. */
  readonly v: Tensor;
  /** (N, H·Dh) f32 — the forward's output. */
  readonly o: Tensor;
  /** (N, H) f32 — the forward's log-sum-exp. */
  readonly lse: Tensor;
  /** (N) i32 — the forward's segment ids. */
  readonly segIds: Tensor;
  /** (N, H) f32 — scratch: rowsum(dO ⊙ O), written by the first dispatch, read by the other two. */
  readonly delta: Tensor;
}

/**
 * Checks what both attention backwards (f32 and subgroup-matrix) take alike — the dims, the head
 * dim `headDim` their kernels were compiled for, and the shapes of dq, dk, dv, dO, q, k, v, o, lse
 * and segIds — and returns N = B·T; each then checks its own scratch and aliasing.
 */
export function checkAttentionBackwardTensors(label: string, where: string, t: Omit<AttentionBackwardTensors, 'delta'>, dims: AttentionDims, headDim: number): number {
  const { B, T, H, Hkv, Dh } = dims;
  expectPositiveIntegers(label, { B, T, H, Hkv, Dh });
  if (Dh !== headDim) throw new ShapeError(`${label}: Dh=${Dh} but the kernels were compiled for head_dim ${headDim}`);
  if (H % Hkv !== 0) throw new ShapeError(`${label}: H=${H} query heads is not a multiple of Hkv=${Hkv} key/value heads`);
  const N = B * T;
  expectTensor(where, t.dq, [N, H * Dh], 'f32');
  expectTensor(where, t.dk, [N, Hkv * Dh], 'f32');
  expectTensor(where, t.dv, [N, Hkv * Dh], 'f32');
  expectTensor(where, t.dO, [N, H * Dh], 'f32');
  expectTensor(where, t.q, [N, H * Dh], 'f32');
  expectTensor(where, t.k, [N, Hkv * Dh], 'f32');
  expectTensor(where, t.v, [N, Hkv * Dh], 'f32');
  expectTensor(where, t.o, [N, H * Dh], 'f32');
  expectTensor(where, t.lse, [N, H], 'f32');
  expectTensor(where, t.segIds, [N], 'i32');
  return N;
}

export class AttentionBackward {
  private constructor(
    readonly headDim: number,
    readonly tiles: { readonly dkdv: Required<DkdvTiles>; readonly dq: Required<DqTiles> },
    private readonly deltaKernel: Kernel<typeof AttentionBackwardParams>,
    private readonly dkdvKernel: Kernel<typeof AttentionBackwardParams>,
    private readonly dqKernel: Kernel<typeof AttentionBackwardParams>,
    private readonly deltaRowThreads: number,
  ) {}

  /**
   * Compiles the three passes for head dim `headDim` (a multiple of 4, at most 256). Without
   * `tiles`, each pass takes the first entry of its preference list that fits the device's
   * workgroup memory; given tiles that do not fit are a DeviceLimitError.
   */
  static async create(gpu: Gpu, options: { headDim: number; tiles?: Partial<AttentionBackwardTiles> }): Promise<AttentionBackward> {
    const dh = options.headDim;
    if (!Number.isInteger(dh) || dh < 4 || dh > 256 || dh % 4 !== 0) {
      throw new ConfigError(`AttentionBackward: head_dim must be a multiple of 4 between 4 and 256, got ${dh}`);
    }
    if (gpu.limits.maxStorageBuffersPerShaderStage < DKDV_STORAGE_BUFFERS) {
      throw new DeviceLimitError(
        `AttentionBackward (attention_backward_dkdv.wgsl): binds ${DKDV_STORAGE_BUFFERS} storage buffers, this device allows ` +
          `${gpu.limits.maxStorageBuffersPerShaderStage} per shader stage; use a GPU driver that offers more`,
      );
    }
    const limit = gpu.limits.maxComputeWorkgroupStorageSize;
    const dkdv = pickTiles('attention_backward_dkdv.wgsl', options.tiles?.dkdv, DKDV_TILE_PREFERENCE, (t) => withDefaultsDkdv(dh, t), (t) => dkdvProblem(gpu, dh, t), dh, limit);
    const dq = pickTiles('attention_backward_dq.wgsl', options.tiles?.dq, DQ_TILE_PREFERENCE, (t) => withDefaultsDq(dh, t), (t) => dqProblem(gpu, dh, t), dh, limit);
    // Threads per row of the delta pass: a power of two, at most DH/4 (and 8).
    const rt = [8, 4, 2, 1].find((n) => n <= dh / 4) ?? 1;
    const deltaKernel = await Kernel.create(gpu, attentionBackwardDeltaSpec, { DH: dh, RT: rt, WG: DELTA_WORKGROUP });
    const dkdvKernel = await Kernel.create(gpu, attentionBackwardDkdvSpec, { DH: dh, BC: dkdv.bc, BR: dkdv.br, RB: dkdv.rb, KG: dkdv.kg });
    const dqKernel = await Kernel.create(gpu, attentionBackwardDqSpec, { DH: dh, BR: dq.br, BC: dq.bc, RB: dq.rb, RQ: dq.rq });
    return new AttentionBackward(dh, { dkdv, dq }, deltaKernel, dkdvKernel, dqKernel, rt);
  }

  /**
   * dq (N, H·Dh), dk, dv (N, Hkv·Dh) — overwritten — from dO (N, H·Dh) and the forward's q, k, v,
   * o, lse, segIds; delta (N, H) f32 scratch. GQA: dk/dv sum over the H/Hkv query heads of each
   * KV head. Returns the three dispatches in order (delta, dK/dV, dQ); submit them together.
   */
  backward(label: string, t: AttentionBackwardTensors, dims: AttentionDims): Dispatch[] {
    const { B, T, H, Hkv, Dh } = dims;
    const where = `${label} (attentionBackward)`;
    const N = checkAttentionBackwardTensors(label, where, t, dims, this.headDim);
    expectTensor(where, t.delta, [N, H], 'f32');
    // WebGPU forbids a buffer written by a dispatch to be read by it too; two written views of one
    // buffer are allowed only when they do not overlap.
    expectNoReadWriteAlias(where, [t.delta], [t.dO, t.o]);
    expectNoReadWriteAlias(where, [t.dk, t.dv], [t.dO, t.q, t.k, t.v, t.segIds, t.lse, t.delta]);
    expectNoReadWriteAlias(where, [t.dq], [t.dO, t.q, t.k, t.v, t.segIds, t.lse, t.delta]);
    expectDisjoint(where, t.dk, t.dv);

    const scale = dims.scale ?? 1 / Math.sqrt(Dh);
    const params = { batch: B, tokens: T, qHeads: H, kvHeads: Hkv, scale };
    const rowsPerGroup = DELTA_WORKGROUP / this.deltaRowThreads;
    const g = Math.ceil((N * H) / rowsPerGroup);
    const deltaGrid = foldGrid(g);
    const { dkdv, dq } = this.tiles;
    return [
      this.deltaKernel.bind(`${label} delta`, { delta: t.delta, dO: t.dO, o: t.o }, params, deltaGrid),
      this.dkdvKernel.bind(
        `${label} dk/dv`,
        { dk: t.dk, dv: t.dv, dO: t.dO, q: t.q, k: t.k, v: t.v, segIds: t.segIds, lse: t.lse, delta: t.delta },
        params,
        [B * Hkv, Math.ceil(T / dkdv.bc)],
      ),
      this.dqKernel.bind(
        `${label} dq`,
        { dq: t.dq, dO: t.dO, q: t.q, k: t.k, v: t.v, segIds: t.segIds, lse: t.lse, delta: t.delta },
        params,
        [B * H, Math.ceil(T / dq.br)],
      ),
    ];
  }
}

/**
 * float64 reference of `AttentionBackward.backward`: plain loops, max-subtracted softmax recomputed
 * from q and k (independent of the forward's saved lse). For each (batch row b, query i, head h),
 * with k, v of KV head h / (H/Hkv) and `attentionBackwardRowRef` giving P and dS of the row:
 *   dq_i += scale·dS_j·k_j;  dk_j += scale·dS_j·q_i;  dv_j += P_j·dO_i.
 * dO (B·T, H·Dh), q (B·T, H·Dh), k, v (B·T, Hkv·Dh), segIds (B·T) → dq, dk, dv.
 */
export function attentionBackwardRef(
  dO: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  segIds: ArrayLike<number>,
  dims: AttentionDims,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { B, T, H, Hkv, Dh } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(Dh);
  const dq = new Float64Array(B * T * H * Dh);
  const dk = new Float64Array(B * T * Hkv * Dh);
  const dv = new Float64Array(B * T * Hkv * Dh);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < T; i++) {
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / Hkv));
        const qi = ((b * T + i) * H + h) * Dh;
        const { p, ds } = attentionBackwardRowRef(dO, q, k, v, segIds, dims, b, i, h);
        for (let j = 0; j <= i; j++) {
          if (p[j] === 0 && ds[j] === 0) continue;
          const kj = ((b * T + j) * Hkv + g) * Dh;
          for (let d = 0; d < Dh; d++) {
            dq[qi + d] += scale * ds[j] * k[kj + d];
            dk[kj + d] += scale * ds[j] * q[qi + d];
            dv[kj + d] += p[j] * dO[qi + d];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

/**
 * float64 P and dS of one query: batch row b, token i, head h → p, ds (T each, zero at keys the
 * query does not see):
 *   1. s_j = scale·q_i·k_j over the visible keys j;  P_j = exp(s_j − m) / Σ exp(s − m)
 *   2. dP_j = dO_i·v_j;  delta = Σ_j P_j·dP_j  (= dO_i·o_i)
 *   3. dS_j = P_j·(dP_j − delta)
 */
export function attentionBackwardRowRef(
  dO: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  segIds: ArrayLike<number>,
  dims: AttentionDims,
  b: number,
  i: number,
  h: number,
): { p: Float64Array; ds: Float64Array } {
  const { T, H, Hkv, Dh } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(Dh);
  const g = Math.floor(h / (H / Hkv));
  const qi = ((b * T + i) * H + h) * Dh;
  const visible = (j: number) => j <= i && segIds[b * T + j] === segIds[b * T + i];
  const p = new Float64Array(T);
  const ds = new Float64Array(T);
  let m = -Infinity;
  for (let j = 0; j <= i; j++) {
    if (!visible(j)) continue;
    const kj = ((b * T + j) * Hkv + g) * Dh;
    let dot = 0;
    for (let d = 0; d < Dh; d++) dot += q[qi + d] * k[kj + d];
    p[j] = dot * scale;
    m = Math.max(m, p[j]);
  }
  let sum = 0;
  for (let j = 0; j <= i; j++) if (visible(j)) sum += Math.exp(p[j] - m);
  let delta = 0;
  for (let j = 0; j <= i; j++) {
    if (!visible(j)) continue;
    p[j] = Math.exp(p[j] - m) / sum;
    const vj = ((b * T + j) * Hkv + g) * Dh;
    let dot = 0;
    for (let d = 0; d < Dh; d++) dot += dO[qi + d] * v[vj + d];
    ds[j] = dot;
    delta += p[j] * dot;
  }
  for (let j = 0; j <= i; j++) if (visible(j)) ds[j] = p[j] * (ds[j] - delta);
  return { p, ds };
}
