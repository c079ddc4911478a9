import { beforeAll, describe, expect, it } from 'vitest';
import {
  matmulSgmRef,
  MatmulSgm,
  parseSgmTile,
  pickSgmTile,
  waveFill,
  roundToF16,
  SGM_DEFAULT_TILES,
  SGM_FORWARD_PREFETCH,
  SGM_TILES,
  sgmRelBound,
  sgmTileName,
  sgmStagingItems,
  sgmTileProblems,
  sgmTileRows,
  sgmTileWorkgroupBytes,
  sgmUnsupportedReason,
  type SgmTile,
} from '../../src/kernels/matmul-sgm.js';
import { accumulateRef, loraEpilogueRef, type StoredFormat } from '../../src/kernels/matmul.js';
import { RowScale, rowScaleRef } from '../../src/kernels/row-scale.js';
import type { Tensor } from '../../src/kernels/tensor.js';
import { NF4_CODEBOOK } from '../../src/kernels/nf4.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { DeviceError, ShapeError } from '../../src/errors.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { makeTestWeight } from '../helpers/weights.js';

// Pure TypeScript: runs everywhere (lavapipe, CI).
describe('subgroup-matrix matmul: reference, rounding, tiles', () => {
  it('roundToF16 follows IEEE binary16 (ties to even, overflow, subnormals)', () => {
    expect(roundToF16(1 + 2 ** -11)).toBe(1); // tie between 1 and 1 + 2^-10: even mantissa
    expect(roundToF16(1 + 3 * 2 ** -11)).toBe(1 + 2 ** -9); // tie: rounds up to the even one
    expect(roundToF16(1 + 2 ** -11 + 2 ** -20)).toBe(1 + 2 ** -10);
    expect(roundToF16(65504)).toBe(65504);
    expect(roundToF16(65519)).toBe(65504);
    expect(roundToF16(65520)).toBe(Infinity);
    expect(roundToF16(-(2 ** -24))).toBe(-(2 ** -24)); // smallest subnormal
    expect(roundToF16(2 ** -26)).toBe(0);
    expect(roundToF16(0.1)).toBe(0.0999755859375); // 0x2e66
    const rng = new Rng(3);
    for (let i = 0; i < 1000; i++) {
      const v = rng.normal() * 10 ** rng.int(-4, 4);
      expect(Math.abs(roundToF16(v) - v)).toBeLessThanOrEqual(Math.max(Math.abs(v) * 2 ** -11, 2 ** -25));
    }
  });

  it('matmulSgmRef computes y = x·wᵀ and Σ|x·w| (checked on a hand-worked case)', () => {
    // x (2×3), w (2×3): y[0][0] = 1·4 − 2·5 + 3·6 = 12, Σ| | = 4 + 10 + 18 = 32
    const { y, abs } = matmulSgmRef([1, -2, 3, 0, 1, 0], [4, 5, 6, -1, 0, 2], 2, 2, 3);
    expect(Array.from(y)).toEqual([12, 5, 5, 0]);
    expect(Array.from(abs)).toEqual([32, 7, 5, 0]);
  });

  it('the f16 error bound covers the operand roundings it names, and no more than a few of them', () => {
    // one x and one NF4 weight element rounded the way the shader rounds them
    const rng = new Rng(11);
    let worst = 0;
    for (let i = 0; i < 10000; i++) {
      const x = rng.normal();
      const cb = NF4_CODEBOOK[rng.int(0, 16)] || 1; // the zero code is exact

      const s = rng.uniform(0.005, 0.1);
      const got = roundToF16(x) * roundToF16(roundToF16(cb) * roundToF16(s));
      worst = Math.max(worst, Math.abs(got - x * cb * s) / Math.abs(x * cb * s));
    }
    expect(worst).toBeLessThanOrEqual(sgmRelBound('nf4', 0));
    expect(worst).toBeGreaterThan(sgmRelBound('nf4', 0) / 4);
    expect(sgmRelBound('bf16', 64)).toBeLessThan(sgmRelBound('nf4', 64));
  });

  it('tiles: names round-trip, limits are enforced, and each projection shape gets enough workgroups', () => {
    for (const t of SGM_DEFAULT_TILES) {
      expect(parseSgmTile(sgmTileName(t))).toEqual(t);
      expect(sgmTileProblems(t, 49152, 256)).toEqual([]);
    }
    expect(() => parseSgmTile('256x64x32/8x1sg/2x8f')).toThrow(/make 256x128/);
    expect(() => parseSgmTile('256x128')).toThrow(/expected BMxBNxBK/);
    expect(sgmTileProblems({ sgM: 8, sgN: 1, fm: 2, fn: 8, bk: 64 }, 49152, 256).join()).toMatch(/staged halves/);
    expect(sgmTileProblems(SGM_TILES.tall, 49152, 256)).toEqual([]);
    expect(sgmTileProblems(SGM_TILES.large, 32768, 256).join()).toMatch(/workgroup memory/);
    expect(sgmTileProblems({ sgM: 1, sgN: 1, fm: 4, fn: 8, bk: 16 }, 49152, 256).join()).toMatch(/at most 2 and 8.*bk = 16/s);
    expect(sgmTileWorkgroupBytes()).toBeLessThanOrEqual(49152);
    // unrolled staging: at most 8 items each; one subgroup of 2 × 8 with bk 64 needs 16 X and 32 W items
    expect(sgmStagingItems(SGM_TILES.tall)).toEqual({ x: 8, w: 2 });
    expect(sgmTileProblems({ sgM: 1, sgN: 1, fm: 2, fn: 8, bk: 64 }, 49152, 256).join()).toMatch(/16 \(X\) and 32 \(W\)/);
    expect(sgmTileProblems({ sgM: 1, sgN: 1, fm: 2, fn: 8, bk: 64 }, 49152, 256, 'loop')).toEqual([]);
    // Qwen3-4B at 2048 tokens on 132 SMs: 256 × 128 where its workgroups fill ≥ 85 % of their waves
    // (q: 256, fill 0.97; gate/up: 608, 0.92), 256 × 80 at o/down (tall: 160 = 1.2 waves, fill
    // 0.61; tall80: 256, 0.97), 256 × 64 at k/v (tall: 64; tall80: 104, 0.79; tall64: 128, 0.97);
    // at 8192 tokens (B16) tall everywhere; small outputs: the tile making the most workgroups
    const pick = (m: number, n: number) => pickSgmTile(SGM_DEFAULT_TILES, m, n);
    expect(sgmTileRows(SGM_TILES.tall)).toEqual({ bm: 256, bn: 128 });
    expect(sgmTileRows(SGM_TILES.tall80)).toEqual({ bm: 256, bn: 80 });
    for (const n of [9728, 4096]) expect(pick(2048, n)).toBe(SGM_TILES.tall);
    expect(pick(2048, 2560)).toBe(SGM_TILES.tall80);
    expect(pick(2048, 1024)).toBe(SGM_TILES.tall64);
    for (const n of [9728, 4096, 2560, 1024]) expect(pick(8192, n)).toBe(SGM_TILES.tall);
    expect(pick(256, 512)).toBe(SGM_TILES.tiny);
    expect(pick(128, 4096)).toBe(SGM_TILES.tiny);
    expect(pickSgmTile([SGM_TILES.large], 16, 16)).toBe(SGM_TILES.large);
    // the RTX 4090's 128 SMs pick the same
    for (const [m, n] of [[2048, 9728], [2048, 4096], [2048, 2560], [2048, 1024], [8192, 2560]] as const) expect(pickSgmTile(SGM_DEFAULT_TILES, m, n, 128)).toBe(pick(m, n));
    expect(waveFill(160, 132)).toBeCloseTo(160 / 264, 12);
    expect(waveFill(264, 132)).toBe(1);
  });
});

