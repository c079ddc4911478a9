import { DeviceError, DeviceLimitError, ShapeError } from '../errors.js';
import type { Gpu, SubgroupMatrixConfig } from './gpu.js';
import { Kernel, storageBufferCount, type KernelSpec } from './kernel.js';
import {
  checkLoraEpilogue,
  checkWeight,
  FORMAT_CODE,
  STORED_FORMATS,
  WEIGHT_BINDING_SPECS,
  weightBindings,
  type MatmulCall,
  type StoredFormat,
} from './matmul.js';
import { defineParams } from './params.js';
import { dynamicMapTensor, NF4_BLOCK } from './nf4.js';
import { expectTensor, numel, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';

/**
 * Dequant-matmul on subgroup matrices (tensor cores): Y (M, nOut) f32 [+]= X (M, K) · dequant(W)ᵀ
 * [+ scale · U · Bᵀ], the f32 `Matmul.forward`'s call plus the (M) f32 row scales of X from
 * `RowScale` (row-scale.ts): X f32 is staged as f16(X[m]·rowScale[m]) — at most 2^14, so
 * activations past f16's 65504 do not overflow and rows of 1e-10 do not underflow — W (f32, bf16,
 * NF4 with or without double quantisation) is decoded to f16 while staging, 16×16×16 f16
 * fragments accumulate in f32, and the f32 epilogue multiplies row m by 1/rowScale[m] (exact, a
 * power of two), adds the LoRA term and, with `accumulate`, Y's old value
 * (shaders/matmul_sgm_forward.wgsl). The training step's projections and the loss head call it
 * on the tensor-core path (src/model/projection.ts). Needs
 * `chromium-experimental-subgroup-matrix`, `shader-f16` and an f16→f32 16×16×16 config
 * (`sgmUnsupportedReason` says why not); K must be a multiple of 64 (the NF4 block).
 *
 * Measured on an H200 without Dawn's robustness, 2026-12-04 (bench/results/h200-2026-12-04-forward-staging.md,
 * M = 2048, NF4, picked tiles; plain / with the r = 32 LoRA term): q_proj 130 / 115, k/v_proj
 * 111 / 82, gate/up 125 / 110, o_proj 101 / 81 (and the residual), down_proj 102 / 89 TFLOP/s.
 * 2026-12-02 (robustness on, before the row scales and epilogues): 94 at gate/up, 97 at q, 61–63 at
 * the others; the first version's strided staging loops ran at half that (48, 50, 45, 32, 31 in
 * bench/results/h200-2026-12-02-matmul-sgm.json; `staging: 'loop'` re-measured the same in v2):
 * the probe's speed came from its straight-line staging code. Tested on the GPU host by `npm run test:gpu` (tests/gpu; it needs vitest,
 * so pack the host bundle from a node_modules with dev dependencies, and without npm there run
 * `node node_modules/vitest/vitest.mjs run tests/gpu`).
 */

/**
 * Output tile of one workgroup: sgM × sgN subgroups of 32 invocations, each owning fm × fn
 * fragments of 16 × 16; reduction steps of bk. BM = 16·sgM·fm, BN = 16·sgN·fn.
 */
export interface SgmTile {
  readonly sgM: number;
  readonly sgN: number;
  readonly fm: number;
  readonly fn: number;
  readonly bk: number;
}

export const SGM_TILES = {
  /**
   * 128 × 256, 4 × 2 subgroups of 2 × 8 fragments: the fastest with loop staging; with unrolled
   * staging 76–80 TFLOP/s at gate/up and q, behind `tall` (H200, 2026-12-02, …-matmul-sgm-v2.json).
   */
  large: { sgM: 4, sgN: 2, fm: 2, fn: 8, bk: 32 },
  /** 128 × 128, 4 × 2 subgroups of 2 × 4: the fastest measured at k/v_proj (61.5 TFLOP/s; 64 workgroups of `tall` starve the SMs). */
  medium: { sgM: 4, sgN: 2, fm: 2, fn: 4, bk: 32 },
  /** 256 × 128, 8 × 1 subgroups of 2 × 8: the probe's tile, the fastest with unrolled staging at q, gate/up, o and down (94–97 and 61–63 TFLOP/s). */
  tall: { sgM: 8, sgN: 1, fm: 2, fn: 8, bk: 32 },
  /**
   * 256 × 80 (2 × 5 fragments): `tall` with fewer columns, for outputs of 2560 columns (o, down at
   * 2048 tokens), where `tall` makes 160 workgroups — 1.2 waves of 132 SMs, the second mostly idle
   * (62 TFLOP/s against 97 at q) — and this one 256, two full waves.
   */
  tall80: { sgM: 8, sgN: 1, fm: 2, fn: 5, bk: 32 },
  /** 256 × 64 (2 × 4 fragments): the same for 1024 columns (k/v_proj: 128 workgroups, one full wave). */
  tall64: { sgM: 8, sgN: 1, fm: 2, fn: 4, bk: 32 },
  /** 64 × 64, 2 × 2 subgroups of 2 × 2, reduction steps of 64: small outputs. */
  tiny: { sgM: 2, sgN: 2, fm: 2, fn: 2, bk: 64 },
} as const satisfies Record<string, SgmTile>;

/** Compiled by default, in the order pickSgmTile prefers them. */
export const SGM_DEFAULT_TILES: readonly SgmTile[] = [SGM_TILES.tall, SGM_TILES.tall80, SGM_TILES.tall64, SGM_TILES.medium, SGM_TILES.tiny];

/** The fragment size and the padding of staged rows (halves), as in the shader. */
const FRAG = 16;
const PAD = 8;

export function sgmTileRows(t: SgmTile): { bm: number; bn: number } {
  return { bm: FRAG * t.sgM * t.fm, bn: FRAG * t.sgN * t.fn };
}

export function sgmTileName(t: SgmTile): string {
  const { bm, bn } = sgmTileRows(t);
  return `${bm}x${bn}x${t.bk}/${t.sgM}x${t.sgN}sg/${t.fm}x${t.fn}f`;
}

/** Parses "BMxBNxBK/SGMxSGNsg/FMxFNf" (what sgmTileName writes), e.g. "256x128x32/8x1sg/2x8f". */
export function parseSgmTile(s: string): SgmTile {
  const m = /^(\d+)x(\d+)x(\d+)\/(\d+)x(\d+)sg\/(\d+)x(\d+)f$/.exec(s.trim());
  if (!m) throw new ShapeError(`subgroup-matrix tile "${s}": expected BMxBNxBK/SGMxSGNsg/FMxFNf, e.g. 256x128x32/8x1sg/2x8f`);
  const [bm, bn, bk, sgM, sgN, fm, fn] = m.slice(1).map(Number);
  const t = { sgM, sgN, fm, fn, bk };
  const rows = sgmTileRows(t);
  if (rows.bm !== bm || rows.bn !== bn) {
    throw new ShapeError(`subgroup-matrix tile "${s}": ${sgM}x${sgN} subgroups of ${fm}x${fn} fragments make ${rows.bm}x${rows.bn}, not ${bm}x${bn}`);
  }
  return t;
}

/**
 * The shader's fixed staging sizes (subgroupMatrixLoad takes no override-sized arrays): the X and
 * W tiles share TILE_HALVES f16, the edge scratch holds one fragment for each of MAX_SUBGROUPS.
 */
const TILE_HALVES = 15360;
const MAX_SUBGROUPS = 8;

/** Halves of staging a tile uses: both f16 tiles with rows padded to bk + 8. */
export function sgmTileHalves(t: SgmTile): number {
  const { bm, bn } = sgmTileRows(t);
  return (bm + bn) * (t.bk + PAD);
}

/** The most tile rows (BM) the shader's row-scale arrays hold, and tile columns (BN) its LoRA column scales hold. */
const MAX_ROWS = 256;
const MAX_COLS = 256;

/**
 * Bytes of workgroup memory the shader declares (the same for every tile): staging, epilogue
 * scratch, NF4 table, row scales and their reciprocals, the LoRA term's column scales.
 */
export function sgmTileWorkgroupBytes(): number {
  return TILE_HALVES * 2 + MAX_SUBGROUPS * FRAG * FRAG * 4 + 16 * 2 + 2 * MAX_ROWS * 4 + MAX_COLS * 4;
}

/**
 * Staging items per invocation and K step with the straight-line staging (`staging: 'unrolled'`):
 * X in units of 4 elements, W in units of 8; the shader writes out at most 8 of each.
 */
export function sgmStagingItems(t: SgmTile): { x: number; w: number } {
  const { bm, bn } = sgmTileRows(t);
  const threads = 32 * t.sgM * t.sgN;
  return { x: Math.ceil((bm * t.bk) / 4 / threads), w: Math.ceil((bn * t.bk) / 8 / threads) };
}

/** How the tiles are staged: 'unrolled' (default, straight-line code as in the probe) or 'loop' (a strided loop, the first version). */
export type SgmStaging = 'unrolled' | 'loop';

/** Why a tile cannot run (empty when it can), given the device's workgroup limits. */
export function sgmTileProblems(t: SgmTile, maxWorkgroupBytes: number, maxInvocations: number, staging: SgmStaging = 'unrolled'): string[] {
  const problems: string[] = [];
  const ints = [t.sgM, t.sgN, t.fm, t.fn].every((v) => Number.isInteger(v) && v >= 1);
  if (!ints) problems.push('sgM, sgN, fm and fn must be positive integers');
  if (t.fm > 2 || t.fn > 8) problems.push(`fm = ${t.fm} and fn = ${t.fn} fragments per subgroup must be at most 2 and 8 (the shader's named accumulators)`);
  if (![32, 64].includes(t.bk)) problems.push(`bk = ${t.bk} must be 32 or 64 (NF4 stages 32 codes per load)`);
  const threads = 32 * t.sgM * t.sgN;
  if (threads > Math.min(256, maxInvocations)) problems.push(`${threads} invocations exceed ${Math.min(256, maxInvocations)}`);
  if (t.sgM * t.sgN > MAX_SUBGROUPS) problems.push(`${t.sgM * t.sgN} subgroups exceed ${MAX_SUBGROUPS}`);
  if (sgmTileRows(t).bm > MAX_ROWS) problems.push(`BM = ${sgmTileRows(t).bm} rows exceed the shader's ${MAX_ROWS} row scales`);
  const halves = sgmTileHalves(t);
  if (halves > TILE_HALVES) problems.push(`(BM + BN)·(bk + ${PAD}) = ${halves} staged halves exceed the shader's ${TILE_HALVES}`);
  const items = sgmStagingItems(t);
  if (staging === 'unrolled' && (items.x > 8 || items.w > 8)) {
    problems.push(`unrolled staging writes at most 8 items per invocation; this tile needs ${items.x} (X) and ${items.w} (W): use staging 'loop' or more subgroups`);
  }
  if (sgmTileRows(t).bn > MAX_COLS) problems.push(`BN = ${sgmTileRows(t).bn} columns exceed the shader's ${MAX_COLS}`);
  const bytes = sgmTileWorkgroupBytes();
  if (bytes > maxWorkgroupBytes) problems.push(`the shader needs ${bytes} bytes of workgroup memory, the device allows ${maxWorkgroupBytes}`);
  return problems;
}

/**
 * Streaming multiprocessors the tile choice plans waves for: 132 on the H100 and H200, 128 on the
 * RTX 4090 (WebGPU does not report it; the choice below comes out the same for both).
 */
export const SGM_COMPUTE_UNITS = 132;

/** Share of the launched waves' slots that `workgroups` fill: 1 for whole waves of `units`. */
export function waveFill(workgroups: number, units: number): number {
  return workgroups / (Math.ceil(workgroups / units) * units);
}

/** The least wave fill pickSgmTile accepts for a tile (below it the last wave leaves SMs idle). */
const MIN_WAVE_FILL = 0.85;

/**
 * The tile for an (m × n) output among `tiles` (in order of preference, the fastest per workgroup
 * first): the first whose workgroups fill at least 85 % of the waves they launch on `units` SMs —
 * on the H200 a tile runs at its speed only in whole waves: 256 × 128 made 97 TFLOP/s at q_proj
 * (256 workgroups, fill 0.97) but 62 at o/down (160, fill 0.61) — else the one making the most.
 */
export function pickSgmTile(tiles: readonly SgmTile[], m: number, n: number, units = SGM_COMPUTE_UNITS): SgmTile {
  if (tiles.length === 0) throw new ShapeError('pickSgmTile: no tiles compiled');
  const count = (t: SgmTile) => {
    const { bm, bn } = sgmTileRows(t);
    return Math.ceil(m / bm) * Math.ceil(n / bn);
  };
  const first = tiles.find((t) => waveFill(count(t), units) >= MIN_WAVE_FILL);
  if (first) return first;
  return tiles.reduce((best, t) => (count(t) > count(best) ? t : best));
}

/** The features the subgroup-matrix kernels need (Gpu.open requests them, among its optional features, wherever offered). */
export const SGM_FEATURES = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'] as const;

/** What the subgroup-matrix kernels need to know of an adapter (a Gpu has it all; tests fake it). */
export interface SgmAdapter {
  readonly features: ReadonlySet<string>;
  readonly subgroupMatrixConfigs: readonly SubgroupMatrixConfig[];
  readonly limits: { readonly maxStorageBuffersPerShaderStage: number };
  /** One line naming the adapter, for messages. */
  describe(): string;
}

/**
 * Why this adapter cannot run a subgroup-matrix kernel binding `storageBuffers` storage buffers
 * (default: the forward matmul's), or undefined when it can: a missing feature, no f16→f32
 * 16×16×16 config, or too few storage buffers per shader stage.
 */
export function sgmUnsupportedReason(adapter: SgmAdapter, storageBuffers = storageBufferCount(matmulSgmForwardSpec)): string | undefined {
  const missing = SGM_FEATURES.filter((f) => !adapter.features.has(f));
  if (missing.length > 0) return `the adapter (${adapter.describe()}) lacks ${missing.join(', ')}`;
  const ok = adapter.subgroupMatrixConfigs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16);
  if (!ok) return `the adapter (${adapter.describe()}) offers no f16→f32 16×16×16 subgroup-matrix config`;
  const allowed = adapter.limits.maxStorageBuffersPerShaderStage;
  if (allowed < storageBuffers) return `the adapter (${adapter.describe()}) allows ${allowed} storage buffers per shader stage; the subgroup-matrix kernels bind up to ${storageBuffers}`;
  return undefined;
}

