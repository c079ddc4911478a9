import { beforeAll, describe, expect, it } from 'vitest';
import {
  MatmulSgmInput,
  planSgmInput,
  SGM_INPUT_DEFAULT_TILES,
  SGM_INPUT_TILES,
  sgmInputErrorBound,
  sgmInputStagingItems,
  sgmInputTileHalves,
  sgmInputTileProblems,
  sgmInputWorkgroupBytes,
} from '../../src/kernels/matmul-sgm-input.js';
import { matmulInputGradRef } from '../../src/kernels/matmul-backward.js';
import { roundToF16, sgmTileName, sgmUnsupportedReason, type SgmTile } from '../../src/kernels/matmul-sgm.js';
import type { StoredFormat } from '../../src/kernels/matmul.js';
import { NF4_CODEBOOK, nf4DequantizeRef, nf4QuantizeRef } from '../../src/kernels/nf4.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { DeviceError, ShapeError } from '../../src/errors.js';
import { roundToBf16 } from '../../src/model/bf16.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { NAN_WORD } from '../helpers/compare.js';
import { rowScaleRef } from '../../src/kernels/row-scale.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { makeTestWeight } from '../helpers/weights.js';

/** The row-scale rule of issue 11 item 4 (src/kernels/row-scale.ts, the kernel's float64 reference) as the f32 the kernel reads. */
const rowScalesRef = (dy: ArrayLike<number>, m: number, n: number): Float32Array => Float32Array.from(rowScaleRef(dy, m, n));

/** Row magnitudes of dY in the tests: gradients as small as 1e-10 and as large as 1e4 (and one zero row). */
const ROW_MAGNITUDES = [1e-10, 1e-6, 1e-3, 1, 1e4];

/** dY (m, n): row i ~ N(0, 1) · ROW_MAGNITUDES[i % 5], every 7th element a further 1e-3 smaller, row 7 zero. */
function makeDy(rng: Rng, m: number, n: number): Float32Array {
  const v = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    if (i === 7) continue;
    const mag = ROW_MAGNITUDES[i % ROW_MAGNITUDES.length];
    for (let j = 0; j < n; j++) v[i * n + j] = rng.normal() * mag * (j % 7 === 3 ? 1e-3 : 1);
  }
  return v;
}

