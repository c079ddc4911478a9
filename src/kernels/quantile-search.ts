/**
 * bitsandbytes' search of a sorted 256-entry code (a quantile map) for the code nearest x — the one
 * routine behind its blockwise quantiser `dQuantize<0>` (NF4 double quantisation of the absmax, in
 * `nf4DoubleQuantizeRef`) and its 8-bit optimiser's `quantize_2D` (the AdamW8bit states, in
 * `adamw8bitRef`). Both walk a binary search from code 127 in steps 64, 32, …, 1, keeping the
 * bracketing codes, then return the nearer of `pivot` and the bracket on x's side, decided against
 * the f32 midpoint (upper + val)·0.5 or (lower + val)·0.5 as the CUDA code computes it.
 *
 * They differ in two places, passed here:
 *  1. `lower`: the bracket's value below the map before any step went up: −1 for a signed map, 0
 *     for an unsigned one (quantize_2D); dQuantize starts from −1.
 *  2. `clampEdges`: dQuantize replaces an untouched bracket by the map's end value (map[255] above,
 *     map[0] below) before the midpoint test; quantize_2D keeps ±1 / 0.
 */
export function quantileSearch(code: ArrayLike<number>, x: number, lower: number, clampEdges: boolean): number {
  let pivot = 127;
  let upperPivot = 255;
  let lowerPivot = 0;
  let upper = 1;
  let val = code[pivot];
  for (let i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (clampEdges) {
    if (upperPivot === 255) upper = code[255];
    if (lowerPivot === 0) lower = code[0];
  }
  if (x > val) return x > Math.fround(Math.fround(upper + val) * 0.5) ? upperPivot : pivot;
  return x < Math.fround(Math.fround(lower + val) * 0.5) ? lowerPivot : pivot;
}
