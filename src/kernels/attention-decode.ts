import { ConfigError, DeviceLimitError, ShapeError } from '../errors.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { groups, Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectPositiveIntegers, expectTensor, type Tensor } from './tensor.js';
import { GRID_FOLD } from './grid.js';

/**
 * Attention for generation: a chunk of n ≤ C new tokens at positions p0 .. p0+n−1 against a KV
 * cache (Hkv, maxContext, Dh) that holds every earlier token's keys (after k_norm and rope) and
 * values. Three kernels, each pre-bound once and replayed at every step (p0 and n are read from a
 * small `chunk` buffer, (4) i32 = [p0, n, −, −], written before each submit):
 *   writeKv   — the chunk's k, v (C, Hkv·Dh) into the cache at rows p0 .. p0+n−1
 *               (shaders/attention_decode_kv_write.wgsl);
 *   forward   — causal GQA attention of q (C, H·Dh) over cache rows 0 .. p0+i, flash style with
 *               the keys cut into S splits (shaders/attention_decode.wgsl), then the merge of the
 *               splits (shaders/attention_decode_combine.wgsl) into o (C, H·Dh); padding rows
 *               (i ≥ n) of o are zero.
 * With n = 1 (one token per step) the splits are what keeps the GPU busy: Hkv workgroups alone
 * would leave most of an H100's 132 SMs idle, so S splits of the context make Hkv·S workgroups.
 */
export const AttentionDecodeParams = defineParams('AttentionDecodeParams', [
  ['rows', 'u32'],
  ['qHeads', 'u32'],
  ['kvHeads', 'u32'],
  ['maxContext', 'u32'],
  ['splits', 'u32'],
  ['scale', 'f32'],
] as const);

export const AttentionCombineParams = defineParams('AttentionCombineParams', [
  ['rows', 'u32'],
  ['qHeads', 'u32'],
  ['splits', 'u32'],
] as const);

export const KvWriteParams = defineParams('KvWriteParams', [
  ['rows', 'u32'],
  ['kvHeads', 'u32'],
  ['maxContext', 'u32'],
] as const);

export const attentionDecodeSpec: KernelSpec<typeof AttentionDecodeParams> = {
  file: 'attention_decode.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'oPart', access: 'read_write' },
    { name: 'mlPart', access: 'read_write' },
    { name: 'q', access: 'read' },
    { name: 'kCache', access: 'read' },
    { name: 'vCache', access: 'read' },
    { name: 'chunk', access: 'read' },
  ],
  params: AttentionDecodeParams,
};

export const attentionDecodeCombineSpec: KernelSpec<typeof AttentionCombineParams> = {
  file: 'attention_decode_combine.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'o', access: 'read_write' },
    { name: 'oPart', access: 'read' },
    { name: 'mlPart', access: 'read' },
    { name: 'chunk', access: 'read' },
  ],
  params: AttentionCombineParams,
};

export const kvWriteSpec: KernelSpec<typeof KvWriteParams> = {
  file: 'attention_decode_kv_write.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'kCache', access: 'read_write' },
    { name: 'vCache', access: 'read_write' },
    { name: 'k', access: 'read' },
    { name: 'v', access: 'read' },
    { name: 'chunk', access: 'read' },
  ],
  params: KvWriteParams,
};

/** Threads of the elementwise kernels (KV write, combine). */
const ELEMENTWISE_WG = 256;
/** The shader's MAX_OPT: most vec4 outputs one thread accumulates. */
const MAX_OPT = 16;
/** Workgroups the splits aim for (about two per SM on an H100). */
const TARGET_WORKGROUPS = 256;

/** Work split of attention_decode.wgsl: query tokens per workgroup (bq), keys per tile (bc), threads (wg). */
export interface DecodeTiles {
  readonly bq: number;
  readonly bc: number;
  readonly wg: number;
  /** vec4 outputs per thread: ceil(bq·G·Dh/4 / wg). */
  readonly opt: number;
}

/**
 * (bq, bc) tried in order, the first that fits the device: for chunks of more than one token the
 * largest query tile (each staged K/V row serves bq·G rows); for one token (bq = 1) key tiles of 32
 * (one score per thread for Qwen3-4B's 4 heads per KV head and 128 threads).
 */