export const MatmulSgmParams = defineParams('MatmulSgmParams', [
  ['m', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['r', 'u32'],
  ['scale', 'f32'],
  ['offset', 'f32'],
] as const);

export const matmulSgmForwardSpec: KernelSpec<typeof MatmulSgmParams> = {
  file: 'matmul_sgm_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'y', access: 'read_write' },
    { name: 'x', access: 'read' },
    { name: 'row_scale', access: 'read' },
    ...WEIGHT_BINDING_SPECS,
    // the buffers of u and lora_b again, read as vec4 by the LoRA epilogue where r % 4 == 0
    { name: 'u4', access: 'read' },
    { name: 'lora_b4', access: 'read' },
  ],
  params: MatmulSgmParams,
};

export interface MatmulSgmOptions {
  /** Tiles to compile, largest first (default SGM_DEFAULT_TILES). */
  readonly tiles?: readonly SgmTile[];
  /** Weight formats to compile (default all four). */
  readonly formats?: readonly StoredFormat[];
  /**
   * Formats compiled beyond `formats` with the plain epilogue only (overwrite, no LoRA), every
   * tile: the lm_head's bf16 where the projections are NF4 (the loss head's logits, src/model/loss-head.ts).
   */
  readonly plainFormats?: readonly StoredFormat[];
  /** Epilogues to compile (default both: overwrite and accumulate). */
  readonly accumulate?: readonly boolean[];
  /** LoRA epilogues to compile (default both: without and with). */
  readonly lora?: readonly boolean[];
  /** How tiles are staged (default 'unrolled'). */
  readonly staging?: SgmStaging;
  /**
   * With the unrolled staging, issue the next K step's global loads before this step's
   * multiply-accumulates (default SGM_FORWARD_PREFETCH).
   */
  readonly prefetch?: boolean;
}