// Pure TypeScript: runs everywhere (lavapipe, CI).
describe('subgroup-matrix input gradient: tiles, plan, error bound', () => {
  it('tiles: the defaults fit 48 KiB and 256 invocations; oversized tiles are refused with the reason', () => {
    for (const t of SGM_INPUT_DEFAULT_TILES) expect(sgmInputTileProblems(t, 49152, 256), sgmTileName(t)).toEqual([]);
    expect(sgmInputWorkgroupBytes()).toBeLessThanOrEqual(49152);
    // 256 × 128 × 32: 256·40 + 32·136 staged halves; 8 dY items (4 floats) and 2 W items (8 elements) per invocation
    expect(sgmInputTileHalves(SGM_INPUT_TILES.tall)).toBe(256 * 40 + 32 * 136);
    expect(sgmInputStagingItems(SGM_INPUT_TILES.tall)).toEqual({ x: 8, w: 2 });
    expect(sgmInputTileProblems({ ...SGM_INPUT_TILES.tall, bk: 64 }, 49152, 256).join()).toMatch(/staged halves/);
    expect(sgmInputTileProblems({ sgM: 1, sgN: 1, fm: 2, fn: 8, bk: 64 }, 49152, 256).join()).toMatch(/16 \(dY\) and 32 \(W\)/);
    expect(sgmInputTileProblems({ sgM: 16, sgN: 1, fm: 1, fn: 8, bk: 32 }, 49152, 1024).join()).toMatch(/subgroups exceed/);
    expect(sgmInputTileProblems({ sgM: 2, sgN: 2, fm: 3, fn: 2, bk: 48 }, 49152, 256).join()).toMatch(/fm = 3 .*bk = 48/s);
    expect(sgmInputTileProblems({ sgM: 2, sgN: 2, fm: 4, fn: 8, bk: 32 }, 49152, 256).join()).toMatch(/fm 4 with fn ≤ 4/);
    expect(sgmInputTileProblems(SGM_INPUT_TILES.square, 49152, 256)).toEqual([]);
    expect(sgmInputTileProblems(SGM_INPUT_TILES.medium, 32768, 256).join()).toMatch(/workgroup memory/);
  });

  it('plan: splits the reduction where the output makes too few workgroups, in whole steps, within the scratch', () => {
    const tiles = SGM_INPUT_DEFAULT_TILES;
    // Qwen3-4B dX at 2048 tokens: (name, N reduction, K output)
    const shapes = [
      ['q_proj', 4096, 2560],
      ['k/v_proj', 1024, 2560],
      ['gate/up', 9728, 2560],
      ['o_proj', 2560, 4096],
      ['down_proj', 2560, 9728],
    ] as const;
    for (const [name, n, k] of shapes) {
      const p = planSgmInput(2048, n, k, tiles, { maxScratchBytes: 128 * 2 ** 20 });
      expect(p.slice % p.tile.bk === 0 || p.slices === 1, name).toBe(true);
      expect(p.slices * p.slice, name).toBeGreaterThanOrEqual(n);
      expect((p.slices - 1) * p.slice, name).toBeLessThan(n);
      expect(p.scratchBytes, name).toBe(p.slices > 1 ? p.slices * 2048 * k * 4 : 0);
      expect(p.scratchBytes, name).toBeLessThanOrEqual(128 * 2 ** 20);
    }
    // with 256 × 128 tiles only, gate/up's dX (160 workgroups on 132 SMs, reduction 9728) splits,
    // k/v_proj's (reduction 1024) does not: its partial sums would cost more than the idle SMs
    // (both as measured on the H200)
    expect(planSgmInput(2048, 9728, 2560, [SGM_INPUT_TILES.tall]).slices).toBeGreaterThan(1);
    expect(planSgmInput(2048, 1024, 2560, [SGM_INPUT_TILES.tall]).slices).toBe(1);
    // down_proj's dX (2048 × 9728): 608 workgroups already
    expect(planSgmInput(2048, 2560, 9728, tiles).slices).toBe(1);
    // a scratch of 2 outputs allows 2 slices at most; forced tile and slices are honoured (clamped to N's steps)
    expect(planSgmInput(2048, 9728, 2560, tiles, { maxScratchBytes: 2 * 2048 * 2560 * 4 }).slices).toBeLessThanOrEqual(2);
    const forced = planSgmInput(300, 200, 192, tiles, { tile: SGM_INPUT_TILES.medium, slices: 3 });
    expect([forced.tile, forced.slices, forced.slice]).toEqual([SGM_INPUT_TILES.medium, 3, 96]);
    expect(planSgmInput(37, 36, 64, tiles, { slices: 8 }).slices).toBeLessThanOrEqual(2);
  });

  it('rowScalesRef puts each row maximum in (2^13, 2^14]', () => {
    const rng = new Rng(2);
    const dy = makeDy(rng, 20, 50);
    const s = rowScalesRef(dy, 20, 50);
    for (let i = 0; i < 20; i++) {
      let amax = 0;
      for (let j = 0; j < 50; j++) amax = Math.max(amax, Math.abs(dy[i * 50 + j]));
      if (amax === 0) expect(s[i]).toBe(1);
      else {
        expect(amax * s[i]).toBeLessThanOrEqual(2 ** 14);
        expect(amax * s[i]).toBeGreaterThan(2 ** 13);
      }
    }
    expect(Array.from(rowScalesRef([2 ** 14, 0, 0, 0.75], 2, 2))).toEqual([1, 2 ** 14]);
  });

  it('the error bound covers dY·rowScale and W rounded to f16 as the shader rounds them, and is not loose by more than ~20×', () => {
    // the f16 operands the shader forms, multiplied exactly (float64) and divided by the row scale:
    // the bound must hold for that; the GPU adds only the f32 sums, which the N·2^-24 term covers
    const rng = new Rng(17);
    const [m, n, k] = [10, 64, 64];
    const dy = makeDy(rng, m, n);
    const values = roundToBf16(rng.f32(n * k, 0.05));
    const q = nf4QuantizeRef(values);
    const dense = nf4DequantizeRef(q.packed, q.absmax, n * k);
    const s = rowScalesRef(dy, m, n);
    const bound = sgmInputErrorBound('nf4', dy, dense, s, m, n, k);
    const ref = matmulInputGradRef(dy, dense, m, n, k);
    // the shader's NF4 element: f16(codebook) · f16(absmax), rounded to f16; dY: f16(dY · s)
    const bytes = new Uint8Array(q.packed.buffer, q.packed.byteOffset, q.packed.byteLength);
    const w16 = Float64Array.from(dense, (_, e) => {
      const code = (e & 1) === 0 ? bytes[e >> 1] >> 4 : bytes[e >> 1] & 15;
      return roundToF16(roundToF16(NF4_CODEBOOK[code]) * roundToF16(q.absmax[e >> 6]));
    });
    const dy16 = Float64Array.from(dy, (v, e) => roundToF16(v * s[Math.floor(e / n)]));
    let worst = 0;
    for (let i = 0; i < m; i++) {
      for (let c = 0; c < k; c++) {
        let sum = 0;
        for (let j = 0; j < n; j++) sum += dy16[i * n + j] * w16[j * k + c];
        const err = Math.abs(sum / s[i] - ref[i * k + c]);
        expect(err, `row ${i} column ${c}`).toBeLessThanOrEqual(bound[i * k + c]);
        if (ref[i * k + c] !== 0) worst = Math.max(worst, err / bound[i * k + c]);
      }
    }
    expect(worst).toBeGreaterThan(1 / 20);
    // the bound on a hand-worked case: one f32 term, dY = 3 with scale 2^12, W = 0.5
    const b = sgmInputErrorBound('f32', [3], [0.5], [2 ** 12], 1, 1, 1)[0];
    expect(b).toBeCloseTo((2 * 2 ** -11 * 1.01 + 2 ** -24) * 1.5 + 2 ** -25 * (0.5 / 2 ** 12 + 3), 15);
  });
});

