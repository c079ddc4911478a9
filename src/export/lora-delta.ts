/**
 * The LoRA term of a chunk not yet added (chunks(…, {deferDelta: true})): values += scale · b·a,
 * a (R, K) f32, b (rows, R) f32 — the chunk's rows of B. applyLoraDelta adds it; the quantiser
 * workers add it in parallel.
 */
export interface LoraDelta {
  readonly a: Float32Array;
  readonly b: Float32Array;
  readonly r: number;
  readonly scale: number;
}

/**
 * values[o, k] += scale · Σ_r b[o, r] · a[r, k] for the chunk's rows (b holds just those rows),
 * summed in float64 and rounded once to f32 together with W.
 */
export function applyLoraDelta(values: Float32Array, delta: LoraDelta): void {
  const { a, b, r, scale } = delta;
  const k = a.length / r;
  const rows = values.length / k;
  const acc = new Float64Array(k);
  for (let o = 0; o < rows; o++) {
    acc.fill(0);
    for (let j = 0; j < r; j++) {
      const coef = b[o * r + j];
      if (coef === 0) continue;
      const aRow = j * k;
      for (let i = 0; i < k; i++) acc[i] += coef * a[aRow + i];
    }
    const base = o * k;
    for (let i = 0; i < k; i++) values[base + i] = values[base + i] + scale * acc[i];
  }
}
