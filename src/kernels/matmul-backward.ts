import { DeviceLimitError, ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, storageBufferCount, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, numel, tensorView, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';
import { dynamicMapTensor } from './nf4.js';
import { checkWeight, FORMAT_CODE, MAX_LORA_RANK, STORED_FORMATS, type LinearWeight, type StoredFormat } from './matmul.js';
import { dropoutConstants } from './dropout.js';
import { checkTileLimits, tileName, tileWarpN, type MatmulTile } from './matmul-tile.js';
import { foldGrid } from './grid.js';

export { loraLinearBackwardRef, loraLinearForwardRef, matmulInputGradLoraRef, matmulInputGradRef, matmulWeightGradRef, type LoraDims } from './matmul-backward-ref.js';

/**
 * Backward of the dequant-matmul Y (M, Nout) = X (M, K) · Wᵀ:
 *   1. dX (M, K)    (+)= scale · dY (M, Nout) · W (Nout, K)   — `input`, W read in place from the
 *      forward's packed f32 / bf16 / NF4 data (no transposed or dequantised copy);
 *   2. dW (Nout, K) (+)= scale · dYᵀ (Nout, M) · X (M, K)     — `weightGrad`, a reduction over the
 *      M tokens (used for the LoRA matrices: the frozen base has no gradient).
 * For y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with U = x·Aᵀ saved, the LoRA backward is, in order:
 *   dB += s·dYᵀ·U   (weightGrad: dw = dB (Nout, R), dy, x = U)
 *   dU  = s·dY·B    (inputSplit: dx = dU (M, R), w = { format 'f32', nOut: Nout, k: R, data: B },
 *                    scale s; one pass of `input` gives only M/128 workgroups at R = 32)
 *   dA += dUᵀ·x     (weightGrad: dw = dA (R, K), dy = dU, x)
 *   dX (+)= dY·W + dU·A  (one `input` pass with t.lora = { du, a }: the R reduction steps run
 *                         before the N steps; with LoRA dropout the R part is masked first).
 *
 * Long reductions run split into S slices: one dispatch writes each slice's partial sum into a
 * (S, rows, cols) f32 scratch buffer, a second adds the slices in a fixed order into the output, so
 * results are bit-for-bit repeatable. `weightGrad` and `inputSplit` plan S from the shape
 * (`planBackward`); `input` is always one dispatch. All split calls share one scratch buffer of
 * `maxScratchBytes` (64 MiB by default), allocated when the first one is bound: record each
 * returned dispatch list consecutively, as returned (never interleave two calls' lists).
 */
export const MatmulInputGradParams = defineParams('MatmulInputGradParams', [
  ['m', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['slice', 'u32'],
  ['scale', 'f32'],
  ['offset', 'f32'],
  ['r', 'u32'],
  ['threshold', 'u32'],
  ['drop_scale', 'f32'],
  ['salt', 'u32'],
] as const);

export const matmulInputGradSpec: KernelSpec<typeof MatmulInputGradParams> = {
  file: 'matmul_backward_input.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dx', access: 'read_write' },
    { name: 'dy', access: 'read' },
    { name: 'w', access: 'read' },
    { name: 'absmax', access: 'read' },
    { name: 'absmax2', access: 'read' },
    { name: 'qmap', access: 'read' },
    { name: 'du', access: 'read' },
    { name: 'lora_a', access: 'read' },
    { name: 'seed', access: 'read' },
  ],
  params: MatmulInputGradParams,
};

export const MatmulWeightGradParams = defineParams('MatmulWeightGradParams', [
  ['m', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['slice', 'u32'],
  ['scale', 'f32'],
] as const);

export const matmulWeightGradSpec: KernelSpec<typeof MatmulWeightGradParams> = {
  file: 'matmul_weight_grad.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dw', access: 'read_write' },
    { name: 'dy', access: 'read' },
    { name: 'x', access: 'read' },
  ],
  params: MatmulWeightGradParams,
};

export const MatmulSliceSumParams = defineParams('MatmulSliceSumParams', [
  ['count', 'u32'],
  ['slices', 'u32'],
  ['scale', 'f32'],
  ['accumulate', 'u32'],
] as const);

