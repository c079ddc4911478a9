import { dropoutRef } from './dropout.js';
import { matmulRef } from './matmul.js';

/**
 * float64 references of the matmul backward (src/kernels/matmul-backward.ts): the input and
 * weight gradients, the input gradient with the LoRA term of the same pass, and the whole LoRA
 * linear layer's forward and backward. Plain loops; they are the spec the kernels are tested
 * against, and tests/kernels/matmul-backward.test.ts and lora-fused.test.ts check them against
 * central differences.
 */

/** float64 reference: dx (m, k) = dx0 + scale · dy (m, n) · w (n, k), w the dense weight. */
export function matmulInputGradRef(
  dy: ArrayLike<number>,
  w: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  scale = 1,
  dx0?: ArrayLike<number>,
): Float64Array {
  const dx = new Float64Array(m * k);
  for (let i = 0; i < m; i++) {
    for (let c = 0; c < k; c++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += dy[i * n + j] * w[j * k + c];
      dx[i * k + c] = (dx0 ? dx0[i * k + c] : 0) + scale * s;
    }
  }
  return dx;
}

/** float64 reference: dw (n, k) = dw0 + scale · dyᵀ (n, m) · x (m, k). */
export function matmulWeightGradRef(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  scale = 1,
  dw0?: ArrayLike<number>,
): Float64Array {
  const dw = new Float64Array(n * k);
  for (let j = 0; j < n; j++) {
    for (let c = 0; c < k; c++) {
      let s = 0;
      for (let i = 0; i < m; i++) s += dy[i * n + j] * x[i * k + c];
      dw[j * k + c] = (dw0 ? dw0[j * k + c] : 0) + scale * s;
    }
  }
  return dw;
}

/** Sizes of a LoRA linear layer: M tokens, K in, Nout out, rank R. */
export interface LoraDims {
  m: number;
  k: number;
  nOut: number;
  r: number;
}

/** float64 reference: y (M, Nout) = x · Wᵀ + s · (x · Aᵀ) · Bᵀ, W (Nout, K), A (R, K), B (Nout, R). */
export function loraLinearForwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: LoraDims,
  s: number,
): Float64Array {
  const y = matmulRef(x, w, d.m, d.nOut, d.k);
  const u = matmulRef(x, a, d.m, d.r, d.k);
  const ub = matmulRef(u, b, d.m, d.nOut, d.r);
  for (let i = 0; i < y.length; i++) y[i] += s * ub[i];
  return y;
}

/**
 * float64 reference of the LoRA linear backward, given dy (M, Nout):
 *   1. U  = x · Aᵀ                (M, R)
 *   2. dB = s · dyᵀ · U           (Nout, R)
 *   3. dU = s · dy · B            (M, R)
 *   4. dA = dUᵀ · x               (R, K)
 *   5. dx = dy · W + dU · A       (M, K)
 */
export function loraLinearBackwardRef(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: LoraDims,
  s: number,
): { dx: Float64Array; dA: Float64Array; dB: Float64Array } {
  const u = matmulRef(x, a, d.m, d.r, d.k);
  const dB = matmulWeightGradRef(dy, u, d.m, d.nOut, d.r, s);
  const dU = matmulInputGradRef(dy, b, d.m, d.nOut, d.r, s);
  const dA = matmulWeightGradRef(dU, x, d.m, d.r, d.k);
  const dx = matmulInputGradRef(dU, a, d.m, d.r, d.k, 1, matmulInputGradRef(dy, w, d.m, d.nOut, d.k));
  return { dx, dA, dB };
}


/**
 * float64 reference of `input` with the LoRA term:
 *   dx (m, k) = dx0 + dy (m, n) · w (n, k) + mask(du (m, r) · a (r, k)),
 * mask the LoRA dropout of (p, seed, salt) (dropoutRef: kept elements times 1 / (1 − p)); none
 * without `dropout`.
 */
export function matmulInputGradLoraRef(
  dy: ArrayLike<number>,
  w: ArrayLike<number>,
  du: ArrayLike<number>,
  a: ArrayLike<number>,
  d: { readonly m: number; readonly n: number; readonly k: number; readonly r: number },
  dropout?: { readonly p: number; readonly seed: number; readonly salt: number },
  dx0?: ArrayLike<number>,
): Float64Array {
  const base = matmulInputGradRef(dy, w, d.m, d.n, d.k, 1, dx0);
  const dua = matmulInputGradRef(du, a, d.m, d.r, d.k);
  const lora = dropout ? dropoutRef(dua, dropout.p, dropout.seed, dropout.salt) : dua;
  return base.map((v, i) => v + lora[i]);
}
