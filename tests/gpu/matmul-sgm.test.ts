import { beforeAll, describe, expect, it } from 'vitest';
import {
  matmulSgmRef,
  MatmulSgm,
  parseSgmTile,
  pickSgmTile,
  roundToF16,
  SGM_DEFAULT_TILES,
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
import type { LinearWeight, StoredFormat } from '../../src/kernels/matmul.js';
import { NF4_CODEBOOK, nf4DequantizeRef, nf4DoubleDequantizeRef, nf4DoubleQuantizeRef, nf4QuantizeRef } from '../../src/kernels/nf4.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { DeviceError, ShapeError } from '../../src/errors.js';
import { f32ToBf16Array, roundToBf16 } from '../../src/model/bf16.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

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
    // Qwen3-4B at 2048 tokens: the 256 × 128 tile wherever it makes ≥ 100 workgroups (q, gate/up,
    // o, down), 128 × 128 at k/v_proj (64 of the tall), 64 × 64 for small outputs
    const pick = (m: number, n: number) => pickSgmTile(SGM_DEFAULT_TILES, m, n);
    expect(sgmTileRows(SGM_TILES.tall)).toEqual({ bm: 256, bn: 128 });
    for (const n of [9728, 4096, 2560]) expect(pick(2048, n)).toBe(SGM_TILES.tall);
    expect(pick(2048, 1024)).toBe(SGM_TILES.medium);
    expect(pick(256, 512)).toBe(SGM_TILES.tiny);
    expect(pickSgmTile([SGM_TILES.large], 16, 16)).toBe(SGM_TILES.large);
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
function makeWeight(rng: Rng, format: StoredFormat, n: number, k: number): { w: LinearWeight; dense: ArrayLike<number> } {
  if (format === 'f32') {
    const v = rng.f32(n * k, 0.05);
    return { w: { format, nOut: n, k, data: gpu.tensorFrom('w', [n, k], 'f32', v) }, dense: v };
  }
  const values = roundToBf16(rng.f32(n * k, 0.05));
  if (format === 'bf16') return { w: { format, nOut: n, k, data: gpu.tensorFrom('w', [n, k], 'bf16x2', f32ToBf16Array(values)) }, dense: values };
  const q = nf4QuantizeRef(values);
  const data = gpu.tensorFrom('w', [n, k], 'nf4x8', q.packed);
  if (format === 'nf4') {
    return { w: { format: 'nf4', nOut: n, k, data, absmax: gpu.tensorFrom('absmax', [q.absmax.length], 'f32', q.absmax) }, dense: nf4DequantizeRef(q.packed, q.absmax, n * k) };
  }
  const dq = nf4DoubleQuantizeRef(q.absmax);
  const doubleQuant = {
    codes: gpu.tensorFrom('codes', [q.absmax.length], 'u8x4', dq.codes),
    absmax2: gpu.tensorFrom('absmax2', [dq.absmax2.length], 'f32', dq.absmax2),
    offset: dq.offset,
  };
  return { w: { format: 'nf4', nOut: n, k, data, doubleQuant }, dense: nf4DequantizeRef(q.packed, nf4DoubleDequantizeRef(dq), n * k) };
}

/** Every output finite and within sgmRelBound · Σ|x·w| of the float64 reference (+ y0 when accumulating). */
function expectWithinBound(what: string, out: Float32Array, ref: Float64Array, abs: Float64Array, bound: number): void {
  let bad = -1;
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(out[i] - ref[i]);
    const allowed = bound * abs[i] + 1e-30;
    if (!(err <= allowed)) {
      bad = i;
      break;
    }
    worst = Math.max(worst, err / allowed);
  }
  if (bad >= 0) throw new Error(`${what}: output ${bad} is ${out[bad]}, reference ${ref[bad]}, allowed ±${bound * abs[bad]}`);
  // the bound is not vacuous: it is far below the outputs' own size
  let mag = 0;
  let absSum = 0;
  for (let i = 0; i < ref.length; i++) {
    mag += Math.abs(ref[i]);
    absSum += abs[i];
  }
  expect(bound * absSum).toBeLessThan(mag / 20);
  console.log(`${what}: worst error ${(worst * 100).toFixed(1)}% of the bound`);
}

// [M, N, K]: M and N not multiples of any tile (edge workgroups next to interior ones), K a
// multiple of 64 but not of every tile's 2·BK
const SIZES: readonly (readonly [number, number, number])[] = [
  [300, 200, 192],
  [37, 18, 64],
];
const FORMATS: readonly StoredFormat[] = ['nf4', 'nf4dq', 'bf16', 'f32'];