export const matmulSliceSumSpec: KernelSpec<typeof MatmulSliceSumParams> = {
  file: 'matmul_backward_reduce.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'out', access: 'read_write' },
    { name: 'partial', access: 'read' },
  ],
  params: MatmulSliceSumParams,
};

const SLICE_SUM_WORKGROUP = 256;

/**
 * Output tiles (bm rows × bn columns of the output, bk reduction steps, tm × tn per thread; the
 * MatmulTile of the forward with the same meaning). All use 256 threads.
 */
export const BACKWARD_TILES = {
  /** 128 × 128, 8 × 8 per thread, 8-wide steps: 16 KiB of workgroup memory. Large outputs. */
  large: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  /** 64 × 64, 4 × 4 per thread: 4× the workgroups of `large` for mid-sized outputs. */
  small: { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  /** 128 × 32: outputs 32 columns wide, dU (M, R) and dB (Nout, R) at R = 32. */
  tall: { bm: 128, bn: 32, bk: 16, tm: 4, tn: 4 },
  /** 32 × 128: outputs 32 rows high, dA (R, K) at R = 32 (weightGrad only). */
  wide: { bm: 32, bn: 128, bk: 16, tm: 4, tn: 4 },
} as const satisfies Record<string, MatmulTile>;

export const INPUT_GRAD_TILES: readonly MatmulTile[] = [BACKWARD_TILES.large, BACKWARD_TILES.small, BACKWARD_TILES.tall];
export const WEIGHT_GRAD_TILES: readonly MatmulTile[] = [BACKWARD_TILES.large, BACKWARD_TILES.small, BACKWARD_TILES.tall, BACKWARD_TILES.wide];

function tileConstants(t: MatmulTile): Record<string, number> {
  return { WG_I: t.bm / t.tm, WG_J: t.bn / t.tn, TI: t.tm, TJ: t.tn, BL: t.bk, WARP_J: tileWarpN(t) };
}

/** Workgroup bytes of a tile: both operand tiles, double buffered (plus the NF4 table for `input`). */
export function backwardTileBytes(t: MatmulTile): number {
  return 2 * t.bk * (t.bm + t.bn) * 4 + 16 * 4;
}

function checkTile(gpu: Gpu, t: MatmulTile, kind: 'input' | 'weightGrad'): void {
  const threads = (t.bm / t.tm) * (t.bn / t.tn);
  const problems: string[] = [];
  // slots (4 floats) each thread loads per step: at most 4 of each operand
  const perThread = (rows: number) => Math.ceil((rows * t.bk) / 4 / threads);
  if (perThread(t.bn) > 4 || perThread(t.bm) > 4) problems.push('bk·bm and bk·bn must be at most 16·threads');
  if (kind === 'input') {
    // the dY tile: one load of 4 rows × KA reduction indices per thread
    const ka = (t.bm * t.bk) / (4 * threads);
    if (![1, 2, 4].includes(ka)) problems.push(`bm·bk / (4·threads) = ${ka} must be 1, 2 or 4`);
  }
  checkTileLimits(gpu, `matmul backward (${kind}) tile ${tileName(t)}`, t, problems, backwardTileBytes(t));
}

/** How one backward matmul runs: its tile and the split of its reduction. */
export interface BackwardPlan {
  readonly tile: MatmulTile;
  /** Slices of the reduction; 1: one dispatch straight into the output. */
  readonly slices: number;
  /** Reduction indices per slice (a multiple of tile.bk; the whole reduction when slices = 1). */
  readonly slice: number;
  /** Bytes of the (slices, rows, cols) f32 scratch, 0 when slices = 1. */
  readonly scratchBytes: number;
  /** The cost model's estimate in seconds (for comparing plans, not a measurement). */
  readonly estimate: number;
}

export interface PlanOptions {
  /** May the reduction be split (false: one dispatch, slices = 1). */
  readonly split: boolean;
  /** Fewest reduction indices per slice (default 256). */
  readonly minSlice?: number;
  /** Largest scratch buffer allowed (default: no limit). */
  readonly maxScratchBytes?: number;
  /** Force this many slices (clamped to what the reduction and maxScratchBytes allow). */
  readonly slices?: number;
  /** Force this tile. */
  readonly tile?: MatmulTile;
}

/**
 * A rough H100 model, only to rank plans. 132 SMs each run two 256-thread workgroups at full speed
 * (the main pass then at 20 TFLOP/s with 8 × 8 per-thread tiles, 0.77 of that with 4 × 4), and a
 * lone workgroup at 2/3 of it (the forward's bench: 128 workgroups of 128 × 128 ran at 0.67 of the
 * rate of 512); so the busiest SM, with c = ceil(G / 132) of the G workgroups, takes
 * 2·floor(c / 2) + 1.5·(c mod 2) workgroup times. Operand reads at 2.5 TB/s bound it from below; a
 * split adds the slice sum (S + 2 floats per output at 2.5 TB/s) and 5 µs for the extra dispatch.
 * Splits are tried at the slice count giving about 528 workgroups (four per SM) and at 2, 4, 8 and
 * 16 slices, and kept when the model prefers them.
 */
const MODEL = { flops: 20e12, smallTileRate: 0.77, sms: 132, loneRate: 2 / 3, bandwidth: 2.5e12, targetWorkgroups: 528, dispatch: 5e-6 } as const;

/**
 * Tile and reduction split for an output of rows × cols summed over `reduction` terms, chosen among
 * `tiles` by the model above (the first tile wins ties).
 */
export function planBackward(rows: number, cols: number, reduction: number, tiles: readonly MatmulTile[], options: PlanOptions): BackwardPlan {
  const minSlice = options.minSlice ?? 256;
  const maxScratch = options.maxScratchBytes ?? Infinity;
  const scratchSlices = Math.floor(maxScratch / (rows * cols * 4));
  let best: BackwardPlan | undefined;
  for (const tile of options.tile ? [options.tile] : tiles) {
    const groups = Math.ceil(rows / tile.bm) * Math.ceil(cols / tile.bn);
    let candidates = [1];
    if (options.split && options.slices !== undefined) {
      candidates = [Math.min(options.slices, Math.ceil(reduction / tile.bk), scratchSlices)];
    } else if (options.split) {
      // about 528 workgroups, and powers of two up to 16 slices, as far as minSlice and the scratch allow
      const most = Math.min(Math.floor(reduction / minSlice), scratchSlices);
      candidates.push(Math.min(Math.ceil(MODEL.targetWorkgroups / groups), most));
      for (let s = 2; s <= Math.min(16, most); s *= 2) candidates.push(s);
    }
    for (const wanted of candidates) {
      const plan = planSlices(rows, cols, reduction, tile, Math.max(1, wanted));
      if (!best || plan.estimate < best.estimate) best = plan;
    }
  }
  if (!best) throw new ShapeError('planBackward: no tiles to choose from');
  return best;
}

/** A plan of `tile` with the reduction cut into about `wanted` slices of whole bk steps. */
function planSlices(rows: number, cols: number, reduction: number, tile: MatmulTile, wanted: number): BackwardPlan {
  let slice = Math.ceil(Math.ceil(reduction / wanted) / tile.bk) * tile.bk;
  const slices = Math.max(1, Math.ceil(reduction / slice));
  if (slices === 1) slice = Math.max(reduction, 1);
  const rowTiles = Math.ceil(rows / tile.bm);
  const colTiles = Math.ceil(cols / tile.bn);
  const groups = rowTiles * colTiles * slices;
  const busiest = Math.ceil(groups / MODEL.sms);
  const turns = 2 * Math.floor(busiest / 2) + (busiest % 2) / MODEL.loneRate;
  const rate = tile.tm * tile.tn >= 64 ? 1 : MODEL.smallTileRate;
  // one workgroup's work at an SM's full rate, times the busiest SM's turns
  const perGroup = (2 * tile.bm * tile.bn * Math.min(slice, reduction)) / ((MODEL.flops * rate) / MODEL.sms);
  const compute = perGroup * turns;
  const reads = (4 * reduction * (rows * colTiles + cols * rowTiles)) / MODEL.bandwidth;
  const sum = slices > 1 ? (4 * (slices + 2) * rows * cols) / MODEL.bandwidth + MODEL.dispatch : 0;
  return { tile, slices, slice, scratchBytes: slices > 1 ? slices * rows * cols * 4 : 0, estimate: Math.max(compute, reads) + sum };
}

export interface MatmulBackwardOptions {
  /** Tiles compiled for `input` / `inputSplit` (default INPUT_GRAD_TILES). */
  readonly inputTiles?: readonly MatmulTile[];
  /** Tiles compiled for `weightGrad` (default WEIGHT_GRAD_TILES). */
  readonly weightGradTiles?: readonly MatmulTile[];
  /** Weight formats compiled for `input` (default: all four). */
  readonly formats?: readonly StoredFormat[];
  /**
   * Largest scratch buffer one split call may use (default DEFAULT_MAX_SCRATCH_BYTES, and never past
   * the device's maxStorageBufferBindingSize); calls needing more split into fewer slices.
   */
  readonly maxScratchBytes?: number;
}

/** 64 MiB: the lm_head's dX (1024, 2560) in 6 slices, a LoRA dA or dB (R = 32) in 16. */
export const DEFAULT_MAX_SCRATCH_BYTES = 64 * 2 ** 20;

export interface MatmulBackwardCallOptions {
  /** Add into the output instead of overwriting it. */
  readonly accumulate?: boolean;
  /** Multiplies the product (default 1). */
  readonly scale?: number;
  /** Force a tile (one of those compiled); default: planned. */
  readonly tile?: MatmulTile;
}

export interface MatmulBackwardSplitOptions extends MatmulBackwardCallOptions {
  /** Force the number of reduction slices (1: one pass); default: planned. */
  readonly slices?: number;
}

export interface InputGradTensors {
  /** (M, K) f32 — gradient of the matmul's input; read too when accumulating. */
  dx: Tensor;
  /** (M, Nout) f32 — gradient of its output. */
  dy: Tensor;
  /** The forward's (Nout, K) weight, as the forward holds it. */
  w: LinearWeight;
  /** `input` only: the LoRA branch's term mask(dU·A) added in the same pass (scale must be 1). */
  lora?: LoraInputGrad;
}

/** dX += mask(dU (M, R) · A (R, K)): the LoRA branch's share of the input gradient. */
export interface LoraInputGrad {
  /** (M, R) f32 — dU = s·dY·B. */
  readonly du: Tensor;
  /** (R, K) f32 — lora_A. */
  readonly a: Tensor;
  /** LoRA dropout: the forward's mask (probability, the projection's salt, the (1) u32 seed). */
  readonly dropout?: { readonly p: number; readonly salt: number; readonly seed: Tensor };
}

export interface WeightGradTensors {
  /** (Nout, K) f32 — gradient of the weight; read too when accumulating. */
  dw: Tensor;
  /** (M, Nout) f32 — gradient of the matmul's output. */
  dy: Tensor;
  /** (M, K) f32 — the matmul's input. */
  x: Tensor;
}


export class MatmulBackward {
  /** (maxScratchBytes) f32 partial sums of split reductions, shared by every call; made on first use. */
  private scratch: GPUBuffer | undefined;

  private constructor(
    private readonly gpu: Gpu,
    private readonly inputKernels: ReadonlyMap<string, Kernel<typeof MatmulInputGradParams>>,
    private readonly weightGradKernels: ReadonlyMap<string, Kernel<typeof MatmulWeightGradParams>>,
    private readonly sliceSum: Kernel<typeof MatmulSliceSumParams>,
    /** Tiles compiled for input and weightGrad. */
    readonly inputTiles: readonly MatmulTile[],
    readonly weightGradTiles: readonly MatmulTile[],
    /** Largest scratch buffer of one call, in bytes. */
    readonly maxScratchBytes: number,
    /** (256) f32 dynamic map for double-quantised scales; (4) f32 stand-in for unused bindings. */
    private readonly qmap: Tensor,
    private readonly unused: Tensor,
    private readonly unusedSeed: Tensor,
  ) {}

  static async create(gpu: Gpu, options: MatmulBackwardOptions = {}): Promise<MatmulBackward> {
    const inputTiles = options.inputTiles ?? INPUT_GRAD_TILES;
    const weightGradTiles = options.weightGradTiles ?? WEIGHT_GRAD_TILES;
    const formats = options.formats ?? STORED_FORMATS;
    const storage = storageBufferCount(matmulInputGradSpec);
    if (gpu.limits.maxStorageBuffersPerShaderStage < storage) {
      throw new DeviceLimitError(
        `MatmulBackward (matmul_backward_input.wgsl): binds ${storage} storage buffers (dY, W and its scales, dU, lora_A, seed), this device allows ` +
          `${gpu.limits.maxStorageBuffersPerShaderStage} per shader stage; use a GPU driver that offers more`,
      );
    }
    const inputKernels = new Map<string, Kernel<typeof MatmulInputGradParams>>();
    for (const tile of inputTiles) {
      checkTile(gpu, tile, 'input');
      for (const format of formats) {
        for (const accumulate of [false, true]) {
          for (const lora of [false, true]) {
            const constants = { ...tileConstants(tile), FORMAT: FORMAT_CODE[format], ACCUMULATE: accumulate, LORA: lora };
            inputKernels.set(variantKey(format, accumulate, tile, lora), await Kernel.create(gpu, matmulInputGradSpec, constants));
          }
        }
      }
    }
    const weightGradKernels = new Map<string, Kernel<typeof MatmulWeightGradParams>>();
    for (const tile of weightGradTiles) {
      checkTile(gpu, tile, 'weightGrad');
      for (const accumulate of [false, true]) {
        const constants = { ...tileConstants(tile), ACCUMULATE: accumulate };
        weightGradKernels.set(variantKey('f32', accumulate, tile), await Kernel.create(gpu, matmulWeightGradSpec, constants));
      }
    }
    const sliceSum = await Kernel.create(gpu, matmulSliceSumSpec, { WG: SLICE_SUM_WORKGROUP });
    return new MatmulBackward(
      gpu,
      inputKernels,
      weightGradKernels,
      sliceSum,
      inputTiles,
      weightGradTiles,
      Math.min(options.maxScratchBytes ?? DEFAULT_MAX_SCRATCH_BYTES, gpu.limits.maxStorageBufferBindingSize),
      dynamicMapTensor(gpu),
      gpu.tensor('matmul backward unused binding', [4], 'f32'),
      gpu.tensor('matmul backward unused seed', [1], 'u32'),
    );
  }

  /** The plan `input` (split false) or `inputSplit` (split true) uses for dX (m, k) from dY (m, nOut). */
  planInput(m: number, nOut: number, k: number, split: boolean, options: MatmulBackwardSplitOptions = {}): BackwardPlan {
    return planBackward(m, k, nOut, this.inputTiles, { split, slices: options.slices, tile: options.tile, maxScratchBytes: this.maxScratchBytes });
  }

  /** The plan `weightGrad` uses for dW (nOut, k) summed over m tokens. */
  planWeightGrad(m: number, nOut: number, k: number, options: MatmulBackwardSplitOptions = {}): BackwardPlan {
    return planBackward(nOut, k, m, this.weightGradTiles, {
      split: true,
      minSlice: 128,
      slices: options.slices,
      tile: options.tile,
      maxScratchBytes: this.maxScratchBytes,
    });
  }

  /**
   * dX (M, K) f32 (+)= scale · dY (M, Nout) · W (Nout, K), one dispatch (the reduction over Nout
   * unsplit); with `t.lora` also + mask(dU · A) in the same pass (scale 1).
   */
  input(label: string, t: InputGradTensors, opts: MatmulBackwardCallOptions = {}): Dispatch {
    const list = this.inputDispatches(label, t, { ...opts, slices: 1 }, false);
    return list[0];
  }

  /**
   * The same as `input`, with the reduction over Nout split into slices when the output alone gives
   * too few workgroups: the lm_head's dX (Tc, D) = dlogits (Tc, V) · E (V, D), or dU (M, R) = s·dY·B.
   * Returns 1 or 2 dispatches, to be recorded consecutively in order.
   */
  inputSplit(label: string, t: InputGradTensors, opts: MatmulBackwardSplitOptions = {}): Dispatch[] {
    if (t.lora) throw new ShapeError(`${label}: the LoRA term joins only the one-pass \`input\`, not inputSplit`);
    return this.inputDispatches(label, t, opts, true);
  }

  /**
   * dW (Nout, K) f32 (+)= scale · dYᵀ (Nout, M) · X (M, K), the reduction over the M tokens split
   * into slices as planned (`planWeightGrad`). Returns 1 or 2 dispatches, to be recorded
   * consecutively in order.
   */
  weightGrad(label: string, t: WeightGradTensors, opts: MatmulBackwardSplitOptions = {}): Dispatch[] {
    const { dw, dy, x } = t;
    const nOut = dw.shape[0] ?? 0;
    const k = dw.shape[1] ?? 0;
    const where = `${label} (matmul weight gradient ${nOut}×${k})`;
    if (dw.shape.length !== 2 || dw.dtype !== 'f32') throw new ShapeError(`${where}: dw ${dw.label} is ${dw.dtype} [${dw.shape.join(', ')}], expected f32 (Nout, K)`);
    const m = rowsOf(where, dy, nOut, 'dy');
    const mx = rowsOf(where, x, k, 'x');
    if (mx !== m) throw new ShapeError(`${where}: dy ${dy.label} has ${m} rows but x ${x.label} has ${mx}; both must have the M tokens as rows`);
    expectNoAlias(where, dw, [dy, x]);
    const scale = checkScale(where, opts.scale);
    const plan = this.planWeightGrad(m, nOut, k, opts);
    const accumulate = opts.accumulate ?? false;
    // a split's main pass writes plain partial sums; the slice sum scales and accumulates
    const kernel = this.weightGradKernels.get(variantKey('f32', accumulate && plan.slices === 1, plan.tile));
    if (!kernel) throw new ShapeError(`${where}: tile ${tileName(plan.tile)} was not compiled; pass it to MatmulBackward.create as a weightGradTile`);
    const grid: [number, number, number] = [Math.ceil(nOut / plan.tile.bm), Math.ceil(k / plan.tile.bn), plan.slices];
    if (plan.slices === 1) {
      return [kernel.bind(where, { dw, dy, x }, { m, n: nOut, k, slice: plan.slice, scale }, grid)];
    }
    const partial = this.scratchTensor(plan, nOut, k);
    return [
      kernel.bind(`${where} slices`, { dw: partial, dy, x }, { m, n: nOut, k, slice: plan.slice, scale: 1 }, grid),
      this.sumSlices(`${where} slice sum`, dw, partial, plan.slices, nOut * k, scale, accumulate),
    ];
  }

  /** Bytes of GPU memory this object holds: the scratch buffer once a split call was bound, else 0. */
  get scratchBytes(): number {
    return this.scratch?.size ?? 0;
  }

  /** Frees the scratch buffer (dispatches bound with it become invalid). */
  destroy(): void {
    this.scratch?.destroy();
    this.scratch = undefined;
  }

  private inputDispatches(label: string, t: InputGradTensors, opts: MatmulBackwardSplitOptions, split: boolean): Dispatch[] {
    const { dx, dy, w } = t;
    const where = `${label} (matmul input gradient ${w.nOut}×${w.k} ${w.format})`;
    const stored = checkWeight(where, w);
    const m = rowsOf(where, dx, w.k, 'dx');
    const my = rowsOf(where, dy, w.nOut, 'dy');
    if (my !== m) throw new ShapeError(`${where}: dx ${dx.label} has ${m} rows but dy ${dy.label} has ${my}`);
    const weightTensors = [w.data, w.absmax, w.doubleQuant?.codes, w.doubleQuant?.absmax2].filter((x): x is Tensor => x !== undefined);
    expectNoAlias(where, dx, [dy, ...weightTensors]);
    const scale = checkScale(where, opts.scale);
    const lora = t.lora ? loraParams(where, t.lora, m, w.k, scale) : undefined;
    const plan = this.planInput(m, w.nOut, w.k, split, opts);
    const accumulate = opts.accumulate ?? false;
    // a split's main pass writes plain partial sums; the slice sum scales and accumulates
    const kernel = this.inputKernels.get(variantKey(stored, accumulate && plan.slices === 1, plan.tile, lora !== undefined));
    if (!kernel) {
      throw new ShapeError(`${where}: format ${stored} with tile ${tileName(plan.tile)} was not compiled; pass both to MatmulBackward.create`);
    }
    const scales = stored === 'nf4dq' ? w.doubleQuant! : undefined;
    const unused = this.unused;
    const bound = (out: Tensor) => ({
      dx: out,
      dy,
      w: w.data,
      absmax: stored === 'nf4' ? w.absmax! : scales ? scales.codes : unused,
      absmax2: scales ? scales.absmax2 : unused,
      qmap: scales ? this.qmap : unused,
      du: t.lora?.du ?? unused,
      lora_a: t.lora?.a ?? unused,
      seed: t.lora?.dropout?.seed ?? this.unusedSeed,
    });
    const grid: [number, number, number] = [Math.ceil(m / plan.tile.bm), Math.ceil(w.k / plan.tile.bn), plan.slices];
    const base = { m, n: w.nOut, k: w.k, slice: plan.slice, offset: scales?.offset ?? 0, ...(lora ?? { r: 0, threshold: 0, drop_scale: 1, salt: 0 }) };
    if (plan.slices === 1) return [kernel.bind(where, bound(dx), { ...base, scale }, grid)];
    const partial = this.scratchTensor(plan, m, w.k);
    return [
      kernel.bind(`${where} slices`, bound(partial), { ...base, scale: 1 }, grid),
      this.sumSlices(`${where} slice sum`, dx, partial, plan.slices, m * w.k, scale, accumulate),
    ];
  }

  private sumSlices(label: string, out: Tensor, partial: Tensor, slices: number, count: number, scale: number, accumulate: boolean): Dispatch {
    const g = Math.ceil(count / SLICE_SUM_WORKGROUP);
    const grid = foldGrid(g);
    return this.sliceSum.bind(label, { out, partial }, { count, slices, scale, accumulate: accumulate ? 1 : 0 }, grid);
  }

  /** A (slices, rows, cols) f32 view of the scratch buffer (maxScratchBytes, made on first use). */
  private scratchTensor(plan: BackwardPlan, rows: number, cols: number): Tensor {
    this.scratch ??= this.gpu.buffer(`matmul backward scratch (${this.maxScratchBytes} bytes) f32`, this.maxScratchBytes);
    return tensorView(this.scratch, `matmul backward partial sums (${plan.slices}, ${rows}, ${cols}) f32`, [plan.slices, rows, cols], 'f32');
  }
}

function variantKey(format: StoredFormat, accumulate: boolean, tile: MatmulTile, lora = false): string {
  return `${format}|${accumulate ? 'acc' : 'set'}|${tileName(tile)}${lora ? '|lora' : ''}`;
}

/** The LoRA term's params of `input` (rank, dropout threshold, scale and salt), its tensors checked. */
function loraParams(where: string, l: LoraInputGrad, m: number, k: number, scale: number): { r: number; threshold: number; drop_scale: number; salt: number } {
  const r = l.a.shape[0] ?? 0;
  if (scale !== 1) throw new ShapeError(`${where}: the LoRA term needs scale 1, got ${scale}`);
  if (r < 1 || r > MAX_LORA_RANK) throw new ShapeError(`${where}: LoRA rank ${r} outside 1..${MAX_LORA_RANK}`);
  expectTensor(where, l.a, [r, k], 'f32');
  expectTensor(where, l.du, [m, r], 'f32');
  const d = l.dropout;
  if (d) expectTensor(where, d.seed, [1], 'u32');
  const { threshold, scale: dropScale } = dropoutConstants(d?.p ?? 0);
  return { r, threshold, drop_scale: dropScale, salt: (d?.salt ?? 0) >>> 0 };
}

/** Rows of an f32 tensor (…, width): the product of its leading dimensions. */
function rowsOf(where: string, t: Tensor, width: number, name: string): number {
  if (t.dtype !== 'f32' || t.shape[t.shape.length - 1] !== width || width < 1) {
    throw new ShapeError(`${where}: ${name} ${t.label} is ${t.dtype} [${t.shape.join(', ')}], expected f32 (…, ${width})`);
  }
  return numel(t.shape) / width;
}

function checkScale(where: string, scale: number | undefined): number {
  const s = scale ?? 1;
  if (!Number.isFinite(s)) throw new ShapeError(`${where}: scale ${s} is not finite`);
  return s;
}

/** WebGPU forbids a dispatch to write a buffer it also reads: the output needs its own buffer. */
function expectNoAlias(where: string, out: Tensor, inputs: readonly Tensor[]): void {
  for (const t of inputs) {
    if (t.buffer === out.buffer) {
      throw new ShapeError(`${where}: output ${out.label} shares a GPU buffer with input ${t.label}, which the same dispatch reads; give the gradient its own buffer`);
    }
  }
}
