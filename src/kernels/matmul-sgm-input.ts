import { DeviceError, DeviceLimitError, ShapeError } from '../errors.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { foldGrid } from './grid.js';
import { Kernel, storageBufferCount, type KernelSpec } from './kernel.js';
import { checkWeight, FORMAT_CODE, STORED_FORMATS, type LinearWeight, type StoredFormat } from './matmul.js';
import { matmulSliceSumSpec, type MatmulSliceSumParams } from './matmul-backward.js';
import { sgmRelBound, sgmTileName, sgmTileRows, sgmUnsupportedReason, type SgmTile } from './matmul-sgm.js';
import { defineParams } from './params.js';
import { dynamicMapTensor, NF4_BLOCK } from './nf4.js';
import { numel, tensorView, type Tensor } from './tensor.js';

/**
 * Input gradient of the dequant-matmul on subgroup matrices (tensor cores):
 *   dX (M, K) f32 [+]= scale · dY (M, N) · dequant(W) (N, K)
 * from the forward's packed weight (f32, bf16, NF4 with or without double quantisation), f16
 * operands with f32 accumulation (shaders/matmul_sgm_input.wgsl). The tensor-core twin of
 * `MatmulBackward.input` (src/kernels/matmul-backward.ts), with one more input: rowScale (M) f32,
 * a power of two per row of dY (issue 11 item 4's row-scale kernel) that lifts small gradients
 * into f16's normal range while staging; the epilogue divides it out again (exactly).
 * The reduction over N may be split into slices (a partial-sum pass and the deterministic slice
 * sum of matmul_backward_reduce.wgsl) when the output alone makes too few workgroups to fill the
 * GPU, so `input` returns 1 or 2 dispatches, to be recorded consecutively in order.
 * Needs what the forward needs (`sgmUnsupportedReason`); K a multiple of 64, N a multiple of 4.
 * The training step's projections call it on the tensor-core path (src/model/projection.ts).
 *
 * Measured (H200, 2026-12-02, bench/results/h200-2026-12-02-matmul-sgm-input-v3.json, M = 2048,
 * NF4, planned variants, Dawn robustness on): 79 TFLOP/s at q_proj's dX, 73 at k/v_proj's, 91 at
 * gate/up's (the target 100 not reached), 96 at o_proj's, 92 at down_proj's; with robustness off
 * 124, 99, 102–116, 155, 150. dX of width 2560 makes too few 256 × 128 workgroups for 132 SMs:
 * the plan splits q and gate/up 4 ways and gives k/v the 256 × 80 tile.
 */

export const MatmulSgmInputParams = defineParams('MatmulSgmInputParams', [
  ['m', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['slice', 'u32'],
  ['scale', 'f32'],
  ['offset', 'f32'],
] as const);

export const matmulSgmInputSpec: KernelSpec<typeof MatmulSgmInputParams> = {
  file: 'matmul_sgm_input.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dx', access: 'read_write' },
    { name: 'dy', access: 'read' },
    { name: 'row_scale', access: 'read' },
    { name: 'w', access: 'read' },
    { name: 'absmax', access: 'read' },
    { name: 'absmax2', access: 'read' },
    { name: 'qmap', access: 'read' },
  ],
  params: MatmulSgmInputParams,
};

/**
 * Tiles of dX (the forward's SgmTile: sgM × sgN subgroups of fm × fn fragments of 16 × 16, bk the
 * reduction step): BM = 16·sgM·fm rows of M, BN = 16·sgN·fn columns of K.
 */