const gpu: Gpu = await testGpu();
const unsupported = sgmUnsupportedReason(gpu);
if (unsupported) console.log(`SKIP subgroup-matrix GPU tests: ${unsupported}`);

describe.skipIf(unsupported === undefined)('subgroup-matrix matmul where the adapter lacks it', () => {
  it('MatmulSgm.create refuses with the reason', async () => {
    await expect(MatmulSgm.create(gpu)).rejects.toThrow(DeviceError);
    await expect(MatmulSgm.create(gpu)).rejects.toThrow(/use the f32 Matmul/);
  });
});

/** A weight of `format` on the GPU and its dense float64 values. */
/** A random weight of `format` on this file's GPU and its dense float64 values (tests/helpers/weights.ts). */
const makeWeight = (rng: Rng, format: StoredFormat, n: number, k: number): ReturnType<typeof makeTestWeight> => makeTestWeight(gpu, rng, format, n, k);

/**
 * Activations for the f16-range proof (issue 11 item 4), by row i % 6: ordinary N(0, 1); N(0, 1)
 * with outliers of 1e5 and ±5e4 (f16 overflows past 65504); all large, N(0, 1)·3e4 clipped to
 * ±1e5; tiny gradients N(0, 1)·1e-10 (below f16's smallest subnormal, 6e-8); magnitudes spread
 * over 1e-10 .. 1e-6; one 1e5 outlier among values of 1e-3. `mag` is each row's typical size, for
 * U and Y's old values in the same row (U = X·Aᵀ, a residual row grows with its activations).
 */
