import type { Dispatch } from '../kernels/dispatch.js';
import type { Dropout } from '../kernels/dropout.js';
import type { LinearWeight, Matmul, MatmulCall } from '../kernels/matmul.js';
import type { MatmulBackward } from '../kernels/matmul-backward.js';
import type { LoraDown } from '../kernels/lora-down.js';
import { numel, tensorView, type Tensor } from '../kernels/tensor.js';
import { LORA_DOWN_GROUPS, loraDownTakes } from '../kernels/lora-down.js';
import type { LoraPair } from './lora.js';
import type { TensorCoreKernels } from './tensor-core-kernels.js';

/**
 * One projection of a decoder layer as a unit: the frozen base weight W and, when the projection
 * is targeted, its LoRA pair (A, B) with scale s:
 *
 *   forward   U = dropout(x)·Aᵀ;  y (=|+=) x·Wᵀ + s·U·Bᵀ        (U kept for the backward)
 *   backward  dB += s·dyᵀ·U;  dU = s·dy·B;  dA += dUᵀ·dropout(x);  dX (=|+=) dy·W + mask(dU·A)
 *
 * The dropout mask is regenerated in the backward from the micro-batch's seed and a per-projection
 * salt, never stored. Without dropout the LoRA input is x itself.
 * Passes over x: with the lora-down kernel, `projectionsDown` computes U for every targeted
 * projection that reads the same x (q/k/v, gate/up) in one dispatch, mask included, and the base
 * matmuls then only add s·U·Bᵀ in their epilogue; in the backward the LoRA term of dX joins the
 * dy·W pass (matmul-backward `input` with `lora`), so dX is written once.
 *
 * On the tensor-core path (src/model/compute-path.ts; `rowScale` given and k.tensorCores present)
 * the base terms run on subgroup matrices with f16 operands: forward y (=|+=) x·Wᵀ + s·U·Bᵀ on
 * MatmulSgm with x's row scales (computed once per distinct x by the caller, `projectionRowScale`),
 * the LoRA epilogue in f32; backward dX (=|+=) dy·W on MatmulSgmInput with dy's row scales (one
 * row-scale dispatch per dy here), then + mask(dU·A) by the f32 input gradient (accumulating;
 * with dropout dU·A goes through the dropout scratch and the mask kernel). U, dU, dA and dB stay f32.
 */
export interface ProjectionUnit {
  /** Dispatch label, e.g. "L3 q_proj" or "layer 3 q_proj". */
  readonly label: string;
  readonly w: LinearWeight;
  /** The LoRA pair and scale, when this projection is targeted. */
  readonly lora?: { readonly pair: LoraPair; readonly scale: number; readonly r: number };
  /** Gradient buffers of the pair (training only). */
  readonly grad?: LoraPair;
  /** LoRA dropout (training only): p, seed, salt and the (N, max K) scratch for the dropped input (and dU·A on tensor cores). */
  readonly dropout?: ProjectionDropout;
}

export interface ProjectionDropout {
  readonly p: number;
  readonly salt: number;
  readonly seed: Tensor;
  /**
   * (N, ≥ K) f32 — the dropped input; in the tensor-core backward, once dA has read it, also dU·A
   * before its mask (the f32 path's dX pass takes the masked term itself).
   */
  readonly xDrop: Tensor;
}

export interface ProjectionKernels {
  readonly matmul: Matmul;
  readonly matmulBackward?: MatmulBackward;
  readonly dropout?: Dropout;
  /**
   * U for the projections sharing one input in one pass (training), and U of a single projection
   * where the caller keeps the default matrix kernel (evaluation's shared U); without it, one
   * lora_A matmul each.
   */
  readonly loraDown?: LoraDown;
  /** The tensor-core path's kernels (used where the caller passes row-scale buffers). */
  readonly tensorCores?: TensorCoreKernels;
}

function tensorCores(k: ProjectionKernels, label: string): TensorCoreKernels {
  if (!k.tensorCores) throw new Error(`${label}: a row-scale buffer was given but the kernels have no tensor-core path`);
  return k.tensorCores;
}

/**
 * rowScale (N) ← the f16 scale of each row of x (N, K) for the tensor-core matmuls reading x: one
 * dispatch per distinct input, before the projections that read it.
 */
export function projectionRowScale(list: Dispatch[], k: ProjectionKernels, label: string, x: Tensor, rowScale: Tensor): void {
  list.push(tensorCores(k, label).rowScale.forward(`${label} row scale`, { rowScale, x }, x.shape[x.shape.length - 1]));
}

/** The matrix kernel a projection runs on (the tiled matmul, or a matrix-vector kernel for one row). */
export type LinearKernel = (label: string, call: MatmulCall) => Dispatch;

const rowsOf = (x: Tensor): number => numel(x.shape) / x.shape[x.shape.length - 1];
const viewK = (t: Tensor, rows: number, K: number): Tensor => tensorView(t.buffer, t.label, [rows, K], 'f32', t.offset);