const TILE_PREFERENCE: readonly (readonly [number, number])[] = [
  [16, 32], [8, 32], [8, 16], [4, 32], [4, 16], [2, 16], [1, 32], [1, 16], [1, 8], [1, 4],
];

/** Bytes of workgroup memory attention_decode.wgsl declares for these sizes (mirrors its `var<workgroup>`s). */
export function decodeWorkgroupBytes(dh: number, groupSize: number, bq: number, bc: number): number {
  const r = bq * groupSize;
  return 16 * (r * (dh / 4) + bc * (dh / 4 + 1)) + 4 * (r * bc + 3 * r) + 8;
}

/**
 * Threads for bq·G rows of Dh/4 vec4 outputs: 64 for tiny heads, 128 up to 8 outputs a thread
 * (one each for a Qwen3-4B decode step: 4 rows × 32), else 256.
 */
function completeTiles(dh: number, groupSize: number, bq: number, bc: number): DecodeTiles {
  const outputs = bq * groupSize * (dh / 4);
  const wg = outputs <= 64 ? 64 : outputs <= 1024 ? 128 : 256;
  return { bq, bc, wg, opt: Math.ceil(outputs / wg) };
}

function tilesProblem(gpu: Gpu, dh: number, groupSize: number, t: DecodeTiles): string | undefined {
  if (!Number.isInteger(t.bq) || t.bq < 1 || !Number.isInteger(t.bc) || t.bc < 1) return `bq=${t.bq}, bc=${t.bc} must be positive integers`;
  if (t.opt > MAX_OPT) return `bq=${t.bq} × G=${groupSize} rows of head_dim ${dh} need ${t.opt} outputs per thread, more than ${MAX_OPT}`;
  if (t.wg > gpu.limits.maxComputeInvocationsPerWorkgroup) return `${t.wg} threads exceed the device's ${gpu.limits.maxComputeInvocationsPerWorkgroup}`;
  const bytes = decodeWorkgroupBytes(dh, groupSize, t.bq, t.bc);
  if (bytes > gpu.limits.maxComputeWorkgroupStorageSize) {
    return `bq=${t.bq}, bc=${t.bc} need ${bytes} bytes of workgroup memory, the device allows ${gpu.limits.maxComputeWorkgroupStorageSize}`;
  }
  return undefined;
}

/** Buffers of the KV write. */
export interface KvWriteTensors {
  /** (Hkv, maxContext, Dh) f32, written at rows p0 .. p0+n−1. */
  readonly kCache: Tensor;
  /** (Hkv, maxContext, Dh) f32 */
  readonly vCache: Tensor;
  /** (C, Hkv·Dh) f32 — the chunk's keys after k_norm and rope. */
  readonly k: Tensor;
  /** (C, Hkv·Dh) f32 — the chunk's values. */
  readonly v: Tensor;
  /** (4) i32 — [p0, n, −, −]. */
  readonly chunk: Tensor;
}

/** Buffers of the attention forward. */
export interface AttentionDecodeTensors {
  /** (C, H·Dh) f32 — output; rows i ≥ n are zero. */
  readonly o: Tensor;
  /** (S, C, H·Dh) f32 — scratch: each split's unnormalised output. */
  readonly oPart: Tensor;
  /** (S, C, H, 2) f32 — scratch: each split's (max, sum). */
  readonly mlPart: Tensor;
  /** (C, H·Dh) f32 — queries after q_norm and rope. */
  readonly q: Tensor;
  readonly kCache: Tensor;
  readonly vCache: Tensor;
  /** (4) i32 — [p0, n, −, −]. */
  readonly chunk: Tensor;
}

export interface AttentionDecodeDims {
  /** C: rows of the chunk buffers (the most new tokens one step takes). */
  readonly rows: number;
  readonly H: number;
  readonly Hkv: number;
  readonly Dh: number;
  readonly maxContext: number;
  /** S key splits (see `AttentionDecode.splitsFor`). */
  readonly splits: number;
  /** Score scale; default 1/sqrt(Dh). */
  readonly scale?: number;
}

export class AttentionDecode {
  private constructor(
    readonly headDim: number,
    readonly groupSize: number,
    readonly tiles: DecodeTiles,
    private readonly partial: Kernel<typeof AttentionDecodeParams>,
    private readonly combine: Kernel<typeof AttentionCombineParams>,
    private readonly kvWrite: Kernel<typeof KvWriteParams>,
  ) {}

