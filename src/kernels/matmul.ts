import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, numel, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';
import { dynamicMapTensor, expectDoubleQuant, NF4_BLOCK, type DoubleQuant } from './nf4.js';
import { checkTileLimits, tileName, tileWarpN, type MatmulTile } from './matmul-tile.js';

export { tileName, type MatmulTile };

/**
 * Dequant-matmul: Y (M, Nout) f32 = X (M, K) f32 · dequant(W)ᵀ, W the PyTorch (Nout, K) weight in
 * f32, bf16 or NF4, with two epilogues: ACCUMULATE (Y += …, for the residual add of o_proj and
 * down_proj) and LORA (Y += scale · U · Bᵀ, U = X · Aᵀ (M, R) computed before, B (Nout, R)).
 *
 * Shape of the design (shaders/matmul_forward.wgsl has the tiling): one pipeline per variant —
 * weight format × accumulate × lora × tile, a finite key — all compiled in `Matmul.create`, so
 * `forward` only checks shapes, picks a tile and binds. The f32 path runs 18–27 TFLOP/s on an H100
 * at Qwen3-4B's shapes (bench/matmul.ts). A tensor-core path would be one more part of that key:
 * `create` would also compile shaders/matmul_forward_subgroup_matrix.wgsl (same bindings and
 * params; X and dequantised W staged in workgroup memory as f16, 16×16×16 f16→f32 fragments, f32
 * accumulation and the same epilogues) when `gpu.has('chromium-experimental-subgroup-matrix')` and
 * `gpu.subgroupMatrixConfigs` offers f16→f32 16×16×16, and `forward` would choose it for calls that
 * accept f16 inputs (a per-call precision setting; the fixtures allow about 1e-2 relative on f16
 * matrix paths against 1e-4 for f32). Callers keep calling `forward` with the same arguments.
 */
export type WeightFormat = 'f32' | 'bf16' | 'nf4';

/** A linear layer's weight as the GPU holds it (PyTorch layout (nOut, k): y = x · Wᵀ). */
export interface LinearWeight {
  readonly format: WeightFormat;
  readonly nOut: number;
  readonly k: number;
  /** (nOut, k): f32 | bf16x2 | nf4x8. */
  readonly data: Tensor;
  /** nf4 without double quantisation: (nOut·k / 64) f32 block scales. */
  readonly absmax?: Tensor;
  /** nf4 with double-quantised block scales (bnb_4bit_use_double_quant). */
  readonly doubleQuant?: DoubleQuant;
}

/** LoRA epilogue: Y += scale · U · Bᵀ. */
export interface LoraEpilogue {
  /** (M, R) f32, the LoRA down-projection X · Aᵀ. */
  readonly u: Tensor;
  /** (nOut, R) f32, PEFT's lora_B weight. */
  readonly b: Tensor;
  /** lora_alpha / r (or / √r with rsLoRA). */
  readonly scale: number;
}

/** The largest LoRA rank the LORA epilogue takes. */
export const MAX_LORA_RANK = 128;

