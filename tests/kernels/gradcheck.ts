import { expect } from 'vitest';
import { Rng } from '../helpers/random.js';

/**
 * Finite-difference checks of backward references, all in float64. A backward reference claims
 * dX = ∂L/∂X for the scalar L = Σ dY ⊙ f(X) with a random dY; `numericGradient` measures ∂L/∂X by
 * central differences of the forward reference, and `expectGradient` compares the two.
 *
 * Typical use (one input of several: close over the others):
 *
 *   const loss = weightedSum(dy, (g) => swigluForwardRef(g, u));
 *   expectGradient('dgate', loss, gate, swigluBackwardRef(dy, gate, u).dgate);
 *
 * Error of a central difference with step h: truncation h²·|f'''|/6 plus rounding ≈ ε·|L|/h
 * (ε = 2⁻⁵³). The default h = 1e-5·max(1, |x_i|) keeps both near 1e-10 relative for smooth
 * functions of O(1) inputs, so a tolerance of 1e-6 separates a correct derivative from a wrong one
 * by several orders of magnitude. Functions with kinks (relu, max) need points away from the kink.
 */

/** L(x) = Σ_i dy[i] · f(x)[i]: the scalar whose gradient is the vector-Jacobian product dyᵀ·∂f/∂x. */
export function weightedSum(dy: ArrayLike<number>, f: (x: Float64Array) => ArrayLike<number>): (x: Float64Array) => number {
  return (x) => {
    const y = f(x);
    if (y.length !== dy.length) throw new Error(`weightedSum: f(x) has ${y.length} elements but dy has ${dy.length}`);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += dy[i] * y[i];
    return s;
  };
}

export interface NumericGradientOptions {
  /** Relative step: x_i moves by ±h·max(1, |x_i|). Default 1e-5. */
  h?: number;
  /** Indices to differentiate (default: all). */
  indices?: readonly number[];
}

/**
 * Central differences (L(x + h·e_i) − L(x − h·e_i)) / 2h for each index i (of `indices`, or all),
 * in float64. Returns one value per index, in the order of `indices`.
 */
export function numericGradient(loss: (x: Float64Array) => number, x: ArrayLike<number>, options: NumericGradientOptions = {}): Float64Array {
  const h = options.h ?? 1e-5;
  const at = Float64Array.from(x);
  const indices = options.indices ?? Array.from({ length: at.length }, (_, i) => i);
  const out = new Float64Array(indices.length);
  indices.forEach((i, k) => {
    const x0 = at[i];
    const step = h * Math.max(1, Math.abs(x0));
    at[i] = x0 + step;
    const lp = loss(at);
    at[i] = x0 - step;
    const lm = loss(at);
    at[i] = x0;
    out[k] = (lp - lm) / (2 * step);
  });
  return out;
}

/** Up to `count` distinct indices of [0, n), seeded and sorted (all of them when n ≤ count). */
export function sampleIndices(n: number, count: number, seed = 1): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  const rng = new Rng(seed);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(rng.int(0, n));
  return [...picked].sort((a, b) => a - b);
}

export interface GradientCheck {
  /** Indices compared. */
  indices: number[];
  numeric: Float64Array;
  /** The analytic gradient at `indices`. */
  analytic: Float64Array;
  /** max_i |numeric − analytic| / (atol + rtol·max(|numeric|, |analytic|)); ≤ 1 passes. */
  worstRatio: number;
  worstIndex: number;
}

export interface GradientCheckOptions extends NumericGradientOptions {
  /** Default 1e-6 (see the header: the difference error is ~1e-10 relative). */
  rtol?: number;
  /** Default 1e-9, for derivatives that are ~0. */
  atol?: number;
  /** Most indices to differentiate when `indices` is not given (seeded sample); default 64. */
  samples?: number;
  seed?: number;
}

/** Compares `analytic` (the full gradient, one value per element of x) with central differences. */
export function checkGradient(
  loss: (x: Float64Array) => number,
  x: ArrayLike<number>,
  analytic: ArrayLike<number>,
  options: GradientCheckOptions = {},
): GradientCheck {
  if (analytic.length !== x.length) throw new Error(`checkGradient: gradient has ${analytic.length} elements but x has ${x.length}`);
  const rtol = options.rtol ?? 1e-6;
  const atol = options.atol ?? 1e-9;
  const indices = [...(options.indices ?? sampleIndices(x.length, options.samples ?? 64, options.seed))];
  const numeric = numericGradient(loss, x, { h: options.h, indices });
  const picked = Float64Array.from(indices, (i) => analytic[i]);
  let worstRatio = 0;
  let worstIndex = indices[0] ?? -1;
  indices.forEach((i, k) => {
    const err = Math.abs(numeric[k] - picked[k]);
    const ratio = err / (atol + rtol * Math.max(Math.abs(numeric[k]), Math.abs(picked[k])));
    if (!(ratio <= worstRatio)) {
      worstRatio = Number.isNaN(ratio) ? Infinity : ratio;
      worstIndex = i;
    }
  });
  return { indices, numeric, analytic: picked, worstRatio, worstIndex };
}

/** `checkGradient` as a vitest assertion; a failure names the worst index and both values. */
export function expectGradient(
  what: string,
  loss: (x: Float64Array) => number,
  x: ArrayLike<number>,
  analytic: ArrayLike<number>,
  options: GradientCheckOptions = {},
): GradientCheck {
  const c = checkGradient(loss, x, analytic, options);
  const k = c.indices.indexOf(c.worstIndex);
  const msg =
    `${what}: analytic gradient disagrees with central differences at [${c.worstIndex}]: ` +
    `analytic ${c.analytic[k]}, numeric ${c.numeric[k]} (error ${c.worstRatio.toPrecision(3)}× the tolerance; ${c.indices.length} indices checked)`;
  expect(c.worstRatio, msg).toBeLessThanOrEqual(1);
  return c;
}