function makeActivations(rng: Rng, m: number, k: number): { xv: Float32Array; mag: Float64Array } {
  const xv = new Float32Array(m * k);
  const mag = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    const row = xv.subarray(i * k, (i + 1) * k);
    const kind = i % 6;
    for (let j = 0; j < k; j++) row[j] = rng.normal();
    const at = rng.int(0, k);
    mag[i] = [1, 1, 3e4, 1e-10, 1e-8, 1][kind];
    if (kind === 1) {
      row[at] = -1e5;
      row[(at + 7) % k] = 5e4;
    } else if (kind === 2) {
      for (let j = 0; j < k; j++) row[j] = Math.max(-1e5, Math.min(1e5, row[j] * 3e4));
      row[at] = 1e5;
    } else if (kind === 3) {
      for (let j = 0; j < k; j++) row[j] *= 1e-10;
    } else if (kind === 4) {
      for (let j = 0; j < k; j++) row[j] = Math.sign(row[j]) * 10 ** rng.uniform(-10, -6);
    } else if (kind === 5) {
      for (let j = 0; j < k; j++) row[j] *= 1e-3;
      row[at] = 1e5;
    }
  }
  return { xv, mag };
}

/**
 * The per-element tolerance: sgmRelBound(format, K)·Σ_k|x_k·w_k| (f16 unit roundoff 2^-11 for
 * each f16 operand rounding — x·s once, the weight once or, NF4, three times — plus the f32
 * accumulation over K; the scaling by powers of two is exact) + the LoRA term's (`loraTolerance`)
 * + 4·2^-24 of |y0| + Σ|x·w| + |scale|·Σ|u·b| (the two epilogue additions and the final rounding)
 * + `sub` (f16's subnormal range, below 2^-14, has an absolute spacing of 2^-24, so a relative bound
 * does not hold there: a weight under 6.1e-5 — a few in a thousand of these random f32/bf16 weights —
 * is off by up to 2^-25 whatever its size, which a 1e5 activation turns into 3e-3; see subnormalTerm).
 */