export const SGM_INPUT_TILES = {
  /** 256 × 128, 8 × 1 subgroups of 2 × 8: the forward's fastest. */
  tall: { sgM: 8, sgN: 1, fm: 2, fn: 8, bk: 32 },
  /**
   * 256 × 80, 8 × 1 subgroups of 2 × 5: 256 workgroups where `tall` makes 160 (dX of width 2560 at
   * 2048 tokens), two nearly full waves on 132 SMs without splitting the reduction: the fastest at
   * k/v_proj's short reduction (73 TFLOP/s against 60 with `tall`), slower than `tall` split 4 ways
   * at q_proj and gate/up.
   */
  narrow: { sgM: 8, sgN: 1, fm: 2, fn: 5, bk: 32 },
  /**
   * 128 × 256, 4 × 2 subgroups of 2 × 8: half the dY re-reads of `tall` (dY is f32, W 4-bit), yet
   * 15–25 % slower than it at every projection (H200, bench/results/h200-2026-12-02-matmul-sgm-input.json).
   */
  wide: { sgM: 4, sgN: 2, fm: 2, fn: 8, bk: 32 },
  /** 256 × 128, 4 × 2 subgroups of 4 × 4: 8 fragment loads per 16 multiplies (2 × 8 needs 10). */
  square: { sgM: 4, sgN: 2, fm: 4, fn: 4, bk: 32 },
  /** 128 × 128, 4 × 2 subgroups of 2 × 4: more workgroups for smaller outputs. */
  medium: { sgM: 4, sgN: 2, fm: 2, fn: 4, bk: 32 },
  /** 64 × 64, 2 × 2 subgroups of 2 × 2, reduction steps of 64: small outputs. */
  tiny: { sgM: 2, sgN: 2, fm: 2, fn: 2, bk: 64 },
} as const satisfies Record<string, SgmTile>;

export const SGM_INPUT_DEFAULT_TILES: readonly SgmTile[] = [SGM_INPUT_TILES.tall, SGM_INPUT_TILES.narrow, SGM_INPUT_TILES.medium, SGM_INPUT_TILES.tiny];

/** The shader's fixed sizes: staging halves, subgroups (edge scratch), rows of the row-scale tables. */
const TILE_HALVES = 15360;
const MAX_SUBGROUPS = 8;
const MAX_ROWS = 256;
const PAD = 8;

/** Halves of staging a tile uses: the dY tile BM × (bk + 8) and the W tile bk × (BN + 8). */
export function sgmInputTileHalves(t: SgmTile): number {
  const { bm, bn } = sgmTileRows(t);
  return bm * (t.bk + PAD) + t.bk * (bn + PAD);
}

/** Bytes of workgroup memory the shader declares (the same for every tile). */
export function sgmInputWorkgroupBytes(): number {
  return TILE_HALVES * 2 + MAX_SUBGROUPS * 256 * 4 + 2 * MAX_ROWS * 4 + 16 * 2;
}

/** Staging items per invocation and step: dY in units of 4 elements, W in units of 8 (at most 8 each). */
export function sgmInputStagingItems(t: SgmTile): { x: number; w: number } {
  const { bm, bn } = sgmTileRows(t);
  const threads = 32 * t.sgM * t.sgN;
  return { x: Math.ceil((bm * t.bk) / 4 / threads), w: Math.ceil((t.bk * bn) / 8 / threads) };
}

/** Why a tile cannot run (empty when it can), given the device's workgroup limits. */
export function sgmInputTileProblems(t: SgmTile, maxWorkgroupBytes: number, maxInvocations: number): string[] {
  const problems: string[] = [];
  if (![t.sgM, t.sgN, t.fm, t.fn].every((v) => Number.isInteger(v) && v >= 1)) problems.push('sgM, sgN, fm and fn must be positive integers');
  if (![1, 2, 4].includes(t.fm) || t.fn > 8 || (t.fm === 4 && t.fn > 4)) {
    problems.push(`fm = ${t.fm} and fn = ${t.fn} fragments per subgroup: fm 1 or 2 with fn ≤ 8, or fm 4 with fn ≤ 4 (the shader's named accumulators)`);
  }
  if (![16, 32, 64].includes(t.bk)) problems.push(`bk = ${t.bk} must be 16, 32 or 64`);
  const threads = 32 * t.sgM * t.sgN;
  if (threads > Math.min(256, maxInvocations)) problems.push(`${threads} invocations exceed ${Math.min(256, maxInvocations)}`);
  if (t.sgM * t.sgN > MAX_SUBGROUPS) problems.push(`${t.sgM * t.sgN} subgroups exceed ${MAX_SUBGROUPS}`);
  const { bm } = sgmTileRows(t);
  if (bm > MAX_ROWS) problems.push(`BM = ${bm} rows exceed the shader's ${MAX_ROWS}`);
  const halves = sgmInputTileHalves(t);
  if (halves > TILE_HALVES) problems.push(`BM·(bk + ${PAD}) + bk·(BN + ${PAD}) = ${halves} staged halves exceed the shader's ${TILE_HALVES}`);
  const items = sgmInputStagingItems(t);
  if (items.x > 8 || items.w > 8) problems.push(`staging writes at most 8 items per invocation; this tile needs ${items.x} (dY) and ${items.w} (W): use more subgroups`);
  const bytes = sgmInputWorkgroupBytes();
  if (bytes > maxWorkgroupBytes) problems.push(`the shader needs ${bytes} bytes of workgroup memory, the device allows ${maxWorkgroupBytes}`);
  return problems;
}