  /**
   * Compiles the three kernels for head dim `headDim` (a multiple of 4), `groupSize` = H / Hkv query
   * heads per KV head, and chunks of up to `rows` tokens: one query token per workgroup when rows = 1,
   * else the first entry of the tile preference list that fits the device. Given tiles that do not
   * fit are a DeviceLimitError.
   */
  static async create(gpu: Gpu, options: { headDim: number; groupSize: number; rows: number; tiles?: { bq: number; bc: number } }): Promise<AttentionDecode> {
    const { headDim: dh, groupSize, rows } = options;
    if (!Number.isInteger(dh) || dh < 4 || dh % 4 !== 0) throw new ConfigError(`AttentionDecode: head_dim must be a positive multiple of 4, got ${dh}`);
    if (!Number.isInteger(groupSize) || groupSize < 1) throw new ConfigError(`AttentionDecode: H / Hkv must be a positive integer, got ${groupSize}`);
    if (!Number.isInteger(rows) || rows < 1) throw new ShapeError(`AttentionDecode: chunk rows must be a positive integer, got ${rows}`);
    let tiles: DecodeTiles | undefined;
    if (options.tiles) {
      tiles = completeTiles(dh, groupSize, options.tiles.bq, options.tiles.bc);
      const problem = tilesProblem(gpu, dh, groupSize, tiles);
      if (problem) throw new DeviceLimitError(`AttentionDecode (attention_decode.wgsl, head_dim ${dh}): ${problem}; choose smaller tiles`);
    } else {
      const candidates = rows === 1 ? TILE_PREFERENCE.filter(([bq]) => bq === 1) : TILE_PREFERENCE.filter(([bq]) => bq <= rows || bq === 1);
      tiles = candidates.map(([bq, bc]) => completeTiles(dh, groupSize, bq, bc)).find((t) => tilesProblem(gpu, dh, groupSize, t) === undefined);
      if (!tiles) {
        throw new DeviceLimitError(
          `AttentionDecode (attention_decode.wgsl): no tile size fits head_dim ${dh} with ${groupSize} query heads per KV head in ` +
            `${gpu.limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory`,
        );
      }
    }
    const [partial, combine, kvWrite] = await Promise.all([
      Kernel.create(gpu, attentionDecodeSpec, { DH: dh, G: groupSize, BQ: tiles.bq, BC: tiles.bc, WG: tiles.wg, OPT: tiles.opt }),
      Kernel.create(gpu, attentionDecodeCombineSpec, { DH: dh, WG: ELEMENTWISE_WG }),
      Kernel.create(gpu, kvWriteSpec, { DH: dh, WG: ELEMENTWISE_WG }),
    ]);
    return new AttentionDecode(dh, groupSize, tiles, partial, combine, kvWrite);
  }

  /**
   * Key splits for chunks of `rows` tokens: enough for about 256 workgroups (Hkv · query tiles · S),
   * at most one per tile of keys in the cache.
   */
  splitsFor(rows: number, Hkv: number, maxContext: number): number {
    const qTiles = Math.ceil(rows / this.tiles.bq);
    const wanted = Math.ceil(TARGET_WORKGROUPS / (Hkv * qTiles));
    return Math.max(1, Math.min(wanted, Math.ceil(maxContext / this.tiles.bc)));
  }

  /** kCache, vCache rows p0 .. p0+n−1 ← k, v (C, Hkv·Dh) rows 0 .. n−1. */
  writeKv(label: string, t: KvWriteTensors, dims: { rows: number; Hkv: number; maxContext: number }): Dispatch {
    const { rows, Hkv, maxContext } = dims;
    expectPositiveIntegers(label, { rows, Hkv, maxContext });
    const Dh = this.headDim;
    expectTensor(label, t.kCache, [Hkv, maxContext, Dh], 'f32');
    expectTensor(label, t.vCache, [Hkv, maxContext, Dh], 'f32');
    expectTensor(label, t.k, [rows, Hkv * Dh], 'f32');
    expectTensor(label, t.v, [rows, Hkv * Dh], 'f32');
    expectTensor(label, t.chunk, [4], 'i32');
    return this.kvWrite.bind(label, { kCache: t.kCache, vCache: t.vCache, k: t.k, v: t.v, chunk: t.chunk }, { rows, kvHeads: Hkv, maxContext }, [
      this.grid(label, (rows * Hkv * Dh) / 4),
    ]);
  }