function tolerance(format: StoredFormat, k: number, xw: Float64Array, lora: LoraTolerance | undefined, y0: ArrayLike<number> | undefined, sub?: Float64Array): Float64Array {
  const bound = sgmRelBound(format, k);
  return xw.map((a, i) => {
    const l = lora ? lora.magnitude[i] : 0;
    return bound * a + (sub ? sub[i] : 0) + (lora ? lora.error[i] : 0) + 4 * 2 ** -24 * ((y0 ? Math.abs(y0[i]) : 0) + a + l);
  });
}

interface LoraTolerance {
  /** |scale|·Σ_q|u_q·b_q| per output */
  readonly magnitude: Float64Array;
  /** the LoRA term's own error bound per output */
  readonly error: Float64Array;
}

/**
 * The LoRA term's error bound per output (m, n). Its f32 sum (r > the tile's K step): (r + 4)·2^-24
 * of |scale|·Σ_q|u_q·b_q| (r roundings of partial sums and the scale multiply). On the tensor
 * cores (r ≤ the K step: shaders/matmul_sgm_forward.wgsl): u·s_u and b·s_b rounded to f16, each row
 * with its own power-of-two scale (rowScaleRef's rule), adds 2·2^-11 + 2^-22 relative where they
 * are normal and, below 2^-14, 2^-25 absolute in scaled units — 2^-25·(Σ_q|b_q| / s_u[m] +
 * Σ_q|u_q| / s_b[n]) in real ones.
 */
function loraTolerance(uv: Float32Array, bv: Float32Array, m: number, n: number, r: number, scale: number, onTensorCores: boolean): LoraTolerance {
  const magnitude = matmulSgmRef(uv, bv, m, n, r).abs.map((v) => Math.abs(scale) * v);
  const su = rowScaleRef(uv, m, r);
  const sb = rowScaleRef(bv, n, r);
  const rowAbs = (v: Float32Array, rows: number): Float64Array => Float64Array.from({ length: rows }, (_, i) => v.subarray(i * r, (i + 1) * r).reduce((acc, x) => acc + Math.abs(x), 0));
  const uAbs = rowAbs(uv, m);
  const bAbs = rowAbs(bv, n);
  const error = magnitude.map((l, i) => {
    const f32 = (r + 4) * 2 ** -24 * l;
    if (!onTensorCores) return f32;
    const [row, col] = [Math.floor(i / n), i % n];
    return f32 + (2 * 2 ** -11 + 2 ** -22) * l + Math.abs(scale) * 2 ** -25 * (1 + 2 ** -10) * (bAbs[col] / su[row] + uAbs[row] / sb[col]);
  });
  return { magnitude, error };
}

/**
 * The absolute error of f16's subnormal range, per output (m, n): 2^-25·(Σ_k|x_mk| + Σ_k|w_nk| / s_m)
 * — a weight rounded in the subnormal range is off by at most 2^-25 (times |x|), and so is a scaled
 * activation x·s_m (times |w|, undone by 1/s_m).
 */
function subnormalTerm(xv: ArrayLike<number>, dense: ArrayLike<number>, scales: ArrayLike<number>, m: number, n: number, k: number): Float64Array {
  const ax = new Float64Array(m);
  const aw = new Float64Array(n);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) ax[i] += Math.abs(xv[i * k + j]);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) aw[i] += Math.abs(dense[i * k + j]);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[i * n + j] = 2 ** -25 * (ax[i] + aw[j] / scales[i]);
  return out;
}

/**
 * Every output of the rows not in `skipRows` within `allowed` of the float64 reference (a NaN
 * fails), and the tolerance not vacuous: in each row its sum is under a tenth of Σ|ref|. Returns
 * the worst error as a fraction of its tolerance; a failure names the index, both values, the count.
 */