/**
 * Whether a tile prefetches ('auto': with 2 × 8 fragments per subgroup). Measured on the H200
 * (bench/results/h200-2026-12-02-matmul-sgm-input-v2.json, robustness on): 256 × 128 tiles ran 3–5 %
 * faster with prefetch (gate/up's dX 90.4 against 85.0 TFLOP/s), 256 × 80 tiles 7–9 % slower
 * (k/v_proj's dX 67.1 against 73.1).
 */
export function sgmInputPrefetch(t: SgmTile, prefetch: boolean | 'auto'): boolean {
  return prefetch === 'auto' ? t.fm * t.fn >= 16 : prefetch;
}

/** How one input gradient runs: its tile and the split of its reduction over N. */
export interface SgmInputPlan {
  readonly tile: SgmTile;
  /** Slices of the reduction; 1: one dispatch straight into dX. */
  readonly slices: number;
  /** Reduction indices per slice (a multiple of tile.bk; N itself when slices = 1). */
  readonly slice: number;
  /** Bytes of the (slices, M, K) f32 scratch, 0 when slices = 1. */
  readonly scratchBytes: number;
  /** The model's estimate in seconds (for ranking plans, not a measurement). */
  readonly estimate: number;
}

/**
 * The machine the plan assumes: `sms` multiprocessors, each holding one workgroup of 128
 * accumulator fragments (8 subgroups × 2 × 8, the register file's limit) or proportionally more of
 * smaller tiles (at most 5, workgroup memory), all at `flops` together with 2 × 8 fragments per
 * subgroup (less with fewer, tileEfficiency). The time is waves of workgroups × one workgroup's
 * time (its share of the arithmetic plus `epilogue` seconds per 256 × 128 outputs); a split adds
 * 2·S floats per output (partial sums written, then read by the slice sum) at `bandwidth` and
 * `dispatch` seconds.
 */
export interface SgmInputMachine {
  readonly sms: number;
  readonly flops: number;
  readonly epilogue: number;
  readonly bandwidth: number;
  readonly dispatch: number;
}

/**
 * An H200, fitted to the first sweep (bench/results/h200-2026-12-02-matmul-sgm-input.json, 256 × 128
 * tiles: gate/up's dX at 1–6 slices within 1 %, k/v_proj's within 5 %): 132 SMs, 100 TFLOP/s when
 * full, 7.7 µs of epilogue per workgroup, 1.75 TB/s for the split's extra traffic. (An RTX 4090 has
 * 128 SMs.)
 */
export const SGM_INPUT_MACHINE: SgmInputMachine = { sms: 132, flops: 100e12, epilogue: 7.7e-6, bandwidth: 1.75e12, dispatch: 0 };

export interface SgmInputPlanOptions {
  /** Largest scratch buffer (default: no limit). */
  readonly maxScratchBytes?: number;
  /** Most slices tried (default 8). */
  readonly maxSlices?: number;
  /** Fewest reduction indices per slice (default 256). */
  readonly minSlice?: number;
  /** Force this many slices (clamped to what N, minSlice ignored, and the scratch allow). */
  readonly slices?: number;
  /** Force this tile. */
  readonly tile?: SgmTile;
  readonly machine?: SgmInputMachine;
}