  /** o (C, H·Dh) ← attention of q over the cache: the split pass, then the combine. */
  forward(label: string, t: AttentionDecodeTensors, dims: AttentionDecodeDims): Dispatch[] {
    const { rows, H, Hkv, Dh, maxContext, splits } = dims;
    expectPositiveIntegers(label, { rows, H, Hkv, Dh, maxContext, splits });
    if (Dh !== this.headDim) throw new ShapeError(`${label}: Dh=${Dh} but the kernel was compiled for head_dim ${this.headDim}`);
    if (H !== Hkv * this.groupSize) throw new ShapeError(`${label}: H=${H} query heads, Hkv=${Hkv}: the kernel was compiled for ${this.groupSize} query heads per KV head`);
    expectTensor(label, t.q, [rows, H * Dh], 'f32');
    expectTensor(label, t.o, [rows, H * Dh], 'f32');
    expectTensor(label, t.oPart, [splits, rows, H * Dh], 'f32');
    expectTensor(label, t.mlPart, [splits, rows, H, 2], 'f32');
    expectTensor(label, t.kCache, [Hkv, maxContext, Dh], 'f32');
    expectTensor(label, t.vCache, [Hkv, maxContext, Dh], 'f32');
    expectTensor(label, t.chunk, [4], 'i32');
    const scale = dims.scale ?? 1 / Math.sqrt(Dh);
    const qTiles = Math.ceil(rows / this.tiles.bq);
    return [
      this.partial.bind(
        `${label} splits`,
        { oPart: t.oPart, mlPart: t.mlPart, q: t.q, kCache: t.kCache, vCache: t.vCache, chunk: t.chunk },
        { rows, qHeads: H, kvHeads: Hkv, maxContext, splits, scale },
        [Hkv * qTiles, splits],
      ),
      this.combine.bind(`${label} combine`, { o: t.o, oPart: t.oPart, mlPart: t.mlPart, chunk: t.chunk }, { rows, qHeads: H, splits }, [
        this.grid(label, (rows * H * Dh) / 4),
      ]),
    ];
  }

  private grid(label: string, threads: number): number {
    const g = groups(threads, ELEMENTWISE_WG);
    if (g > GRID_FOLD) throw new DeviceLimitError(`${label}: ${threads} threads need ${g} workgroups, more than ${GRID_FOLD} in one dimension; use smaller chunks`);
    return g;
  }
}

/**
 * float64 reference of `AttentionDecode.forward` (after `writeKv`): plain loops, max-subtracted
 * softmax. q (n, H·Dh) for tokens at positions p0 .. p0+n−1; kCache, vCache (Hkv, maxContext, Dh)
 * holding keys and values at rows 0 .. p0+n−1 → o (n, H·Dh).
 */
export function attentionDecodeRef(
  q: ArrayLike<number>,
  kCache: ArrayLike<number>,
  vCache: ArrayLike<number>,
  p0: number,
  n: number,
  dims: { H: number; Hkv: number; Dh: number; maxContext: number; scale?: number },
): Float64Array {
  const { H, Hkv, Dh, maxContext } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(Dh);
  const o = new Float64Array(n * H * Dh);
  for (let i = 0; i < n; i++) {
    const keys = p0 + i + 1;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / Hkv));
      const qi = (i * H + h) * Dh;
      const s = new Float64Array(keys);
      let m = -Infinity;
      for (let j = 0; j < keys; j++) {
        const kj = (g * maxContext + j) * Dh;
        let dot = 0;
        for (let d = 0; d < Dh; d++) dot += q[qi + d] * kCache[kj + d];
        s[j] = dot * scale;
        m = Math.max(m, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < keys; j++) sum += Math.exp(s[j] - m);
      for (let j = 0; j < keys; j++) {
        const p = Math.exp(s[j] - m) / sum;
        const vj = (g * maxContext + j) * Dh;
        for (let d = 0; d < Dh; d++) o[qi + d] += p * vCache[vj + d];
      }
    }
  }
  return o;
}