function loraWeight(unit: ProjectionUnit): LinearWeight {
  return { format: 'f32', nOut: unit.lora!.r, k: unit.w.k, data: unit.lora!.pair.a };
}

/**
 * U = dropout(x)·Aᵀ for a targeted projection (nothing otherwise): one lora-down dispatch (mask
 * included) when the kernel is there, takes the width (loraDownTakes) and no matrix kernel is
 * given, else dropout then `linear` (default the tiled matmul; generation passes its
 * matrix-vector kernel).
 */
export function projectionDown(list: Dispatch[], k: ProjectionKernels, unit: ProjectionUnit, x: Tensor, u: Tensor | undefined, linear?: LinearKernel): void {
  if (!unit.lora || !u) return;
  const d = unit.dropout;
  if (!linear && k.loraDown && loraDownTakes(unit.w.k) && u.buffer !== x.buffer) {
    const dropout = d ? { p: d.p, salts: [d.salt] } : undefined;
    list.push(k.loraDown.forward(`${unit.label} lora_A${d ? ' (dropout)' : ''}`, { u: [u], x, a: [unit.lora.pair.a], seed: d?.seed }, { dropout }));
    return;
  }
  const lin = linear ?? k.matmul.forward.bind(k.matmul);
  let xa = x;
  if (d) {
    if (!k.dropout) throw new Error(`${unit.label}: LoRA dropout needs the dropout kernel`);
    xa = viewK(d.xDrop, rowsOf(x), unit.w.k);
    list.push(k.dropout.forward(`${unit.label} lora dropout`, { out: xa, x, seed: d.seed }, { p: d.p, salt: d.salt, accumulate: false }));
  }
  list.push(lin(`${unit.label} lora_A`, { y: u, x: xa, w: loraWeight(unit) }));
}

/**
 * U_p = dropout_p(x)·A_pᵀ for the targeted ones of `units` (projections reading the same x) in one
 * lora-down dispatch (each projection's workgroups read x, close together: mostly from L2).
 * Returns the units whose U it wrote (to be passed to `projectionForward` with uReady); none when the kernel is absent or the U buffers are
 * shared (evaluation and generation keep one U for every projection): those get their U from
 * `projectionForward` (one single-projection lora-down dispatch each, or `linear` in generation).
 */
export function projectionsDown(list: Dispatch[], k: ProjectionKernels, units: readonly ProjectionUnit[], x: Tensor, us: readonly (Tensor | undefined)[], linear?: LinearKernel): Set<ProjectionUnit> {
  const done = new Set<ProjectionUnit>();
  const group = units.map((unit, i) => ({ unit, u: us[i] })).filter((e): e is { unit: ProjectionUnit; u: Tensor } => e.unit.lora !== undefined && e.u !== undefined);
  // a caller with its own matrix kernel (generation's decode: the matrix-vector kernel) keeps lora_A
  // on it, as projectionDown does: LoraDown's workgroups own 8 rows, one row ran decode at a third
  // of its speed (H200, 2026-12-02)
  if (linear || !k.loraDown || group.length === 0 || !loraDownTakes(x.shape[x.shape.length - 1])) return done;
  const buffers = new Set([x.buffer, ...group.map((e) => e.u.buffer)]);
  if (buffers.size !== group.length + 1) return done;
  const drops = group.map((e) => e.unit.dropout);
  const d = drops[0];
  if (drops.some((o) => (o === undefined) !== (d === undefined) || (o && d && (o.p !== d.p || o.seed !== d.seed)))) return done;
  for (let i = 0; i < group.length; i += LORA_DOWN_GROUPS) {
    const part = group.slice(i, i + LORA_DOWN_GROUPS);
    // "L3 q_proj + k_proj + v_proj lora_A": the first unit's label, the others' projection names
    const names = part.map((e, j) => (j === 0 ? e.unit.label : e.unit.label.split(' ').pop()!));
    const label = `${names.join(' + ')} lora_A${d ? ' (dropout)' : ''}`;
    list.push(
      k.loraDown.forward(
        label,
        { u: part.map((e) => e.u), x, a: part.map((e) => e.unit.lora!.pair.a), seed: d?.seed },
        { dropout: d ? { p: d.p, salts: part.map((e) => e.unit.dropout!.salt) } : undefined },
      ),
    );
    for (const e of part) done.add(e.unit);
  }
  return done;
}

/** y (=|+=) x·Wᵀ (+ s·U·Bᵀ with U = dropout(x)·Aᵀ written into `u`, unless `uReady`: already there). */
export function projectionForward(
  list: Dispatch[],
  k: ProjectionKernels,
  unit: ProjectionUnit,
  io: {
    readonly y: Tensor;
    readonly x: Tensor;
    readonly u?: Tensor;
    readonly accumulate: boolean;
    readonly uReady?: boolean;
    /** (N) f32 row scales of x (projectionRowScale): the base matmul runs on tensor cores. */
    readonly rowScale?: Tensor;
  },
  linear?: LinearKernel,
): void {
  const { y, x, u, accumulate, rowScale } = io;
  // the base (and LoRA epilogue) on tensor cores when row scales are given; U = x·Aᵀ stays f32
  // (lora down, or `linear` when given: projectionDown)
  const base: LinearKernel = rowScale
    ? (label, call) => tensorCores(k, label).matmul.forward(label, { y: call.y, x: call.x, w: call.w, accumulate: call.accumulate, lora: call.lora, rowScale })
    : (linear ?? k.matmul.forward.bind(k.matmul));
  if (unit.lora && u) {
    if (!io.uReady) projectionDown(list, k, unit, x, u, linear);
    list.push(base(unit.label, { y, x, w: unit.w, accumulate, lora: { u, b: unit.lora.pair.b, scale: unit.lora.scale } }));
  } else {
    list.push(base(unit.label, { y, x, w: unit.w, accumulate }));
  }
}

