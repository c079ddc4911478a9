import { beforeAll, describe, expect, it } from 'vitest';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { dropoutRef } from '../../src/kernels/dropout.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { LoraDown, loraDownRef, loraDownTakes } from '../../src/kernels/lora-down.js';
import { tileName, type MatmulTile, type StoredFormat } from '../../src/kernels/matmul.js';
import { BACKWARD_TILES, MatmulBackward, matmulInputGradLoraRef, matmulInputGradRef } from '../../src/kernels/matmul-backward.js';
import { matmulRef } from '../../src/kernels/matmul.js';
import type { Tensor } from '../../src/kernels/tensor.js';
import { ShapeError } from '../../src/errors.js';
import { expectRelNorm, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { destroyTestWeight, makeTestWeight } from '../helpers/weights.js';
import { expectGradient, weightedSum } from './gradcheck.js';

/**
 * The two passes that take the LoRA branch along with work that reads the same data:
 *   lora down:   U_g = dropout_g(x)·A_gᵀ for up to three projections sharing x, one dispatch;
 *   input + lora: dX (+)= dY·W + mask(dU·A), one dispatch of the input-gradient kernel.
 */

// f32 products over at most a few hundred terms: a few ulp·√terms relative to the norm; NaN fails
const TOL = 1e-5;
// f32 sums of up to 9728 terms (32 lane slices of ~300, then the 32 slices): √K·ulp grows ~6×
const LONG_TOL = 3e-5;
const SEED = 987654321;

function output(gpu: Gpu, label: string, shape: number[], prior?: Float32Array): Tensor {
  const t = gpu.tensor(label, shape, 'f32');
  if (prior) gpu.write(t, prior);
  else gpu.fill32(t, NAN_WORD);
  return t;
}

describe('float64 references', () => {
  it('dX = dY·W + mask(dU·A), dU = s·dY·B, equals central differences of y = x·Wᵀ + s·dropout(x)·Aᵀ·Bᵀ', () => {
    const [m, n, k, r, s] = [4, 5, 7, 3, 1.5];
    const rng = new Rng(21);
    const [w, a, b, x, dy] = [rng.f32(n * k), rng.f32(r * k), rng.f32(n * r), rng.f32(m * k), rng.f32(m * n)];
    for (const p of [0, 0.4]) {
      const drop = (v: ArrayLike<number>) => (p > 0 ? dropoutRef(v, p, SEED, 9) : Float64Array.from(v));
      // the mask is fixed by (seed, salt, index), so y is linear in x
      const forward = (xx: ArrayLike<number>) => {
        const y = matmulRef(xx, w, m, n, k);
        const ub = matmulRef(matmulRef(drop(xx), a, m, r, k), b, m, n, r);
        return y.map((v, i) => v + s * ub[i]);
      };
      const du = matmulInputGradRef(dy, b, m, n, r, s);
      const dx = matmulInputGradLoraRef(dy, w, du, a, { m, n, k, r }, p > 0 ? { p, seed: SEED, salt: 9 } : undefined);
      expectGradient(`dx, dropout ${p}`, weightedSum(dy, forward), x, dx);
    }
  });
});

describe('lora down: U_g = dropout_g(x)·A_gᵀ for G projections in one pass', () => {
  let gpu: Gpu;
  let down: LoraDown;
  beforeAll(async () => {
    gpu = await testGpu();
    down = await LoraDown.create(gpu);
  });

  // [name, M, K, R, G, tol]: one row; q/k/v at a realistic small size; awkward (no size a multiple
  // of the 8-row × 32-column block or the 128-vec4 K step); R = 48 (two column blocks per
  // projection); K = 4 (one vec4); rank 128 (four blocks); long K at the model's widths (down_proj's
  // 9728 at odd M, q/k/v's 2560 with R = 16, half a block, and R = 32). K is a multiple of 4
  // (loraDownTakes); other widths are refused below and take dropout + matmul in the projections.
  const SIZES: readonly (readonly [string, number, number, number, number, number])[] = [
    ['tiny', 1, 8, 1, 1, TOL],
    ['q/k/v', 64, 320, 32, 3, TOL],
    ['gate/up awkward', 37, 100, 7, 2, TOL],
    ['two column blocks', 45, 68, 48, 3, TOL],
    ['K = 4', 33, 4, 3, 3, TOL],
    ['K past one step of the lanes', 17, 4 * 32 + 12, 9, 2, TOL],
    ['rank 128', 9, 72, 128, 2, TOL],
    ['down_proj long K', 37, 9728, 32, 1, LONG_TOL],
    ['q/k/v long K, R = 16', 35, 2560, 16, 3, LONG_TOL],
    ['q/k/v long K, R = 32', 19, 2560, 32, 3, LONG_TOL],
  ];
  for (const [name, M, K, R, G, tol] of SIZES) {
    for (const p of [0, 0.3]) {
      it(`${name}: M=${M} K=${K} R=${R} G=${G}, dropout ${p}`, async () => {
        const rng = new Rng(M * 7 + K * 131 + R * 17 + G + p * 10);
        const xv = rng.f32(M * K);
        const avs = Array.from({ length: G }, () => rng.f32(R * K, 0.2));
        const salts = [3, 4, 5].slice(0, G);
        const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
        const a = avs.map((v, g) => gpu.tensorFrom(`a${g}`, [R, K], 'f32', v));
        const u = avs.map((_, g) => output(gpu, `u${g}`, [M, R]));
        const seed = gpu.tensorFrom('seed', [1], 'u32', new Uint32Array([SEED]));
        submitDispatches(gpu, [down.forward('lora down', { u, x, a, seed }, { dropout: p > 0 ? { p, salts } : undefined })]);
        const ref = loraDownRef(xv, avs, M, K, R, p > 0 ? { p, seed: SEED, salts } : undefined);
        for (let g = 0; g < G; g++) expectRelNorm(`U_${g}`, await gpu.readF32(u[g]), ref[g], tol);
        if (p > 0 && G > 1) {
          // each projection has its own mask: U_0 and U_1 differ from U of the undropped x
          const plain = loraDownRef(xv, avs, M, K, R);
          expect(ref[0].some((v, i) => Math.abs(v - plain[0][i]) > 1e-6)).toBe(true);
        }
        for (const t of [x, seed, ...a, ...u]) t.buffer.destroy();
      });
    }
  }

  it('refuses shared U buffers, mismatched counts and shapes', () => {
    const x = gpu.tensor('x', [4, 8], 'f32');
    const a = gpu.tensor('a', [2, 8], 'f32');
    const u = gpu.tensor('u', [4, 2], 'f32');
    expect(() => down.forward('L0 q+k', { u: [u, u], x, a: [a, a] })).toThrow(/L0 q\+k.*own buffer/);
    expect(() => down.forward('q', { u: [u], x, a: [a, a] })).toThrow(ShapeError);
    expect(() => down.forward('q', { u: [gpu.tensor('u', [4, 3], 'f32')], x, a: [a] })).toThrow(ShapeError);
    expect(() => down.forward('q', { u: [u], x, a: [a] }, { dropout: { p: 0.1, salts: [1] } })).toThrow(/seed/);
    // a width that is not a multiple of 4: refused, naming the way round
    expect(loraDownTakes(8)).toBe(true);
    for (const k of [1, 2, 5, 97]) expect(loraDownTakes(k)).toBe(false);
    const x5 = gpu.tensor('x5', [4, 5], 'f32');
    expect(() => down.forward('L2 o_proj', { u: [u], x: x5, a: [gpu.tensor('a5', [2, 5], 'f32')] })).toThrow(/L2 o_proj.*K = 5 is not a multiple of 4.*dropout and the tiled matmul/);
  });
});

describe('input gradient with the LoRA term: dX (+)= dY·W + mask(dU·A) in one pass', () => {
  let gpu: Gpu;
  let mb: MatmulBackward;
  beforeAll(async () => {
    gpu = await testGpu();
    mb = await MatmulBackward.create(gpu, { maxScratchBytes: 2 ** 20 });
  });

  // [name, M, Nout, K, R]; NF4 needs Nout·K % 64 == 0. Realistic (o_proj-like at toy width),
  // awkward (edges everywhere, R not a multiple of the 8- or 16-wide step), K % 4 != 0, one row
  const SIZES: readonly (readonly [string, number, number, number, number])[] = [
    ['realistic', 64, 256, 320, 32],
    ['awkward', 37, 98, 32, 7],
    ['odd K', 5, 64, 33, 3],
    ['tiny', 1, 4, 64, 1],
  ];
  // lavapipe compiles each pipeline on first use (seconds of CPU): every tile for f32 and nf4,
  // one for bf16 and double-quantised nf4, as in matmul-backward.test.ts
  const FORMAT_TILES: readonly [StoredFormat, readonly MatmulTile[]][] = [
    ['f32', [BACKWARD_TILES.large, BACKWARD_TILES.small, BACKWARD_TILES.tall]],
    ['nf4', [BACKWARD_TILES.large, BACKWARD_TILES.small, BACKWARD_TILES.tall]],
    ['bf16', [BACKWARD_TILES.small]],
    ['nf4dq', [BACKWARD_TILES.large]],
  ];
  for (const [format, tiles] of FORMAT_TILES) {
    for (const [name, M, N, K, R] of SIZES) {
      it(`${format} W at ${name} M=${M} Nout=${N} K=${K} R=${R}: dropout off/on, overwrite/accumulate`, async () => {
        const rng = new Rng(M * 1009 + N * 31 + K * 7 + R + format.length);
        const { w, dense } = makeTestWeight(gpu, rng, format, N, K);
        const dyv = rng.f32(M * N);
        const duv = rng.f32(M * R);
        const av = rng.f32(R * K, 0.2);
        const dy = gpu.tensorFrom('dy', [M, N], 'f32', dyv);
        const du = gpu.tensorFrom('dU', [M, R], 'f32', duv);
        const a = gpu.tensorFrom('lora_A', [R, K], 'f32', av);
        const seed = gpu.tensorFrom('seed', [1], 'u32', new Uint32Array([SEED]));
        const dx0 = rng.f32(M * K);
        const cases = tiles.flatMap((tile, i) => [
          { tile, accumulate: i % 2 === 1, p: 0 },
          { tile, accumulate: i % 2 === 0, p: 0.25 },
        ]);
        for (const c of cases) {
          const dx = output(gpu, 'dx', [M, K], c.accumulate ? dx0 : undefined);
          const dropout = c.p > 0 ? { p: c.p, salt: 11, seed } : undefined;
          const d = mb.input('L0 q_proj dX', { dx, dy, w, lora: { du, a, dropout } }, { accumulate: c.accumulate, tile: c.tile });
          submitDispatches(gpu, [d]);
          const ref = matmulInputGradLoraRef(dyv, dense, duv, av, { m: M, n: N, k: K, r: R }, c.p > 0 ? { p: c.p, seed: SEED, salt: 11 } : undefined, c.accumulate ? dx0 : undefined);
          expectRelNorm(`${format} ${tileName(c.tile)} ${c.accumulate ? 'accumulate' : 'overwrite'} p=${c.p}`, await gpu.readF32(dx), ref, TOL);
          dx.buffer.destroy();
        }
        for (const t of [dy, du, a, seed]) t.buffer.destroy();
        destroyTestWeight(w);
      });
    }
  }

  it('refuses the LoRA term with a scale, in inputSplit, or with a dU of the wrong shape', () => {
    const rng = new Rng(3);
    const { w } = makeTestWeight(gpu, rng, 'f32', 8, 16);
    const dy = gpu.tensor('dy', [4, 8], 'f32');
    const dx = gpu.tensor('dx', [4, 16], 'f32');
    const lora = { du: gpu.tensor('du', [4, 2], 'f32'), a: gpu.tensor('a', [2, 16], 'f32') };
    expect(() => mb.input('q', { dx, dy, w, lora }, { scale: 2 })).toThrow(/scale 1/);
    expect(() => mb.inputSplit('q', { dx, dy, w, lora })).toThrow(/inputSplit/);
    expect(() => mb.input('q', { dx, dy, w, lora: { ...lora, du: gpu.tensor('du', [3, 2], 'f32') } })).toThrow(ShapeError);
    destroyTestWeight(w);
  });
});