const gpu: Gpu = await testGpu();
const unsupported = sgmUnsupportedReason(gpu);
if (unsupported) console.log(`SKIP subgroup-matrix input-gradient GPU tests: ${unsupported}`);

describe.skipIf(unsupported === undefined)('subgroup-matrix input gradient where the adapter lacks it', () => {
  it('MatmulSgmInput.create refuses with the reason', async () => {
    await expect(MatmulSgmInput.create(gpu)).rejects.toThrow(DeviceError);
    await expect(MatmulSgmInput.create(gpu)).rejects.toThrow(/MatmulBackward\.input/);
  });
});

/** A weight of `format` (N, K) on the GPU and its dense float64 values. */
/** A random weight of `format` on this file's GPU and its dense float64 values (tests/helpers/weights.ts). */
const makeWeight = (rng: Rng, format: StoredFormat, n: number, k: number): ReturnType<typeof makeTestWeight> => makeTestWeight(gpu, rng, format, n, k);

/**
 * Every output finite and within `allowed` of the float64 reference; and, per row, the bound well
 * below the row's own outputs (so rows of 1e-10 are checked at their own scale, not against 1e4).
 * Failure names the worst index, both values and how many outputs failed.
 */
function expectWithinBound(what: string, out: Float32Array, ref: Float64Array, allowed: Float64Array, k: number): number {
  let bad = 0;
  let first = -1;
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(out[i] - ref[i]);
    if (!(err <= allowed[i])) {
      bad++;
      if (first < 0 || !(Math.abs(out[first] - ref[first]) / allowed[first] >= err / allowed[i])) first = i;
    } else if (allowed[i] > 0) worst = Math.max(worst, err / allowed[i]);
  }
  if (bad > 0) throw new Error(`${what}: ${bad} outputs outside the bound; worst at ${first} (row ${Math.floor(first / k)}): ${out[first]}, reference ${ref[first]}, allowed ±${allowed[first]}`);
  for (let r = 0; r < ref.length / k; r++) {
    let mag = 0;
    let tol = 0;
    for (let c = 0; c < k; c++) {
      mag += Math.abs(ref[r * k + c]);
      tol += allowed[r * k + c];
    }
    // a fifth: at N = 1000 the sum Σ|dY·W| the bound scales with is ~30× |dX| (random signs cancel)
    if (mag > 0) expect(tol, `${what}: row ${r}'s bound against its outputs`).toBeLessThan(mag / 5);
  }
  return worst;
}