/** Tile and split for dX (m, k) summed over n, the fastest by the model among `tiles` (first wins ties). */
export function planSgmInput(m: number, n: number, k: number, tiles: readonly SgmTile[], options: SgmInputPlanOptions = {}): SgmInputPlan {
  const machine = options.machine ?? SGM_INPUT_MACHINE;
  const maxScratch = options.maxScratchBytes ?? Infinity;
  const scratchSlices = Math.max(1, Math.floor(maxScratch / (m * k * 4)));
  let best: SgmInputPlan | undefined;
  for (const tile of options.tile ? [options.tile] : tiles) {
    const most = Math.min(options.maxSlices ?? 8, scratchSlices, Math.max(1, Math.ceil(n / tile.bk)));
    const candidates: number[] = [];
    if (options.slices !== undefined) candidates.push(Math.max(1, Math.min(options.slices, most)));
    else for (let s = 1; s <= most; s++) if (s === 1 || n / s >= (options.minSlice ?? 256)) candidates.push(s);
    for (const wanted of candidates) {
      const plan = planSlices(m, n, k, tile, wanted, machine);
      if (!best || plan.estimate < best.estimate * (1 - 1e-9)) best = plan;
    }
  }
  if (!best) throw new ShapeError('planSgmInput: no tiles to choose from');
  return best;
}

/**
 * A full GPU's rate with this tile relative to 2 × 8 fragments per subgroup: fewer fragments load
 * more fragments per multiply (the probe on the H200: 2 × 4 at 0.7, 2 × 2 at 0.2 of 4 × 4's rate;
 * 2 × 5 measured at 0.73–0.78 without prefetch, …-matmul-sgm-input-v2.json).
 */
function tileEfficiency(t: SgmTile): number {
  const f = t.fm * t.fn;
  return f >= 16 ? 1 : f >= 10 ? 0.74 : f >= 8 ? 0.7 : f >= 4 ? 0.25 : 0.1;
}

function planSlices(m: number, n: number, k: number, tile: SgmTile, wanted: number, machine: SgmInputMachine): SgmInputPlan {
  let slice = Math.ceil(Math.ceil(n / wanted) / tile.bk) * tile.bk;
  const slices = Math.max(1, Math.ceil(n / slice));
  if (slices === 1) slice = Math.max(n, 1);
  const { bm, bn } = sgmTileRows(tile);
  const groups = Math.ceil(m / bm) * Math.ceil(k / bn) * slices;
  const fragments = tile.sgM * tile.sgN * tile.fm * tile.fn;
  const perSm = Math.min(5, Math.max(1, Math.floor(128 / fragments)));
  const slots = machine.sms * perSm;
  const waves = Math.ceil(groups / slots);
  const perGroup = (2 * bm * bn * Math.min(slice, n)) / ((machine.flops * tileEfficiency(tile)) / slots) + (machine.epilogue * bm * bn) / (256 * 128);
  const sum = slices > 1 ? (4 * 2 * slices * m * k) / machine.bandwidth + machine.dispatch : 0;
  return { tile, slices, slice, scratchBytes: slices > 1 ? slices * m * k * 4 : 0, estimate: waves * perGroup + sum };
}

export interface MatmulSgmInputOptions {
  /** Tiles to compile, preferred first (default SGM_INPUT_DEFAULT_TILES). */
  readonly tiles?: readonly SgmTile[];
  /** Weight formats to compile (default all four). */
  readonly formats?: readonly StoredFormat[];
  /**
   * Formats compiled beyond `formats` with the plain epilogue only (overwrite), every tile: the
   * lm_head's bf16 where the projections are NF4 (the loss head's dX, src/model/loss-head.ts).
   */
  readonly plainFormats?: readonly StoredFormat[];
  /** Epilogues to compile (default both; a split's partial pass always uses the plain one). */
  readonly accumulate?: readonly boolean[];
  /**
   * Issue the next step's global loads before this step's arithmetic: true, false, or 'auto'
   * (default: sgmInputPrefetch, on for 2 × 8 fragments per subgroup, off for fewer).
   */
  readonly prefetch?: boolean | 'auto';
  /** Largest scratch buffer of a split call (default 128 MiB, never past maxStorageBufferBindingSize). */
  readonly maxScratchBytes?: number;
  /** What the plan assumes of the GPU (default SGM_INPUT_MACHINE). */
  readonly machine?: SgmInputMachine;
}