/**
 * Whether the forward prefetches by default (shaders/matmul_sgm_forward.wgsl PREFETCH): no. With the
 * staging split into loads and vec4 conversions (2026-12-04) the forward ran at the same speed
 * with and without (H200, same call, the r = 32 LoRA epilogue: 4.17 ms a layer without, 4.22 with;
 * bench/results/h200-2026-12-04-forward-staging.md); the prefetch stays as an option, tested on the
 * GPU host.
 */
export const SGM_FORWARD_PREFETCH = false;

/**
 * `Matmul.forward`'s call (y (M, nOut) f32, x (M, k) f32 with k a multiple of 64, w, accumulate,
 * lora) with the row scales of x and a subgroup-matrix tile in place of an f32 one.
 */
export interface MatmulSgmCall extends Omit<MatmulCall, 'tile'> {
  /** (M) f32 powers of two, RowScale's output for x: row m is staged as f16(x[m]·rowScale[m]). */
  readonly rowScale: Tensor;
  /** Force a compiled tile; default pickSgmTile. */
  readonly tile?: SgmTile;
}

export class MatmulSgm {
  private constructor(
    private readonly kernels: ReadonlyMap<string, Kernel<typeof MatmulSgmParams>>,
    readonly tiles: readonly SgmTile[],
    private readonly qmap: Tensor,
    private readonly unused: Tensor,
  ) {}

