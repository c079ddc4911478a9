import { expect } from 'vitest';

export interface Mismatch {
  /** ‖out − ref‖₂ / ‖ref‖₂ */
  relNorm: number;
  worstIndex: number;
  worstOut: number;
  worstRef: number;
  /** Elements with |out − ref| > atol + rtol·|ref|, NaN counted as bad. */
  badCount: number;
  nanCount: number;
}

export function compareArrays(out: ArrayLike<number>, ref: ArrayLike<number>, rtol: number, atol: number): Mismatch {
  if (out.length !== ref.length) throw new Error(`length ${out.length} != reference length ${ref.length}`);
  let num = 0;
  let den = 0;
  let worst = -1;
  let worstErr = -1;
  let bad = 0;
  let nans = 0;
  for (let i = 0; i < ref.length; i++) {
    const o = out[i];
    const r = ref[i];
    const err = Math.abs(o - r);
    if (!Number.isFinite(o)) nans++;
    if (!(err <= atol + rtol * Math.abs(r))) bad++;
    const e = Number.isFinite(err) ? err : Infinity;
    if (e > worstErr) {
      worstErr = e;
      worst = i;
    }
    num += Number.isFinite(err) ? err * err : Infinity;
    den += r * r;
  }
  return {
    relNorm: Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-300),
    worstIndex: worst,
    worstOut: out[worst],
    worstRef: ref[worst],
    badCount: bad,
    nanCount: nans,
  };
}

/**
 * Element-wise check |out − ref| ≤ atol + rtol·|ref| for every element; a failure message names
 * the worst index, both values and how many elements are off.
 */
export function expectClose(what: string, out: ArrayLike<number>, ref: ArrayLike<number>, rtol: number, atol: number): void {
  const m = compareArrays(out, ref, rtol, atol);
  const msg =
    `${what}: ${m.badCount} of ${ref.length} elements off (${m.nanCount} NaN/inf); worst at [${m.worstIndex}]: ` +
    `got ${m.worstOut}, expected ${m.worstRef}; relative norm error ${m.relNorm.toExponential(3)}`;
  expect(m.badCount, msg).toBe(0);
}

/** Norm-relative check ‖out − ref‖ / ‖ref‖ ≤ tol (the fixtures' criterion), also refusing any NaN. */
export function expectRelNorm(what: string, out: ArrayLike<number>, ref: ArrayLike<number>, tol: number): void {
  const m = compareArrays(out, ref, 0, 0);
  const msg = `${what}: relative norm error ${m.relNorm.toExponential(3)} > ${tol}; worst at [${m.worstIndex}]: got ${m.worstOut}, expected ${m.worstRef}; ${m.nanCount} NaN/inf`;
  expect(m.nanCount, msg).toBe(0);
  expect(m.relNorm, msg).toBeLessThanOrEqual(tol);
}

/** The quiet-NaN bit pattern used to poison output buffers before a kernel writes them. */
export const NAN_WORD = 0x7fc00000;