describe.skipIf(unsupported !== undefined)('subgroup-matrix matmul forward on the GPU', () => {
  let mm: MatmulSgm;
  beforeAll(async () => {
    mm = await MatmulSgm.create(gpu, { tiles: [...SGM_DEFAULT_TILES, SGM_TILES.large] });
  });

  // the default tiles (the probe's 256 × 128 first: 8 X items per invocation, the unrolled maximum) and 128 × 256
  for (const tile of [...SGM_DEFAULT_TILES, SGM_TILES.large] as readonly SgmTile[]) {
    for (const format of FORMATS) {
      for (const [M, N, K] of SIZES) {
        it(`${format}, tile ${sgmTileName(tile)}: plain and accumulate match float64 at M=${M} N=${N} K=${K}`, async () => {
          const rng = new Rng(M * 7919 + N * 31 + K + format.length * 13 + tile.fm * tile.fn);
          const { w, dense } = makeWeight(rng, format, N, K);
          const xv = rng.f32(M * K);
          const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
          const { y: plain, abs } = matmulSgmRef(xv, dense, M, N, K);
          const bound = sgmRelBound(format, K);
          const y = gpu.tensor('y', [M, N], 'f32');
          gpu.fill32(y, NAN_WORD);
          submitDispatches(gpu, [mm.forward('plain', { y, x, w, tile })]);
          expectWithinBound(`${format} ${sgmTileName(tile)} plain`, await gpu.readF32(y), plain, abs, bound);
          const y0 = rng.f32(M * N);
          gpu.write(y, y0);
          submitDispatches(gpu, [mm.forward('accumulate', { y, x, w, tile, accumulate: true })]);
          const withY0 = plain.map((v, i) => v + y0[i]);
          // y0 enters the f32 sums: at most K·2^-24·|y0| more (≤ 2^-16·|y0| for K ≤ 192)
          const absY0 = abs.map((v, i) => v + (Math.abs(y0[i]) * 2 ** -16) / bound);
          expectWithinBound(`${format} ${sgmTileName(tile)} accumulate`, await gpu.readF32(y), withY0, absY0, bound);
        });
      }
    }
  }

  it('the strided-loop staging (the first version) matches float64 too', async () => {
    const loop = await MatmulSgm.create(gpu, { tiles: [SGM_TILES.large], formats: ['nf4', 'bf16'], accumulate: [false], staging: 'loop' });
    for (const format of ['nf4', 'bf16'] as const) {
      const rng = new Rng(11 + format.length);
      const [M, N, K] = [300, 200, 192];
      const { w, dense } = makeWeight(rng, format, N, K);
      const xv = rng.f32(M * K);
      const y = gpu.tensor('y', [M, N], 'f32');
      gpu.fill32(y, NAN_WORD);
      submitDispatches(gpu, [loop.forward('loop', { y, x: gpu.tensorFrom('x', [M, K], 'f32', xv), w, tile: SGM_TILES.large })]);
      const { y: ref, abs } = matmulSgmRef(xv, dense, M, N, K);
      expectWithinBound(`${format} loop staging`, await gpu.readF32(y), ref, abs, sgmRelBound(format, K));
    }
  });

  it('picks a tile when none is forced, and refuses K not a multiple of 64 and variants not compiled', async () => {
    const rng = new Rng(5);
    const [M, N, K] = [70, 130, 128];
    const { w, dense } = makeWeight(rng, 'nf4', N, K);
    const xv = rng.f32(M * K);
    const y = gpu.tensor('y', [M, N], 'f32');
    gpu.fill32(y, NAN_WORD);
    submitDispatches(gpu, [mm.forward('picked', { y, x: gpu.tensorFrom('x', [M, K], 'f32', xv), w })]);
    const { y: ref, abs } = matmulSgmRef(xv, dense, M, N, K);
    expectWithinBound('picked tile', await gpu.readF32(y), ref, abs, sgmRelBound('nf4', K));
    const w96 = makeWeight(rng, 'bf16', 8, 96).w;
    expect(() => mm.forward('k96', { y: gpu.tensor('y', [4, 8], 'f32'), x: gpu.tensor('x', [4, 96], 'f32'), w: w96 })).toThrow(/multiple of 64/);
    expect(() => mm.forward('bad x', { y, x: gpu.tensor('x', [M, K + 64], 'f32'), w })).toThrow(ShapeError);
    const only = await MatmulSgm.create(gpu, { tiles: [SGM_TILES.tiny], formats: ['f32'], accumulate: [false] });
    expect(() => only.forward('nf4', { y, x: gpu.tensorFrom('x', [M, K], 'f32', xv), w })).toThrow(/not compiled/);
  });
});