/**
 * Backward given dy: dX (=|+=) dy·W, and for a targeted projection with gradients, in order
 * dB += s·dyᵀ·U;  dU = s·dy·B;  dA += dUᵀ·dropout(x);  then dX (=|+=) dy·W + mask(dU·A) in one pass.
 */
export function projectionBackward(
  list: Dispatch[],
  k: ProjectionKernels,
  unit: ProjectionUnit,
  io: {
    readonly dX: Tensor;
    readonly dy: Tensor;
    readonly x: Tensor;
    readonly u?: Tensor;
    readonly dU: Tensor;
    readonly accumulate: boolean;
    /** (N) f32 scratch for dy's row scales: dX = dy·W runs on tensor cores. */
    readonly rowScale?: Tensor;
  },
): void {
  const mb = k.matmulBackward;
  if (!mb) throw new Error(`${unit.label}: the backward needs the matmul-backward kernel`);
  const { dX, dy, x, u, dU, accumulate, rowScale } = io;
  const g = unit.grad;
  // dX (=|+=) dy·W on tensor cores: dy's row scales, then the subgroup-matrix input gradient
  const baseInput = (label: string, rs: Tensor): void => {
    const tc = tensorCores(k, unit.label);
    if (!tc.input) throw new Error(`${unit.label}: the tensor-core backward needs the subgroup-matrix input gradient (createTrainKernels)`);
    projectionRowScale(list, k, `${unit.label} dy`, dy, rs);
    list.push(...tc.input.input(label, { dx: dX, dy, rowScale: rs, w: unit.w }, { accumulate }));
  };
  if (!unit.lora || !g || !u) {
    if (rowScale) baseInput(`${unit.label} dX`, rowScale);
    else list.push(mb.input(`${unit.label} dX`, { dx: dX, dy, w: unit.w }, { accumulate }));
    return;
  }
  const s = unit.lora.scale;
  list.push(...mb.weightGrad(`${unit.label} dB`, { dw: g.b, dy, x: u }, { accumulate: true, scale: s }));
  list.push(...mb.inputSplit(`${unit.label} dU`, { dx: dU, dy, w: { format: 'f32', nOut: unit.w.nOut, k: unit.lora.r, data: unit.lora.pair.b } }, { scale: s }));
  const d = unit.dropout;
  if (d) {
    if (!k.dropout) throw new Error(`${unit.label}: LoRA dropout needs the dropout kernel`);
    const xa = viewK(d.xDrop, rowsOf(x), unit.w.k);
    list.push(k.dropout.forward(`${unit.label} lora dropout (again)`, { out: xa, x, seed: d.seed }, { p: d.p, salt: d.salt, accumulate: false }));
    list.push(...mb.weightGrad(`${unit.label} dA`, { dw: g.a, dy: dU, x: xa }, { accumulate: true }));
  } else {
    list.push(...mb.weightGrad(`${unit.label} dA`, { dw: g.a, dy: dU, x }, { accumulate: true }));
  }
  if (rowScale) {
    baseInput(`${unit.label} dX`, rowScale);
    // dX += mask(dU·A) in f32: dU (N, R) · A (R, K), through the dropout scratch and its mask with dropout
    const a = loraWeight(unit);
    if (d) {
      if (!k.dropout) throw new Error(`${unit.label}: LoRA dropout needs the dropout kernel`);
      // the dropped input's scratch is free again once dA has read it: dU·A goes there before its mask
      const dd = viewK(d.xDrop, rowsOf(x), unit.w.k);
      list.push(mb.input(`${unit.label} dX lora (before the mask)`, { dx: dd, dy: dU, w: a }));
      list.push(k.dropout.forward(`${unit.label} dX lora mask`, { out: dX, x: dd, seed: d.seed }, { p: d.p, salt: d.salt, accumulate: true }));
    } else {
      list.push(mb.input(`${unit.label} dX lora`, { dx: dX, dy: dU, w: a }, { accumulate: true }));
    }
    return;
  }
  const lora = { du: dU, a: unit.lora.pair.a, dropout: d ? { p: d.p, salt: d.salt, seed: d.seed } : undefined };
  list.push(mb.input(`${unit.label} dX + dX lora${d ? ' (masked)' : ''}`, { dx: dX, dy, w: unit.w, lora }, { accumulate }));
}