/** 128 MiB: dX (2048, 2560) in 6 slices. */
export const SGM_INPUT_MAX_SCRATCH_BYTES = 128 * 2 ** 20;

export interface SgmInputGradTensors {
  /** (M, K) f32 — gradient of the matmul's input; read too when accumulating. */
  dx: Tensor;
  /** (M, N) f32 — gradient of its output, N a multiple of 4. */
  dy: Tensor;
  /** (M) f32 — powers of two, each row of dY's factor into f16 range (the row-scale kernel's output). */
  rowScale: Tensor;
  /** The forward's (N, K) weight, as the forward holds it. */
  w: LinearWeight;
}

export interface SgmInputCallOptions {
  /** Add into dX instead of overwriting it. */
  readonly accumulate?: boolean;
  /** Multiplies the product (default 1). */
  readonly scale?: number;
  /** Force a compiled tile; default: planned. */
  readonly tile?: SgmTile;
  /** Force the number of reduction slices; default: planned. */
  readonly slices?: number;
}

const SLICE_SUM_WORKGROUP = 256;

export class MatmulSgmInput {
  /** (maxScratchBytes) f32 partial sums of split reductions, shared by every call; made on first use. */
  private scratch: GPUBuffer | undefined;

  private constructor(
    private readonly gpu: Gpu,
    private readonly kernels: ReadonlyMap<string, Kernel<typeof MatmulSgmInputParams>>,
    private readonly sliceSum: Kernel<typeof MatmulSliceSumParams>,
    readonly tiles: readonly SgmTile[],
    readonly maxScratchBytes: number,
    private readonly machine: SgmInputMachine,
    /** (256) f32 dynamic map for double-quantised scales; (4) f32 stand-in for unused bindings. */
    private readonly qmap: Tensor,
    private readonly unused: Tensor,
  ) {}

  /** Compiles every tile × format × epilogue; a DeviceError (with the reason) where subgroup matrices are missing. */
  static async create(gpu: Gpu, options: MatmulSgmInputOptions = {}): Promise<MatmulSgmInput> {
    const reason = sgmUnsupportedReason(gpu, storageBufferCount(matmulSgmInputSpec));
    if (reason) throw new DeviceError(`subgroup-matrix input gradient unavailable: ${reason}; use MatmulBackward.input instead`);
    const tiles = options.tiles ?? SGM_INPUT_DEFAULT_TILES;
    const kernels = new Map<string, Kernel<typeof MatmulSgmInputParams>>();
    for (const tile of tiles) {
      const problems = sgmInputTileProblems(tile, gpu.limits.maxComputeWorkgroupStorageSize, gpu.limits.maxComputeInvocationsPerWorkgroup);
      if (problems.length > 0) throw new DeviceLimitError(`subgroup-matrix input-gradient tile ${sgmTileName(tile)}: ${problems.join('; ')}`);
      const formats = options.formats ?? STORED_FORMATS;
      // the plain epilogue is always compiled: split calls write their partial sums with it
      const variants = [
        ...formats.flatMap((format) => [...new Set([false, ...(options.accumulate ?? [true])])].map((accumulate) => ({ format, accumulate }))),
        ...(options.plainFormats ?? []).filter((f) => !formats.includes(f)).map((format) => ({ format, accumulate: false })),
      ];
      for (const { format, accumulate } of variants) {
        const constants = { SG_M: tile.sgM, SG_N: tile.sgN, FM: tile.fm, FN: tile.fn, BK: tile.bk, FORMAT: FORMAT_CODE[format], ACCUMULATE: accumulate, PREFETCH: sgmInputPrefetch(tile, options.prefetch ?? 'auto') };
        kernels.set(variantKey(format, accumulate, tile), await Kernel.create(gpu, matmulSgmInputSpec, constants));
      }
    }
    const sliceSum = await Kernel.create(gpu, matmulSliceSumSpec, { WG: SLICE_SUM_WORKGROUP });
    const maxScratch = Math.min(options.maxScratchBytes ?? SGM_INPUT_MAX_SCRATCH_BYTES, gpu.limits.maxStorageBufferBindingSize);
    return new MatmulSgmInput(gpu, kernels, sliceSum, tiles, maxScratch, options.machine ?? SGM_INPUT_MACHINE, dynamicMapTensor(gpu), gpu.tensor('matmul-sgm-input unused binding', [4], 'f32'));
  }