export const MATMUL_TILES = {
  /**
   * 128 × 128 outputs, 8 × 8 per thread, 8-wide reduction steps, 256 threads: 17 KiB of workgroup
   * memory (fits lavapipe's 32 KiB). 23–27 TFLOP/s on an H100 at Qwen3-4B's larger shapes.
   */
  large: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  /**
   * 64 × 128, 8 × 8 per thread, 128 threads: twice the workgroups of `large` in smaller units,
   * better where `large` leaves the GPU's SMs unevenly loaded (k/v_proj, down_proj at 2048 tokens).
   */
  medium: { bm: 64, bn: 128, bk: 8, tm: 8, tn: 8 },
  /** 64 × 64 outputs, 4 × 4 per thread: the most workgroups, for small or narrow outputs. */
  small: { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
} as const satisfies Record<string, MatmulTile>;

/**
 * Parses "128x128x16" (per-thread 8×8 when the tile is ≥ 128 wide, else 4×4), "128x64x16/8x4" or
 * "128x128x8/8x8/8" (the last number: threads along N per 32 invocations).
 */
export function parseTile(s: string): MatmulTile {
  const m = /^(\d+)x(\d+)x(\d+)(?:\/(\d+)x(\d+)(?:\/(\d+))?)?$/.exec(s.trim());
  if (!m) throw new ShapeError(`matmul tile "${s}": expected BMxBNxBK[/TMxTN[/WN]], e.g. 128x128x8, 128x64x16/8x4 or 128x128x8/8x8/8`);
  const [bm, bn, bk] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const tile = { bm, bn, bk, tm: m[4] ? Number(m[4]) : bm >= 128 ? 8 : 4, tn: m[5] ? Number(m[5]) : bn >= 128 ? 8 : 4 };
  return m[6] ? { ...tile, wn: Number(m[6]) } : tile;
}

/** Bytes of workgroup memory a tile needs (two buffers of each operand, plus the NF4 and dynamic-map tables). */
export function tileWorkgroupBytes(t: MatmulTile): number {
  return 2 * t.bk * (t.bm + t.bn) * 4 + (16 + 256) * 4;
}

function checkTile(gpu: Gpu, t: MatmulTile): void {
  const threads = (t.bm / t.tm) * (t.bn / t.tn);
  const problems: string[] = [];
  for (const [name, rows] of [['bm', t.bm], ['bn', t.bn]] as const) {
    // each thread loads 4 rows × (rows·bk / (4·threads)) reduction indices of that operand per step
    const perThread = (rows * t.bk) / (4 * threads);
    if (![1, 2, 4].includes(perThread)) problems.push(`${name}·bk / (4·threads) = ${perThread} must be 1, 2 or 4`);
  }
  checkTileLimits(gpu, `matmul tile ${tileName(t)}`, t, problems, tileWorkgroupBytes(t));
}

/**
 * The tile for an (m × n) output, from `tiles` (largest first, as compiled). Where the numbers
 * come from:
 *  - bench/results/h100-2026-11-25-matmul.json and -matmul-nosgm.json (bench/matmul.ts, M = 2048):
 *    with bf16 weights the 128 × 128 tile wins at every Qwen3-4B projection and at lm_head
 *    (gate/up 17.7 vs 15.4 TFLOP/s); with NF4 weights it loses where the output is wide or the
 *    grid is small: gate/up (N = 9728) 11.6 vs 18.3, down_proj 14.2 vs 17.3, k/v a tie, and it
 *    wins only at q_proj (N = 4096: 17.4 vs 13.4).
 *  - issue 10 reported NF4 gate/up (M = 2048, K = 2560, N = 9728) on the H200 at 11.2 TFLOP/s with
 *    128 × 128 and 20.4 with 64 × 128 (wall clock, single short runs); re-measured on the H200 on
 *    2026-12-02 with timestamp queries after a warm-up, four times in one call (with and without
 *    the subgroup-matrix feature requested: bench/results/h200-2026-12-02-matmul-f32-tiles-{a,b}.json):
 *    128 × 128 23.1, 64 × 128 20.4, 64 × 64 18.5 at gate/up every time; q_proj 24.0 / 19.9;
 *    k/v 17.8 / 18.2; down_proj 18.6 / 18.9 (the two within 2 %). The H100's NF4 numbers of
 *    2026-11-25 (gate/up 11.6 vs 18.3) were the same kind of single run; the repeated ones rule.
 * (bench/results/h200-*-matmul-sgm*.json are the subgroup-matrix kernel's tiles, not these.)
 * The rule: the first (largest) tile once it makes about three workgroups per SM (≥ 400); below
 * that the second while it still makes ≥ 200; else whichever makes the most workgroups (on a tie
 * the smaller: less work past the edges). The stored format does not enter.
 * tests/kernels/matmul-tile-choice.test.ts checks the choice at each projection shape.
 */
export function pickMatmulTile(tiles: readonly MatmulTile[], m: number, n: number): MatmulTile {
  const count = (t: MatmulTile) => Math.ceil(m / t.bm) * Math.ceil(n / t.bn);
  const [first, second] = tiles;
  if (!first) throw new ShapeError('pickMatmulTile: no tiles compiled');
  if (count(first) >= 400) return first;
  if (second && count(second) >= 200) return second;
  const better = (t: MatmulTile, best: MatmulTile) => count(t) > count(best) || (count(t) === count(best) && t.bm * t.bn < best.bm * best.bn);
  return tiles.reduce((best, t) => (better(t, best) ? t : best));
}

export const MatmulParams = defineParams('MatmulParams', [
  ['m', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['r', 'u32'],
  ['scale', 'f32'],
  ['offset', 'f32'],
] as const);

/** The weight-side bindings of the dequant-matmul shaders (matmul_forward, matvec_forward); see weightBindings. */
export const WEIGHT_BINDING_SPECS = [
  { name: 'w', access: 'read' },
  { name: 'absmax', access: 'read' },
  { name: 'absmax2', access: 'read' },
  { name: 'qmap', access: 'read' },
  { name: 'u', access: 'read' },
  { name: 'lora_b', access: 'read' },
] as const;

export const matmulForwardSpec: KernelSpec<typeof MatmulParams> = {
  file: 'matmul_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'y', access: 'read_write' },
    { name: 'x', access: 'read' },
    ...WEIGHT_BINDING_SPECS,
  ],
  params: MatmulParams,
};

/** The shader's FORMAT constant: how W and its scales are stored. */
export type StoredFormat = 'f32' | 'bf16' | 'nf4' | 'nf4dq';
/** The shaders' FORMAT override constant for each stored weight format. */
export const FORMAT_CODE: Readonly<Record<StoredFormat, number>> = { f32: 0, bf16: 1, nf4: 2, nf4dq: 3 };
export const STORED_FORMATS: readonly StoredFormat[] = ['f32', 'bf16', 'nf4', 'nf4dq'];

export interface MatmulOptions {
  /** Tiles to compile, largest first (default: `large`, `medium`, `small`). */
  readonly tiles?: readonly MatmulTile[];
  /** Weight formats to compile (default: all four). */
  readonly formats?: readonly StoredFormat[];
}

export interface MatmulCall {
  /** (M, nOut) f32 output (any leading shape with M rows); read too when `accumulate`. */
  readonly y: Tensor;
  /** (M, k) f32 input. */
  readonly x: Tensor;
  readonly w: LinearWeight;
  /** Add into y instead of overwriting it. */
  readonly accumulate?: boolean;
  readonly lora?: LoraEpilogue;
  /** Force a tile (it must be one of those compiled); default: `pickTile`. */
  readonly tile?: MatmulTile;
}

export class Matmul {
  private constructor(
    private readonly gpu: Gpu,
    private readonly kernels: ReadonlyMap<string, Kernel<typeof MatmulParams>>,
    /** Tiles compiled, the first the preferred one for large outputs. */
    readonly tiles: readonly MatmulTile[],
    /** (256) f32 dynamic map for double-quantised scales; (4) f32 stand-in for unused bindings. */
    private readonly qmap: Tensor,
    private readonly unused: Tensor,
  ) {}

  static async create(gpu: Gpu, options: MatmulOptions = {}): Promise<Matmul> {
    const tiles = options.tiles ?? [MATMUL_TILES.large, MATMUL_TILES.medium, MATMUL_TILES.small];
    const formats = options.formats ?? STORED_FORMATS;
    const kernels = new Map<string, Kernel<typeof MatmulParams>>();
    for (const tile of tiles) {
      checkTile(gpu, tile);
      for (const format of formats) {
        for (const accumulate of [false, true]) {
          for (const lora of [false, true]) {
            const constants = {
              WG_M: tile.bm / tile.tm,
              WG_N: tile.bn / tile.tn,
              TM: tile.tm,
              TN: tile.tn,
              BK: tile.bk,
              WARP_N: tileWarpN(tile),
              FORMAT: FORMAT_CODE[format],
              ACCUMULATE: accumulate,
              LORA: lora,
            };
            kernels.set(variantKey(format, accumulate, lora, tile), await Kernel.create(gpu, matmulForwardSpec, constants));
          }
        }
      }
    }
    return new Matmul(gpu, kernels, tiles, dynamicMapTensor(gpu), gpu.tensor('matmul unused binding', [4], 'f32'));
  }

  /** The compiled tile for an (m × n) output (see `pickMatmulTile`). */
  pickTile(m: number, n: number): MatmulTile {
    return pickMatmulTile(this.tiles, m, n);
  }

  /** Records Y (M, nOut) [+]= X · dequant(W)ᵀ [+ scale · U · Bᵀ]. */
  forward(label: string, call: MatmulCall): Dispatch {
    const { y, x, w, lora } = call;
    const accumulate = call.accumulate ?? false;
    const where = `${label} (matmul ${w.nOut}×${w.k} ${w.format})`;
    const m = checkActivations(where, x, y, w);
    const stored = checkWeight(where, w);
    const r = checkLoraEpilogue(where, lora, m, w.nOut);
    const tile = call.tile ?? this.pickTile(m, w.nOut);
    const kernel = this.kernels.get(variantKey(stored, accumulate, lora !== undefined, tile));
    if (!kernel) {
      throw new ShapeError(
        `${where}: variant ${stored}${accumulate ? '+accumulate' : ''}${lora ? '+lora' : ''} with tile ${tileName(tile)} was not compiled; ` +
          'pass its format and tile to Matmul.create',
      );
    }
    const scales = stored === 'nf4dq' ? w.doubleQuant! : undefined;
    return kernel.bind(
      where,
      { y, x, ...weightBindings(stored, w, lora, this.qmap, this.unused) },
      { m, n: w.nOut, k: w.k, r, scale: lora?.scale ?? 0, offset: scales?.offset ?? 0 },
      [Math.ceil(m / tile.bm), Math.ceil(w.nOut / tile.bn)],
    );
  }
}

/**
 * The weight-side bindings of a dequant-matmul shader (matmul_forward and matvec_forward share
 * them): the packed weight, its NF4 absmax (plain) or double-quantised scales, the dynamic map,
 * and the LoRA epilogue's U and B; `unused` fills the slots a format or variant does not read.
 */
export function weightBindings(stored: StoredFormat, w: LinearWeight, lora: LoraEpilogue | undefined, qmap: Tensor, unused: Tensor): Record<string, Tensor> {
  const scales = stored === 'nf4dq' ? w.doubleQuant! : undefined;
  return {
    w: w.data,
    absmax: stored === 'nf4' ? w.absmax! : scales ? scales.codes : unused,
    absmax2: scales ? scales.absmax2 : unused,
    qmap: scales ? qmap : unused,
    u: lora ? lora.u : unused,
    lora_b: lora ? lora.b : unused,
  };
}

function variantKey(format: StoredFormat, accumulate: boolean, lora: boolean, tile: MatmulTile): string {
  return `${format}|${accumulate ? 'acc' : 'set'}|${lora ? 'lora' : 'plain'}|${tileName(tile)}`;
}

/** M from x (…, k) and y (…, nOut), which must have the same rows. */
function checkActivations(where: string, x: Tensor, y: Tensor, w: LinearWeight): number {
  const xk = x.shape[x.shape.length - 1];
  const yn = y.shape[y.shape.length - 1];
  if (xk !== w.k || yn !== w.nOut || x.dtype !== 'f32' || y.dtype !== 'f32') {
    throw new ShapeError(
      `${where}: x [${x.shape.join(', ')}] ${x.dtype} and y [${y.shape.join(', ')}] ${y.dtype} must be f32 (…, ${w.k}) and (…, ${w.nOut})`,
    );
  }
  const m = numel(x.shape) / w.k;
  if (numel(y.shape) / w.nOut !== m) throw new ShapeError(`${where}: x has ${m} rows but y has ${numel(y.shape) / w.nOut}`);
  return m;
}

/** Checks a LinearWeight's tensors and returns its stored format (shared with the backward kernels). */
/** Checks a LoRA epilogue (U (m, r) f32, B (nOut, r) f32, finite scale) and returns its rank r, 0 without one. */
export function checkLoraEpilogue(where: string, lora: LoraEpilogue | undefined, m: number, nOut: number): number {
  if (!lora) return 0;
  const r = lora.u.shape[lora.u.shape.length - 1] ?? 0;
  if (r < 1 || r > MAX_LORA_RANK) throw new ShapeError(`${where}: LoRA rank ${r} outside 1..${MAX_LORA_RANK}`);
  expectTensor(where, lora.u, [m, r], 'f32');
  expectTensor(where, lora.b, [nOut, r], 'f32');
  if (!Number.isFinite(lora.scale)) throw new ShapeError(`${where}: LoRA scale ${lora.scale} is not finite`);
  return r;
}

export function checkWeight(where: string, w: LinearWeight): StoredFormat {
  const shape = [w.nOut, w.k];
  if (w.format === 'f32' || w.format === 'bf16') {
    expectTensor(where, w.data, shape, w.format === 'f32' ? 'f32' : 'bf16x2');
    return w.format;
  }
  expectTensor(where, w.data, shape, 'nf4x8');
  const count = w.nOut * w.k;
  if (count % NF4_BLOCK !== 0) throw new ShapeError(`${where}: NF4 weight of ${count} elements is not a multiple of ${NF4_BLOCK}`);
  if (w.doubleQuant) {
    expectDoubleQuant(where, w.doubleQuant, count / NF4_BLOCK);
    return 'nf4dq';
  }
  if (!w.absmax) throw new ShapeError(`${where}: NF4 weight needs absmax or doubleQuant`);
  expectTensor(where, w.absmax, [count / NF4_BLOCK], 'f32');
  return 'nf4';
}

/** float64 reference: y (m, n) = x (m, k) · wᵀ with w the dense (n, k) weight. */
export function matmulRef(x: ArrayLike<number>, w: ArrayLike<number>, m: number, n: number, k: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += x[i * k + p] * w[j * k + p];
      y[i * n + j] = s;
    }
  }
  return y;
}

/** float64 reference of the LoRA epilogue, in place: y (m, n) += scale · u (m, r) · bᵀ (b (n, r)). */
export function loraEpilogueRef(y: Float64Array, u: ArrayLike<number>, b: ArrayLike<number>, m: number, n: number, r: number, scale: number): Float64Array {
  const ub = matmulRef(u, b, m, n, r);
  for (let i = 0; i < y.length; i++) y[i] += scale * ub[i];
  return y;
}

/** float64 reference of the accumulate epilogue, in place: y += y0. */
export function accumulateRef(y: Float64Array, y0: ArrayLike<number>): Float64Array {
  for (let i = 0; i < y.length; i++) y[i] += y0[i];
  return y;
}
