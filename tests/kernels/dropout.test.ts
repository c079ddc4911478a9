import { describe, expect, it } from 'vitest';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { Dropout, dropoutRef } from '../../src/kernels/dropout.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

describe('LoRA dropout', () => {
  for (const [n, k, p] of [[1, 1, 0.5], [64, 2560, 0.05], [37, 333, 0.1]] as const) {
    it(`mask and scale match the reference at (${n}, ${k}), p=${p}, written and accumulated`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(n + k);
      const x = rng.f32(n * k);
      const prior = rng.f32(n * k);
      const d = await Dropout.create(gpu);
      const seed = gpu.tensorFrom('seed', [1], 'u32', new Uint32Array([12345]));
      const xs = gpu.tensorFrom('x', [n, k], 'f32', x);
      const out = gpu.tensor('out', [n, k], 'f32');
      gpu.fill32(out, NAN_WORD);
      submitDispatches(gpu, [d.forward('dropout', { out, x: xs, seed }, { p, salt: 7, accumulate: false })]);
      // x·scale in f32 is exact to one rounding
      const got = await gpu.readF32(out);
      expectClose('dropout', got, dropoutRef(x, p, 12345, 7), 1e-7, 0);
      const acc = gpu.tensorFrom('acc', [n, k], 'f32', prior);
      submitDispatches(gpu, [d.forward('dropout +=', { out: acc, x: xs, seed }, { p, salt: 7, accumulate: true })]);
      expectClose('dropout accumulate', await gpu.readF32(acc), dropoutRef(x, p, 12345, 7, prior), 1e-6, 1e-7);
      if (n * k > 10000) {
        // the kept fraction is 1 − p within a few standard deviations
        const kept = got.reduce((c, v) => c + (v !== 0 ? 1 : 0), 0) / got.length;
        expect(Math.abs(kept - (1 - p))).toBeLessThan(5 * Math.sqrt((p * (1 - p)) / got.length));
      }
    });
  }
});
