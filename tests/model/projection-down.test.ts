import { beforeAll, describe, expect, it } from 'vitest';
import { submitDispatches, type Dispatch } from '../../src/kernels/dispatch.js';
import { Dropout } from '../../src/kernels/dropout.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { LoraDown, loraDownRef } from '../../src/kernels/lora-down.js';
import { Matmul } from '../../src/kernels/matmul.js';
import { projectionDown, projectionsDown, type ProjectionKernels, type ProjectionUnit } from '../../src/model/projection.js';
import { expectRelNorm, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/**
 * U = dropout(x)·Aᵀ of a projection: the one-pass LoraDown kernel where it takes the width (a
 * multiple of 4), dropout + the tiled matmul elsewhere — the same U either way (float64 reference).
 */
const SEED = 424242;

describe('projection lora_A: LoraDown or dropout + matmul by the width', () => {
  let gpu: Gpu;
  let k: ProjectionKernels;
  beforeAll(async () => {
    gpu = await testGpu();
    k = { matmul: await Matmul.create(gpu), dropout: await Dropout.create(gpu), loraDown: await LoraDown.create(gpu) };
  });

  const unitOf = (rng: Rng, K: number, R: number, nOut: number, p: number, M: number): { unit: ProjectionUnit; a: Float32Array } => {
    const a = rng.f32(R * K, 0.2);
    const dropout =
      p > 0
        ? { p, salt: 7, seed: gpu.tensorFrom('seed', [1], 'u32', new Uint32Array([SEED])), xDrop: gpu.tensor('xDrop', [M, K], 'f32') }
        : undefined;
    const unit: ProjectionUnit = {
      label: 'L0 o_proj',
      w: { format: 'f32', nOut, k: K, data: gpu.tensor('w', [nOut, K], 'f32') },
      lora: { pair: { a: gpu.tensorFrom('a', [R, K], 'f32', a), b: gpu.tensor('b', [nOut, R], 'f32') }, scale: 2, r: R },
      dropout,
    };
    return { unit, a };
  };

  for (const [K, kernel] of [[8, 'lora down'], [6, 'matmul'], [10, 'matmul']] as const) {
    for (const p of [0, 0.25]) {
      it(`K = ${K}, dropout ${p}: ${kernel}, U as the reference`, async () => {
        const rng = new Rng(K * 31 + p * 100);
        const M = 13;
        const R = 5;
        const xv = rng.f32(M * K);
        const x = gpu.tensorFrom('x', [M, K], 'f32', xv);
        const u = gpu.tensor('u', [M, R], 'f32');
        gpu.fill32(u, NAN_WORD);
        const { unit, a } = unitOf(rng, K, R, 12, p, M);
        const list: Dispatch[] = [];
        projectionDown(list, k, unit, x, u);
        const labels = list.map((d) => d.label).join(' | ');
        if (kernel === 'lora down') expect(labels).toMatch(/lora_down_forward\.wgsl/);
        else expect(labels).toMatch(p > 0 ? /lora dropout.*matmul_forward\.wgsl/ : /matmul_forward\.wgsl/);
        submitDispatches(gpu, list);
        const ref = loraDownRef(xv, [a], M, K, R, p > 0 ? { p, seed: SEED, salts: [7] } : undefined)[0];
        expectRelNorm('U', await gpu.readF32(u), ref, 1e-5);
      });
    }
  }

  it('projectionsDown leaves widths LoraDown does not take to projectionDown (returns no units)', () => {
    const rng = new Rng(5);
    const M = 4;
    const x6 = gpu.tensor('x6', [M, 6], 'f32');
    const q = unitOf(rng, 6, 3, 8, 0, M).unit;
    const kk = unitOf(rng, 6, 3, 8, 0, M).unit;
    const list: Dispatch[] = [];
    expect(projectionsDown(list, k, [q, kk], x6, [gpu.tensor('u0', [M, 3], 'f32'), gpu.tensor('u1', [M, 3], 'f32')]).size).toBe(0);
    expect(list).toEqual([]);
    const x8 = gpu.tensor('x8', [M, 8], 'f32');
    const q8 = unitOf(rng, 8, 3, 8, 0, M).unit;
    const k8 = unitOf(rng, 8, 3, 8, 0, M).unit;
    expect(projectionsDown(list, k, [q8, k8], x8, [gpu.tensor('u0', [M, 3], 'f32'), gpu.tensor('u1', [M, 3], 'f32')]).size).toBe(2);
    expect(list.length).toBe(1);
  });
});