  /** Compiles every tile × format × epilogue; a DeviceError (with the reason) where subgroup matrices are missing. */
  static async create(gpu: Gpu, options: MatmulSgmOptions = {}): Promise<MatmulSgm> {
    const reason = sgmUnsupportedReason(gpu);
    if (reason) throw new DeviceError(`subgroup-matrix matmul unavailable: ${reason}; use the f32 Matmul instead`);
    const tiles = options.tiles ?? SGM_DEFAULT_TILES;
    const kernels = new Map<string, Kernel<typeof MatmulSgmParams>>();
    for (const tile of tiles) {
      const staging = options.staging ?? 'unrolled';
      const problems = sgmTileProblems(tile, gpu.limits.maxComputeWorkgroupStorageSize, gpu.limits.maxComputeInvocationsPerWorkgroup, staging);
      if (problems.length > 0) throw new DeviceLimitError(`subgroup-matrix tile ${sgmTileName(tile)}: ${problems.join('; ')}`);
      const formats = options.formats ?? STORED_FORMATS;
      const variants = [
        ...formats.flatMap((format) => (options.accumulate ?? [false, true]).flatMap((accumulate) => (options.lora ?? [false, true]).map((lora) => ({ format, accumulate, lora })))),
        ...(options.plainFormats ?? []).filter((f) => !formats.includes(f)).map((format) => ({ format, accumulate: false, lora: false })),
      ];
      for (const { format, accumulate, lora } of variants) {
        const constants = {
          SG_M: tile.sgM,
          SG_N: tile.sgN,
          FM: tile.fm,
          FN: tile.fn,
          BK: tile.bk,
          FORMAT: FORMAT_CODE[format],
          ACCUMULATE: accumulate,
          LORA: lora,
          UNROLL: staging === 'unrolled',
          PREFETCH: staging === 'unrolled' && (options.prefetch ?? SGM_FORWARD_PREFETCH),
        };
        kernels.set(variantKey(format, accumulate, lora, tile), await Kernel.create(gpu, matmulSgmForwardSpec, constants));
      }
    }
    return new MatmulSgm(kernels, tiles, dynamicMapTensor(gpu), gpu.tensor('matmul-sgm unused binding', [4], 'f32'));
  }