  /** The plan `input` uses for dX (m, k) from dY (m, n). */
  plan(m: number, n: number, k: number, options: Pick<SgmInputCallOptions, 'tile' | 'slices'> = {}): SgmInputPlan {
    return planSgmInput(m, n, k, this.tiles, { tile: options.tile, slices: options.slices, maxScratchBytes: this.maxScratchBytes, machine: this.machine });
  }

  /** Records dX (M, K) [+]= scale · dY (M, N) · dequant(W) (N, K): 1 or 2 dispatches, to be recorded in order. */
  input(label: string, t: SgmInputGradTensors, opts: SgmInputCallOptions = {}): Dispatch[] {
    const { dx, dy, rowScale, w } = t;
    const where = `${label} (matmul-sgm input gradient ${w.nOut}×${w.k} ${w.format})`;
    const stored = checkWeight(where, w);
    if (w.k % NF4_BLOCK !== 0) throw new ShapeError(`${where}: K = ${w.k} must be a multiple of ${NF4_BLOCK} for the subgroup-matrix input gradient`);
    if (w.nOut % 4 !== 0) throw new ShapeError(`${where}: N = ${w.nOut} must be a multiple of 4 (dY rows are read as vec4)`);
    const m = rowsOf(where, dx, w.k, 'dx');
    const my = rowsOf(where, dy, w.nOut, 'dy');
    if (my !== m) throw new ShapeError(`${where}: dx ${dx.label} has ${m} rows but dy ${dy.label} has ${my}`);
    if (rowScale.dtype !== 'f32' || numel(rowScale.shape) !== m) {
      throw new ShapeError(`${where}: rowScale ${rowScale.label} is ${rowScale.dtype} [${rowScale.shape.join(', ')}], expected f32 (${m}), one power of two per row of dY`);
    }
    const weightTensors = [w.data, w.absmax, w.doubleQuant?.codes, w.doubleQuant?.absmax2].filter((x): x is Tensor => x !== undefined);
    for (const input of [dy, rowScale, ...weightTensors]) {
      if (input.buffer === dx.buffer) throw new ShapeError(`${where}: dx ${dx.label} shares a GPU buffer with ${input.label}, which the same dispatch reads; give the gradient its own buffer`);
    }
    const scale = opts.scale ?? 1;
    if (!Number.isFinite(scale)) throw new ShapeError(`${where}: scale ${scale} is not finite`);
    const plan = this.plan(m, w.nOut, w.k, opts);
    const accumulate = opts.accumulate ?? false;
    const kernel = this.kernels.get(variantKey(stored, accumulate && plan.slices === 1, plan.tile));
    if (!kernel) {
      throw new ShapeError(`${where}: variant ${stored}${accumulate ? '+accumulate' : ''} with tile ${sgmTileName(plan.tile)} was not compiled; pass it to MatmulSgmInput.create`);
    }
    const scales = stored === 'nf4dq' ? w.doubleQuant! : undefined;
    const bound = (out: Tensor) => ({
      dx: out,
      dy,
      row_scale: rowScale,
      w: w.data,
      absmax: stored === 'nf4' ? w.absmax! : scales ? scales.codes : this.unused,
      absmax2: scales ? scales.absmax2 : this.unused,
      qmap: scales ? this.qmap : this.unused,
    });
    const { bm, bn } = sgmTileRows(plan.tile);
    const grid: [number, number, number] = [Math.ceil(w.k / bn), Math.ceil(m / bm), plan.slices];
    const base = { m, n: w.nOut, k: w.k, slice: plan.slice, offset: scales?.offset ?? 0 };
    if (plan.slices === 1) return [kernel.bind(where, bound(dx), { ...base, scale }, grid)];
    this.scratch ??= this.gpu.buffer(`matmul-sgm-input scratch (${this.maxScratchBytes} bytes) f32`, this.maxScratchBytes);
    const partial = tensorView(this.scratch, `matmul-sgm-input partial sums (${plan.slices}, ${m}, ${w.k}) f32`, [plan.slices, m, w.k], 'f32');
    const count = m * w.k;
    return [
      kernel.bind(`${where} slices`, bound(partial), { ...base, scale: 1 }, grid),
      this.sliceSum.bind(`${where} slice sum`, { out: dx, partial }, { count, slices: plan.slices, scale, accumulate: accumulate ? 1 : 0 }, foldGrid(Math.ceil(count / SLICE_SUM_WORKGROUP))),
    ];
  }