// [M, N, K]: M and N not multiples of any tile, K a multiple of 64 but not of every tile's BN;
// N = 1000 runs 32 reduction steps (and uneven slices when split)
const SIZES: readonly (readonly [number, number, number])[] = [
  [300, 200, 192],
  [37, 36, 64],
  [130, 1000, 128],
];
const FORMATS: readonly StoredFormat[] = ['nf4', 'nf4dq', 'bf16', 'f32'];

describe.skipIf(unsupported !== undefined)('subgroup-matrix input gradient on the GPU', () => {
  let mm: MatmulSgmInput;
  beforeAll(async () => {
    mm = await MatmulSgmInput.create(gpu, { tiles: [...SGM_INPUT_DEFAULT_TILES, SGM_INPUT_TILES.square] });
  });

  /** Runs dX [+]= scale·dY·W with `opts` and checks it against float64 (dx0 random when accumulating). */
  async function check(what: string, format: StoredFormat, [M, N, K]: readonly [number, number, number], opts: { tile?: SgmTile; slices?: number; accumulate?: boolean; scale?: number; mm?: MatmulSgmInput }, seed: number): Promise<void> {
    const rng = new Rng(seed);
    const { w, dense } = makeWeight(rng, format, N, K);
    const dyv = makeDy(rng, M, N);
    const s = rowScalesRef(dyv, M, N);
    const dy = gpu.tensorFrom('dy', [M, N], 'f32', dyv);
    const rowScale = gpu.tensorFrom('rowScale', [M], 'f32', s);
    const dx = gpu.tensor('dx', [M, K], 'f32');
    const scale = opts.scale ?? 1;
    let dx0: Float32Array | undefined;
    if (opts.accumulate) {
      dx0 = new Float32Array(M * K);
      for (let i = 0; i < dx0.length; i++) dx0[i] = rng.normal() * ROW_MAGNITUDES[Math.floor(i / K) % ROW_MAGNITUDES.length];
      gpu.write(dx, dx0);
    } else gpu.fill32(dx, NAN_WORD);
    submitDispatches(gpu, (opts.mm ?? mm).input(what, { dx, dy, rowScale, w }, { tile: opts.tile, slices: opts.slices, accumulate: opts.accumulate, scale }));
    const ref = matmulInputGradRef(dyv, dense, M, N, K, scale, dx0);
    // sgmInputErrorBound's f16 operand roundings, times |scale|; accumulating adds one f32 rounding of dx0 + product
    const bound = sgmInputErrorBound(format, dyv, dense, s, M, N, K).map((b, i) => Math.abs(scale) * b + (dx0 ? 2 ** -24 * 1.01 * (Math.abs(dx0[i]) + Math.abs(ref[i] - dx0[i])) : 0));
    const worst = expectWithinBound(what, await gpu.readF32(dx), ref, bound, K);
    console.log(`${what}: worst error ${(worst * 100).toFixed(1)}% of the bound`);
    for (const t of [w.data, w.absmax, w.doubleQuant?.codes, w.doubleQuant?.absmax2, dy, rowScale, dx]) t?.buffer.destroy();
  }

  for (const format of FORMATS) {
    for (const size of SIZES) {
      it(`${format}: planned tile and split, plain and accumulate, match float64 at M=${size[0]} N=${size[1]} K=${size[2]}`, async () => {
        const p = mm.plan(size[0], size[1], size[2]);
        const name = `${format} ${size.join('×')} ${sgmTileName(p.tile)} S=${p.slices}`;
        await check(`${name} plain`, format, size, {}, size[0] * 31 + size[1] + format.length);
        await check(`${name} accumulate`, format, size, { accumulate: true }, size[0] * 37 + size[1] + format.length);
      });
    }
  }

  for (const tile of [...SGM_INPUT_DEFAULT_TILES, SGM_INPUT_TILES.square]) {
    it(`tile ${sgmTileName(tile)}: nf4 and bf16, one pass and 3 slices (accumulate, scale −0.5), match float64`, async () => {
      for (const format of ['nf4', 'bf16'] as const) {
        await check(`${format} ${sgmTileName(tile)} S=1`, format, [300, 200, 192], { tile, slices: 1 }, 101 + tile.fn + format.length);
        await check(`${format} ${sgmTileName(tile)} S=3`, format, [130, 1000, 128], { tile, slices: 3, accumulate: true, scale: -0.5 }, 103 + tile.fm + format.length);
      }
    });
  }

  it('the prefetch setting the defaults do not use (off for 256 × 128, on for 256 × 80) matches float64 too', async () => {
    const off = await MatmulSgmInput.create(gpu, { tiles: [SGM_INPUT_TILES.tall], formats: ['nf4dq', 'f32'], accumulate: [false], prefetch: false });
    await check('nf4dq no prefetch', 'nf4dq', [300, 200, 192], { mm: off }, 7);
    await check('f32 no prefetch, 2 slices', 'f32', [130, 1000, 128], { mm: off, slices: 2 }, 8);
    const on = await MatmulSgmInput.create(gpu, { tiles: [SGM_INPUT_TILES.narrow], formats: ['nf4'], prefetch: true });
    await check('nf4 256x80 prefetch, accumulate', 'nf4', [300, 200, 192], { mm: on, accumulate: true }, 9);
  });

  it('the row scales matter: with rowScale 1 the 1e-10 rows underflow f16 and leave the bound', async () => {
    const [M, N, K] = [40, 200, 128];
    const rng = new Rng(9);
    const { w, dense } = makeWeight(rng, 'nf4', N, K);
    const dyv = makeDy(rng, M, N);
    const dx = gpu.tensor('dx', [M, K], 'f32');
    gpu.fill32(dx, NAN_WORD);
    const ones = gpu.tensorFrom('ones', [M], 'f32', new Float32Array(M).fill(1));
    submitDispatches(gpu, mm.input('unscaled', { dx, dy: gpu.tensorFrom('dy', [M, N], 'f32', dyv), rowScale: ones, w }));
    const out = await gpu.readF32(dx);
    const ref = matmulInputGradRef(dyv, dense, M, N, K);
    const bound = sgmInputErrorBound('nf4', dyv, dense, rowScalesRef(dyv, M, N), M, N, K);
    // row 0 holds gradients of about 1e-10: below f16's smallest subnormal (6e-8), so they become 0
    for (let c = 0; c < K; c++) expect(out[c]).toBe(0);
    let outside = 0;
    for (let i = 0; i < K; i++) if (!(Math.abs(out[i] - ref[i]) <= bound[i])) outside++;
    expect(outside).toBeGreaterThan(K / 2);
  });

  it('refuses N not a multiple of 4, K not a multiple of 64, a wrong rowScale, an aliased dX and variants not compiled', async () => {
    const rng = new Rng(5);
    const w = makeWeight(rng, 'bf16', 36, 64).w;
    const ok = { dx: gpu.tensor('dx', [10, 64], 'f32'), dy: gpu.tensor('dy', [10, 36], 'f32'), rowScale: gpu.tensor('s', [10], 'f32'), w };
    expect(mm.input('ok', ok)).toHaveLength(1);
    expect(() => mm.input('n', { ...ok, dy: gpu.tensor('dy', [10, 34], 'f32'), w: makeWeight(rng, 'bf16', 34, 64).w })).toThrow(/multiple of 4/);
    expect(() => mm.input('k', { ...ok, dx: gpu.tensor('dx', [10, 96], 'f32'), w: makeWeight(rng, 'bf16', 36, 96).w })).toThrow(/multiple of 64/);
    expect(() => mm.input('s', { ...ok, rowScale: gpu.tensor('s', [9], 'f32') })).toThrow(/rowScale/);
    expect(() => mm.input('rows', { ...ok, dy: gpu.tensor('dy', [11, 36], 'f32') })).toThrow(ShapeError);
    expect(() => mm.input('alias', { ...ok, rowScale: { ...ok.rowScale, buffer: ok.dx.buffer } })).toThrow(/own buffer/);
    const only = await MatmulSgmInput.create(gpu, { tiles: [SGM_INPUT_TILES.tiny], formats: ['f32'], accumulate: [false] });
    expect(() => only.input('bf16', ok)).toThrow(/not compiled/);
  });
});