  pickTile(m: number, n: number): SgmTile {
    return pickSgmTile(this.tiles, m, n);
  }

  /** Records Y (M, nOut) [+]= X · dequant(W)ᵀ [+ scale · U · Bᵀ], X staged as f16(X[m]·rowScale[m]). */
  forward(label: string, call: MatmulSgmCall): Dispatch {
    const { y, x, w, lora, rowScale } = call;
    const accumulate = call.accumulate ?? false;
    const where = `${label} (matmul-sgm ${w.nOut}×${w.k} ${w.format})`;
    const stored = checkWeight(where, w);
    if (w.k % NF4_BLOCK !== 0) throw new ShapeError(`${where}: K = ${w.k} must be a multiple of ${NF4_BLOCK} for the subgroup-matrix matmul`);
    const xk = x.shape[x.shape.length - 1];
    const yn = y.shape[y.shape.length - 1];
    if (xk !== w.k || yn !== w.nOut || x.dtype !== 'f32' || y.dtype !== 'f32') {
      throw new ShapeError(`${where}: x [${x.shape.join(', ')}] ${x.dtype} and y [${y.shape.join(', ')}] ${y.dtype} must be f32 (…, ${w.k}) and (…, ${w.nOut})`);
    }
    const m = numel(x.shape) / w.k;
    if (numel(y.shape) / w.nOut !== m) throw new ShapeError(`${where}: x has ${m} rows but y has ${numel(y.shape) / w.nOut}`);
    expectTensor(`${where} rowScale`, rowScale, [m], 'f32');
    const r = checkLoraEpilogue(where, lora, m, w.nOut);
    const tile = call.tile ?? this.pickTile(m, w.nOut);
    const kernel = this.kernels.get(variantKey(stored, accumulate, lora !== undefined, tile));
    if (!kernel) {
      throw new ShapeError(
        `${where}: variant ${stored}${accumulate ? '+accumulate' : ''}${lora ? '+lora' : ''} with tile ${sgmTileName(tile)} was not compiled; pass it to MatmulSgm.create`,
      );
    }
    const { bm, bn } = sgmTileRows(tile);
    return kernel.bind(
      where,
      { y, x, row_scale: rowScale, ...weightBindings(stored, w, lora, this.qmap, this.unused), u4: this.vec4View(lora?.u), lora_b4: this.vec4View(lora?.b) },
      { m, n: w.nOut, k: w.k, r, scale: lora?.scale ?? 0, offset: w.doubleQuant?.offset ?? 0 },
      [Math.ceil(w.nOut / bn), Math.ceil(m / bm)],
    );
  }