function expectWithin(what: string, out: Float32Array, ref: Float64Array, allowed: Float64Array, n: number, skipRows: ReadonlySet<number> = new Set()): number {
  let bad = 0;
  let first = -1;
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    if (skipRows.has(Math.floor(i / n))) continue;
    const err = Math.abs(out[i] - ref[i]);
    if (!(err <= allowed[i] + 1e-37)) {
      bad++;
      if (first < 0) first = i;
    } else {
      worst = Math.max(worst, err / (allowed[i] + 1e-37));
    }
  }
  if (bad > 0) {
    throw new Error(`${what}: ${bad} outputs off; first [${Math.floor(first / n)}, ${first % n}] is ${out[first]}, reference ${ref[first]}, allowed ±${allowed[first]}`);
  }
  for (let row = 0; row < ref.length / n; row++) {
    if (skipRows.has(row)) continue;
    let tol = 0;
    let mag = 0;
    for (let j = 0; j < n; j++) {
      tol += allowed[row * n + j];
      mag += Math.abs(ref[row * n + j]);
    }
    expect(tol, `${what}: row ${row}'s tolerance ${tol} against Σ|ref| ${mag}`).toBeLessThan(mag / 10);
  }
  return worst;
}

// [M, N, K]: M and N not multiples of any tile (edge workgroups next to interior ones), K a
// multiple of 64 but not of every tile's 2·BK
/**
 * M, N, K and the LoRA rank: 8 and 5 (padded to 16) take the LoRA term on the tensor cores; 36 too on
 * tiles with K steps of 64, and the f32 loop with vec4 loads (r % 4 == 0) on those of 32.
 */
const SIZES: readonly (readonly [number, number, number, number])[] = [
  [300, 200, 192, 8],
  [37, 18, 64, 5],
  [70, 50, 128, 36],
];
const FORMATS: readonly StoredFormat[] = ['nf4', 'nf4dq', 'bf16', 'f32'];
const LORA_RANK = 5; // the NaN-row case: not a multiple of 4
const LORA_SCALE = 2;

