import { describe, it } from 'vitest';
import { Swiglu, swigluForwardRef } from '../../src/kernels/swiglu.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

describe('swiglu forward', () => {
  // tiny, realistic (a 4B MLP row block) and awkward (not a multiple of the workgroup)
  for (const [N, F] of [[1, 3], [64, 9728], [7, 333]] as const) {
    it(`matches the float64 reference at N=${N}, F=${F}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(N * 1000 + F);
      const g = rng.f32(N * F, 3);
      const u = rng.f32(N * F, 1);
      const act = gpu.tensor('act', [N, F], 'f32');
      gpu.fill32(act, NAN_WORD);
      const sw = await Swiglu.create(gpu);
      submitDispatches(gpu, [sw.forward('swiglu', act, gpu.tensorFrom('gate', [N, F], 'f32', g), gpu.tensorFrom('up', [N, F], 'f32', u))]);
      // f32 exp and division: a few ulp of relative error
      expectClose('act', await gpu.readF32(act), swigluForwardRef(g, u), 1e-5, 1e-6);
    });
  }
});