  /**
   * `t` for a vec4 binding of the LoRA epilogue: itself (the shader reads it as vec4 only where
   * r % 4 == 0, and then t holds whole vec4s); the 16-byte stand-in where there is no LoRA or t is
   * under one vec4 (a binding must hold one element).
   */
  private vec4View(t: Tensor | undefined): Tensor {
    return t !== undefined && t.byteSize >= 16 ? t : this.unused;
  }
}

function variantKey(format: StoredFormat, accumulate: boolean, lora: boolean, tile: SgmTile): string {
  return `${format}|${accumulate ? 'acc' : 'set'}|${lora ? 'lora' : 'plain'}|${sgmTileName(tile)}`;
}

/** A number rounded to the nearest f16 (ties to even; overflow to ±Infinity; subnormals kept). */
export function roundToF16(v: number): number {
  if (!Number.isFinite(v) || v === 0) return v;
  const a = Math.abs(v);
  if (a >= 65520) return Math.sign(v) * Infinity; // 65504 + half an ulp (16) rounds up past the largest f16
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  const ulp = 2 ** (e - 10);
  // Math.log2 may be off by one near powers of two: the quotient then stays within [512, 2048)
  const q = a / ulp;
  const r = Math.round(q);
  const tie = Math.abs(q - Math.trunc(q) - 0.5) < 1e-12 && r % 2 === 1 ? r - 1 : r;
  return Math.sign(v) * tie * ulp;
}

/**
 * float64 reference of the subgroup-matrix matmul: y (m, n) = x · wᵀ (w dense (n, k)) and, per
 * output, Σ_k |x_k·w_k|, the scale of its f16 rounding error (see SGM_REL_BOUND).
 */
export function matmulSgmRef(x: ArrayLike<number>, w: ArrayLike<number>, m: number, n: number, k: number): { y: Float64Array; abs: Float64Array } {
  const y = new Float64Array(m * n);
  const abs = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      let a = 0;
      for (let p = 0; p < k; p++) {
        const t = x[i * k + p] * w[j * k + p];
        s += t;
        a += Math.abs(t);
      }
      y[i * n + j] = s;
      abs[i * n + j] = a;
    }
  }
  return { y, abs };
}

/**
 * Bound on |y_gpu − y_ref| / Σ_k |x_k·w_k| for the subgroup-matrix matmul: x rounds to f16
 * (relative 2⁻¹¹); an NF4 weight is the f16 product of the f16-rounded codebook value and the
 * f16-rounded block scale (three roundings, 3·2⁻¹¹; bf16 and f32 weights one rounding, 2⁻¹¹);
 * every product is exact in f32 and the f32 accumulation over K adds about K·2⁻²⁴ at worst.
 * Relative roundings hold while the f16 values stay normal (|v| ≥ 2⁻¹⁴ ≈ 6.1e-5): an NF4 code
 * (≥ 0.08 in magnitude, or 0) times a block scale above 8e-4 does; a smaller bf16/f32 weight
 * element errs by at most 2⁻²⁵ absolute, negligible against Σ|x·w| at the sizes tested.
 * With X's rows scaled by RowScale (largest |x| in [2^13, 2^14]) an element of X stays normal in
 * f16 down to 2^-27 of its row's largest; smaller ones err by at most 2^-25 / rowScale absolute
 * (f16 subnormals), negligible against the row's Σ|x·w| unless almost all of a row is that small.
 */
export function sgmRelBound(format: StoredFormat, k: number): number {
  const weight = format === 'nf4' || format === 'nf4dq' ? 3 : 1;
  return (1 + weight) * 2 ** -11 * 1.01 + k * 2 ** -24;
}