describe.skipIf(unsupported !== undefined)('subgroup-matrix matmul forward on the GPU', () => {
  let mm: MatmulSgm;
  let mmOtherPrefetch: MatmulSgm;
  let rs: RowScale;
  beforeAll(async () => {
    mm = await MatmulSgm.create(gpu, { tiles: [...SGM_DEFAULT_TILES, SGM_TILES.large] });
    mmOtherPrefetch = await MatmulSgm.create(gpu, { tiles: SGM_DEFAULT_TILES.slice(0, 1), prefetch: !SGM_FORWARD_PREFETCH });
    rs = await RowScale.create(gpu);
  });

  /** The row scales of x (m, k) on the GPU, checked against the float64 rule. */
  async function rowScaleOf(x: Tensor, xv: Float32Array, m: number, k: number): Promise<Tensor> {
    const rowScale = gpu.tensor('rowScale', [m], 'f32');
    gpu.fill32(rowScale, NAN_WORD);
    submitDispatches(gpu, [rs.forward('row scale', { rowScale, x }, k)]);
    expect(Array.from(await gpu.readF32(rowScale))).toEqual(Array.from(rowScaleRef(xv, m, k)));
    return rowScale;
  }

  /** One forward case of `m` against float64: plain, +LoRA, +accumulate and both; logs the worst share of the tolerance. */
  async function checkForward(m: MatmulSgm, tile: SgmTile, format: StoredFormat, M: number, N: number, K: number, R: number): Promise<void> {
    const rng = new Rng(M * 7919 + N * 31 + K + format.length * 13 + tile.fm * tile.fn);
    const { w, dense } = makeWeight(rng, format, N, K);
    const { xv, mag } = makeActivations(rng, M, K);
    const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
    const rowScale = await rowScaleOf(x, xv, M, K);
    const uv = Float32Array.from({ length: M * R }, (_, i) => rng.normal() * 0.1 * mag[Math.floor(i / R)]);
    const bv = rng.f32(N * R, 0.05);
    const lora = { u: gpu.tensorFrom('u', [M, R], 'f32', uv), b: gpu.tensorFrom('lora_b', [N, R], 'f32', bv), scale: LORA_SCALE };
    const y0 = Float32Array.from({ length: M * N }, (_, i) => rng.normal() * mag[Math.floor(i / N)]);
    const { y: plain, abs: xw } = matmulSgmRef(xv, dense, M, N, K);
    const sub = subnormalTerm(xv, dense, rowScaleRef(xv, M, K), M, N, K);
    const loraTol = loraTolerance(uv, bv, M, N, R, LORA_SCALE, R <= tile.bk);
    const y = gpu.tensor('y', [M, N], 'f32');
    const worst: string[] = [];
    for (const [withLora, accumulate] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      const name = `${format} ${sgmTileName(tile)}${withLora ? ' +lora' : ''}${accumulate ? ' +accumulate' : ''}`;
      if (accumulate) gpu.write(y, y0);
      else gpu.fill32(y, NAN_WORD);
      submitDispatches(gpu, [m.forward(name, { y, x, rowScale, w, tile, accumulate, lora: withLora ? lora : undefined })]);
      const ref = Float64Array.from(plain);
      if (withLora) loraEpilogueRef(ref, uv, bv, M, N, R, LORA_SCALE);
      if (accumulate) accumulateRef(ref, y0);
      const allowed = tolerance(format, K, xw, withLora ? loraTol : undefined, accumulate ? y0 : undefined, sub);
      worst.push(`${withLora ? 'lora' : ''}${accumulate ? 'acc' : ''}${withLora || accumulate ? '' : 'plain'} ${(100 * expectWithin(name, await gpu.readF32(y), ref, allowed, N)).toFixed(1)}%`);
    }
    console.log(`${format} ${sgmTileName(tile)} ${M}x${N}x${K} r=${R}: worst error as a share of the tolerance: ${worst.join(', ')}`);
  }

  // the default tiles (the probe's 256 × 128 first: 8 X items per invocation, the unrolled maximum) and 128 × 256
  for (const tile of [...SGM_DEFAULT_TILES, SGM_TILES.large] as readonly SgmTile[]) {
    for (const format of FORMATS) {
      for (const [M, N, K, R] of SIZES) {
        it(`${format}, tile ${sgmTileName(tile)}, M=${M} N=${N} K=${K} r=${R}: activations up to 1e5 and down to 1e-10 at f16 rounding error, plain, +LoRA, +accumulate`, async () => {
          await checkForward(mm, tile, format, M, N, K, R);
        });
      }
    }
  }

  // the prefetch setting the defaults do not use, on the largest default tile
  for (const tile of SGM_DEFAULT_TILES.slice(0, 1)) {
    for (const format of FORMATS) {
      for (const [M, N, K, R] of SIZES) {
        it(`prefetch ${SGM_FORWARD_PREFETCH ? 'off' : 'on'}: ${format}, tile ${sgmTileName(tile)}, M=${M} N=${N} K=${K} r=${R} at f16 rounding error, plain, +LoRA, +accumulate`, async () => {
          await checkForward(mmOtherPrefetch, tile, format, M, N, K, R);
        });
      }
    }
  }

  it('the proof is not vacuous: with every row scale 1 the same activations overflow f16 and the 1e-10 rows underflow to 0', async () => {
    const rng = new Rng(77);
    const [M, N, K] = [60, 40, 128];
    const { w, dense } = makeWeight(rng, 'bf16', N, K);
    const { xv } = makeActivations(rng, M, K);
    const y = gpu.tensor('y', [M, N], 'f32');
    gpu.fill32(y, NAN_WORD);
    const ones = gpu.tensorFrom('rowScale ones', [M], 'f32', new Float32Array(M).fill(1));
    submitDispatches(gpu, [mm.forward('unscaled', { y, x: gpu.tensorFrom('x', [M, K], 'f32', xv), rowScale: ones, w })]);
    const out = await gpu.readF32(y);
    const { y: ref, abs } = matmulSgmRef(xv, dense, M, N, K);
    const allowed = tolerance('bf16', K, abs, undefined, undefined);
    for (let i = 0; i < M; i++) {
      const row = Array.from(out.subarray(i * N, (i + 1) * N));
      // kinds 1 and 2 hold |x| = 1e5 > 65504: f16(x) is ±Inf, so the row's outputs are ±Inf or NaN
      // (were the conversion to saturate at ±65504 instead, some would be off by over 10× their tolerance)
      if (i % 6 === 1 || i % 6 === 2) {
        const broken = row.some((v, j) => !Number.isFinite(v) || Math.abs(v - ref[i * N + j]) > 10 * allowed[i * N + j]);
        expect(broken, `row ${i}: ${row.slice(0, 4)} against ${Array.from(ref.subarray(i * N, i * N + 4))}`).toBe(true);
      }
      // kind 3: |x| ~ 1e-10 < 2^-25 rounds to f16 zero, where the scaled kernel keeps 11 bits
      if (i % 6 === 3) expect(row.every((v) => Math.abs(v) < 1e-12), `row ${i}: ${row.slice(0, 4)}`).toBe(true);
    }
  });

  it('a row holding NaN gives NaN outputs and a row holding Inf non-finite ones (never silently 0); the other rows are untouched', async () => {
    const rng = new Rng(123);
    const [M, N, K] = [45, 70, 128];
    const { w, dense } = makeWeight(rng, 'nf4', N, K);
    const xv = rng.f32(M * K);
    xv[3 * K + 17] = NaN;
    xv[10 * K + 100] = Infinity;
    xv.fill(0, 20 * K, 21 * K);
    const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
    const rowScale = await rowScaleOf(x, xv, M, K);
    const scales = await gpu.readF32(rowScale);
    expect([scales[3], scales[10], scales[20]]).toEqual([1, 1, 1]);
    const uv = rng.f32(M * LORA_RANK, 0.1);
    const bv = rng.f32(N * LORA_RANK, 0.05);
    const lora = { u: gpu.tensorFrom('u', [M, LORA_RANK], 'f32', uv), b: gpu.tensorFrom('lora_b', [N, LORA_RANK], 'f32', bv), scale: LORA_SCALE };
    const y0 = rng.f32(M * N);
    const { y: plain, abs: xw } = matmulSgmRef(xv.map((v) => (Number.isFinite(v) ? v : 0)), dense, M, N, K);
    const loraTol = loraTolerance(uv, bv, M, N, LORA_RANK, LORA_SCALE, true);
    const y = gpu.tensor('y', [M, N], 'f32');
    for (const withExtras of [false, true]) {
      if (withExtras) gpu.write(y, y0);
      else gpu.fill32(y, NAN_WORD);
      submitDispatches(gpu, [mm.forward('nan rows', { y, x, rowScale, w, accumulate: withExtras, lora: withExtras ? lora : undefined })]);
      const out = await gpu.readF32(y);
      expect(Array.from(out.subarray(3 * N, 4 * N)).every(Number.isNaN), 'row 3 (NaN) all NaN').toBe(true);
      expect(Array.from(out.subarray(10 * N, 11 * N)).every((v) => !Number.isFinite(v)), 'row 10 (Inf) all non-finite').toBe(true);
      const ref = Float64Array.from(plain);
      if (withExtras) accumulateRef(loraEpilogueRef(ref, uv, bv, M, N, LORA_RANK, LORA_SCALE), y0);
      const allowed = tolerance('nf4', K, xw, withExtras ? loraTol : undefined, withExtras ? y0 : undefined);
      // row 20 is all zeros: exactly 0 without the epilogues (its tolerance is 0), the epilogues' values with them
      expectWithin(`nan rows${withExtras ? ' +lora +accumulate' : ''}`, out, ref, allowed, N, new Set([3, 10, 20]));
      for (let j = 0; j < N; j++) expect(Math.abs(out[20 * N + j] - ref[20 * N + j])).toBeLessThanOrEqual(allowed[20 * N + j]);
    }
  });

  it('a LoRA rank past the K step and not a multiple of 4 (r = 37, tile K step 32) takes the f32 loop with scalar loads: plain, +LoRA, +accumulate', async () => {
    const tile = SGM_DEFAULT_TILES[0];
    expect(37).toBeGreaterThan(tile.bk);
    await checkForward(mm, tile, 'nf4', 75, 60, 128, 37);
  });

  it('the strided-loop staging (the first version) matches float64 too', async () => {
    const loop = await MatmulSgm.create(gpu, { tiles: [SGM_TILES.large], formats: ['nf4', 'bf16'], accumulate: [false], lora: [false], staging: 'loop' });
    for (const format of ['nf4', 'bf16'] as const) {
      const rng = new Rng(11 + format.length);
      const [M, N, K] = [300, 200, 192];
      const { w, dense } = makeWeight(rng, format, N, K);
      const { xv } = makeActivations(rng, M, K);
      const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
      const rowScale = await rowScaleOf(x, xv, M, K);
      const y = gpu.tensor('y', [M, N], 'f32');
      gpu.fill32(y, NAN_WORD);
      submitDispatches(gpu, [loop.forward('loop', { y, x, rowScale, w, tile: SGM_TILES.large })]);
      const { y: ref, abs } = matmulSgmRef(xv, dense, M, N, K);
      expectWithin(`${format} loop staging`, await gpu.readF32(y), ref, tolerance(format, K, abs, undefined, undefined), N);
    }
  });

  it('picks a tile when none is forced, and refuses K not a multiple of 64, wrong row scales, bad LoRA and variants not compiled', async () => {
    const rng = new Rng(5);
    const [M, N, K] = [70, 130, 128];
    const { w, dense } = makeWeight(rng, 'nf4', N, K);
    const { xv } = makeActivations(rng, M, K);
    const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
    const rowScale = await rowScaleOf(x, xv, M, K);
    const y = gpu.tensor('y', [M, N], 'f32');
    gpu.fill32(y, NAN_WORD);
    submitDispatches(gpu, [mm.forward('picked', { y, x, rowScale, w })]);
    const { y: ref, abs } = matmulSgmRef(xv, dense, M, N, K);
    expectWithin('picked tile', await gpu.readF32(y), ref, tolerance('nf4', K, abs, undefined, undefined), N);
    const w96 = makeWeight(rng, 'bf16', 8, 96).w;
    const s4 = gpu.tensor('s', [4], 'f32');
    expect(() => mm.forward('k96', { y: gpu.tensor('y', [4, 8], 'f32'), x: gpu.tensor('x', [4, 96], 'f32'), rowScale: s4, w: w96 })).toThrow(/multiple of 64/);
    expect(() => mm.forward('bad x', { y, x: gpu.tensor('x', [M, K + 64], 'f32'), rowScale, w })).toThrow(ShapeError);
    expect(() => mm.forward('bad scales', { y, x, rowScale: gpu.tensor('s', [M + 1], 'f32'), w })).toThrow(/rowScale/);
    const bigU = gpu.tensor('u', [M, 129], 'f32');
    expect(() => mm.forward('rank', { y, x, rowScale, w, lora: { u: bigU, b: gpu.tensor('b', [N, 129], 'f32'), scale: 1 } })).toThrow(/LoRA rank 129/);
    expect(() => mm.forward('b shape', { y, x, rowScale, w, lora: { u: gpu.tensor('u', [M, 4], 'f32'), b: gpu.tensor('b', [N, 5], 'f32'), scale: 1 } })).toThrow(ShapeError);
    const only = await MatmulSgm.create(gpu, { tiles: [SGM_TILES.tiny], formats: ['f32'], accumulate: [false], lora: [false] });
    expect(() => only.forward('nf4', { y, x, rowScale, w })).toThrow(/not compiled/);
  });
});
