import type { Dispatch } from '../kernels/dispatch.js';
import type { Dropout } from '../kernels/dropout.js';
import type { LinearWeight, Matmul, MatmulCall } from '../kernels/matmul.js';
import type { MatmulBackward } from '../kernels/matmul-backward.js';
import { numel, tensorView, type Tensor } from '../kernels/tensor.js';
import type { LoraPair } from './lora.js';

/**
 * One projection of a decoder layer as a unit: the frozen base weight W and, when the projection
 * is targeted, its LoRA pair (A, B) with scale s:
 *
 *   forward   U = dropout(x)·Aᵀ;  y (=|+=) x·Wᵀ + s·U·Bᵀ        (U kept for the backward)
 *   backward  dX (=|+=) dy·W;  dB += s·dyᵀ·U;  dU = s·dy·B;  dA += dUᵀ·dropout(x);  dX += mask(dU·A)
 *
 * The dropout mask is regenerated in the backward from the micro-batch's seed and a per-projection
 * salt, never stored. Without dropout the LoRA input is x itself.
 */
export interface ProjectionUnit {
  /** Dispatch label, e.g. "L3 q_proj" or "layer 3 q_proj". */
  readonly label: string;
  readonly w: LinearWeight;
  /** The LoRA pair and scale, when this projection is targeted. */
  readonly lora?: { readonly pair: LoraPair; readonly scale: number; readonly r: number };
  /** Gradient buffers of the pair (training only). */
  readonly grad?: LoraPair;
  /** LoRA dropout (training only): p, seed, salt and the (N, max K) scratch for the dropped input and dU·A. */
  readonly dropout?: ProjectionDropout;
}

export interface ProjectionDropout {
  readonly p: number;
  readonly salt: number;
  readonly seed: Tensor;
  /** (N, ≥ K) f32 — the dropped input. */
  readonly xDrop: Tensor;
  /** (N, ≥ K) f32 — dU·A before its mask. */
  readonly dDrop: Tensor;
}

export interface ProjectionKernels {
  readonly matmul: Matmul;
  readonly matmulBackward?: MatmulBackward;
  readonly dropout?: Dropout;
}

/** The matrix kernel a projection runs on (the tiled matmul, or a matrix-vector kernel for one row). */
export type LinearKernel = (label: string, call: MatmulCall) => Dispatch;

const rowsOf = (x: Tensor): number => numel(x.shape) / x.shape[x.shape.length - 1];
const viewK = (t: Tensor, rows: number, K: number): Tensor => tensorView(t.buffer, t.label, [rows, K], 'f32', t.offset);

function loraWeight(unit: ProjectionUnit): LinearWeight {
  return { format: 'f32', nOut: unit.lora!.r, k: unit.w.k, data: unit.lora!.pair.a };
}

/** U = dropout(x)·Aᵀ for a targeted projection (nothing otherwise). */
export function projectionDown(list: Dispatch[], k: ProjectionKernels, unit: ProjectionUnit, x: Tensor, u: Tensor | undefined, linear: LinearKernel = k.matmul.forward.bind(k.matmul)): void {
  if (!unit.lora || !u) return;
  let xa = x;
  const d = unit.dropout;
  if (d) {
    if (!k.dropout) throw new Error(`${unit.label}: LoRA dropout needs the dropout kernel`);
    xa = viewK(d.xDrop, rowsOf(x), unit.w.k);
    list.push(k.dropout.forward(`${unit.label} lora dropout`, { out: xa, x, seed: d.seed }, { p: d.p, salt: d.salt, accumulate: false }));
  }
  list.push(linear(`${unit.label} lora_A`, { y: u, x: xa, w: loraWeight(unit) }));
}

/** y (=|+=) x·Wᵀ (+ s·U·Bᵀ with U = dropout(x)·Aᵀ written into `u`). */
export function projectionForward(
  list: Dispatch[],
  k: ProjectionKernels,
  unit: ProjectionUnit,
  io: { readonly y: Tensor; readonly x: Tensor; readonly u?: Tensor; readonly accumulate: boolean },
  linear: LinearKernel = k.matmul.forward.bind(k.matmul),
): void {
  const { y, x, u, accumulate } = io;
  if (unit.lora && u) {
    projectionDown(list, k, unit, x, u, linear);
    list.push(linear(unit.label, { y, x, w: unit.w, accumulate, lora: { u, b: unit.lora.pair.b, scale: unit.lora.scale } }));
  } else {
    list.push(linear(unit.label, { y, x, w: unit.w, accumulate }));
  }
}

/**
 * Backward given dy: dX (=|+=) dy·W, and for a targeted projection with gradients
 * dB += s·dyᵀ·U;  dU = s·dy·B;  dA += dUᵀ·dropout(x);  dX += mask(dU·A).
 */
export function projectionBackward(
  list: Dispatch[],
  k: ProjectionKernels,
  unit: ProjectionUnit,
  io: { readonly dX: Tensor; readonly dy: Tensor; readonly x: Tensor; readonly u?: Tensor; readonly dU: Tensor; readonly accumulate: boolean },
): void {
  const mb = k.matmulBackward;
  if (!mb) throw new Error(`${unit.label}: the backward needs the matmul-backward kernel`);
  const { dX, dy, x, u, dU, accumulate } = io;
  list.push(mb.input(`${unit.label} dX`, { dx: dX, dy, w: unit.w }, { accumulate }));
  const g = unit.grad;
  if (!unit.lora || !g || !u) return;
  const s = unit.lora.scale;
  list.push(...mb.weightGrad(`${unit.label} dB`, { dw: g.b, dy, x: u }, { accumulate: true, scale: s }));
  list.push(...mb.inputSplit(`${unit.label} dU`, { dx: dU, dy, w: { format: 'f32', nOut: unit.w.nOut, k: unit.lora.r, data: unit.lora.pair.b } }, { scale: s }));
  const aw = loraWeight(unit);
  const d = unit.dropout;
  if (d) {
    if (!k.dropout) throw new Error(`${unit.label}: LoRA dropout needs the dropout kernel`);
    const N = rowsOf(x);
    const xa = viewK(d.xDrop, N, unit.w.k);
    const dd = viewK(d.dDrop, N, unit.w.k);
    list.push(k.dropout.forward(`${unit.label} lora dropout (again)`, { out: xa, x, seed: d.seed }, { p: d.p, salt: d.salt, accumulate: false }));
    list.push(...mb.weightGrad(`${unit.label} dA`, { dw: g.a, dy: dU, x: xa }, { accumulate: true }));
    list.push(mb.input(`${unit.label} dU·A`, { dx: dd, dy: dU, w: aw }));
    list.push(k.dropout.forward(`${unit.label} dX lora (masked)`, { out: dX, x: dd, seed: d.seed }, { p: d.p, salt: d.salt, accumulate: true }));
  } else {
    list.push(...mb.weightGrad(`${unit.label} dA`, { dw: g.a, dy: dU, x }, { accumulate: true }));
    list.push(mb.input(`${unit.label} dX lora`, { dx: dX, dy: dU, w: aw }, { accumulate: true }));
  }
}