  /** Bytes of GPU memory this object holds: the scratch buffer once a split call was bound, else 0. */
  get scratchBytes(): number {
    return this.scratch?.size ?? 0;
  }

  /** Frees the scratch buffer (split dispatches bound with it become invalid). */
  destroy(): void {
    this.scratch?.destroy();
    this.scratch = undefined;
  }
}

function variantKey(format: StoredFormat, accumulate: boolean, tile: SgmTile): string {
  return `${format}|${accumulate ? 'acc' : 'set'}|${sgmTileName(tile)}`;
}

/** Rows of an f32 tensor (…, width): the product of its leading dimensions. */
function rowsOf(where: string, t: Tensor, width: number, name: string): number {
  if (t.dtype !== 'f32' || t.shape[t.shape.length - 1] !== width || width < 1) {
    throw new ShapeError(`${where}: ${name} ${t.label} is ${t.dtype} [${t.shape.join(', ')}], expected f32 (…, ${width})`);
  }
  return numel(t.shape) / width;
}

/**
 * Bound on |dX_gpu − dX_ref| for each output, from the f16 rounding of the operands:
 *   1. dY[m][n]·rowScale[m] rounds to f16: relative 2⁻¹¹ while normal (≥ 2⁻¹⁴), else absolute 2⁻²⁵
 *      (half the subnormal spacing), i.e. 2⁻²⁵ / rowScale[m] in dX's units;
 *   2. a weight element rounds once (f32, bf16: 2⁻¹¹) or three times (NF4: codebook value, block
 *      scale and their f16 product, 3·2⁻¹¹), relative while normal, else absolute 2⁻²⁵;
 *   3. products of f16 are exact in f32; the f32 sums over N (in slices and their sum) add at most
 *      N·2⁻²⁴ of Σ|terms|; the epilogue's power-of-two factor is exact.
 * So |err[m][k]| ≤ ((1 + r_w)·2⁻¹¹·1.01 + N·2⁻²⁴) · Σ_n |dY·W| + 2⁻²⁵ · (Σ_n |W[n][k]| / rowScale[m]
 * + Σ_n |dY[m][n]|), r_w = 1 or 3. Round-to-nearest conversions are assumed (NVIDIA's; WGSL allows
 * either neighbour, which would double the relative terms). `dense` is W (n, k) as float64.
 */
export function sgmInputErrorBound(
  format: StoredFormat,
  dy: ArrayLike<number>,
  dense: ArrayLike<number>,
  rowScale: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
): Float64Array {
  // the reduction runs over N here: the forward's relative bound with K = n
  const rel = sgmRelBound(format, n);
  const colAbs = new Float64Array(k);
  for (let j = 0; j < n; j++) for (let c = 0; c < k; c++) colAbs[c] += Math.abs(dense[j * k + c]);
  const out = new Float64Array(m * k);
  const absW = Float64Array.from({ length: n * k }, (_, i) => Math.abs(dense[i]));
  for (let i = 0; i < m; i++) {
    let rowAbs = 0;
    const row = out.subarray(i * k, (i + 1) * k);
    for (let j = 0; j < n; j++) {
      const a = Math.abs(dy[i * n + j]);
      rowAbs += a;
      if (a === 0) continue;
      for (let c = 0; c < k; c++) row[c] += a * absW[j * k + c];
    }
    for (let c = 0; c < k; c++) row[c] = rel * row[c] + 2 ** -25 * (colAbs[c] / rowScale[i] + rowAbs);
  }
  return out;
}
