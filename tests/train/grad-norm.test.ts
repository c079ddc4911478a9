import { describe, expect, it } from 'vitest';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import {
  createGradNormState,
  GradNorm,
  gradNormRef,
  readGradNormState,
} from '../../src/train/grad-norm.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

describe('gradient norm and clipping', () => {
  // tiny, realistic (the LoRA gradients of one Qwen3-4B layer at r = 32, all seven projections:
  // 1,835,008 floats) and awkward (not a multiple of the workgroup or of 4)
  for (const n of [3, 1_835_008, 100_003]) {
    it(`matches clip_grad_norm_ in float64 at n=${n}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(n);
      const g = rng.f32(n, 0.01);
      const grads = gpu.tensorFrom('grads', [n], 'f32', g);
      const state = createGradNormState(gpu, 'state');
      gpu.fill32(state, NAN_WORD);
      const gn = await GradNorm.create(gpu);
      const gradScale = 0.37;
      const ref = gradNormRef(g, gradScale, 1.0);
      // a max norm below the norm, so that the coefficient is < 1
      const maxNorm = ref.totalNorm * 0.5;
      const prog = gn.bind('norm', { state, grads }, { maxNorm });
      prog.setGradScale(gradScale);
      submitDispatches(gpu, prog.dispatches);
      const out = await readGradNormState(gpu, state);
      const want = gradNormRef(g, gradScale, maxNorm);
      // f32 sums of up to 1.8M squares in a tree: ~1e-6 relative
      expectClose('totalNorm', [out.totalNorm], [want.totalNorm], 1e-5, 0);
      expectClose('clipCoef', [out.clipCoef], [want.clipCoef], 1e-5, 0);
      expect(out.nonFinite).toBe(0);
    });
  }

  it('leaves clipCoef at 1 when the norm is below max_grad_norm, and when clipping is off', async () => {
    const gpu = await testGpu();
    const g = new Rng(5).f32(5000, 1e-3);
    const grads = gpu.tensorFrom('grads', [g.length], 'f32', g);
    const state = createGradNormState(gpu, 'state');
    const gn = await GradNorm.create(gpu);
    for (const maxNorm of [1.0, 0]) {
      gpu.fill32(state, 0);
      submitDispatches(gpu, gn.bind(`norm ${maxNorm}`, { state, grads }, { maxNorm }).dispatches);
      const out = await readGradNormState(gpu, state);
      expect(out.clipCoef).toBe(1);
      // f32 tree sum: ~1e-6 relative
      expectClose('totalNorm', [out.totalNorm], [gradNormRef(g, 1, maxNorm).totalNorm], 1e-5, 0);
    }
  });

  it('flags NaN and ±inf gradients, sets clipCoef = 0 and counts skipped steps', async () => {
    const gpu = await testGpu();
    const n = 70_001;
    const g = new Rng(7).f32(n, 1);
    g[12] = NaN;
    g[n - 1] = Infinity;
    g[40_000] = -Infinity;
    const grads = gpu.tensorFrom('grads', [n], 'f32', g);
    const state = createGradNormState(gpu, 'state');
    const gn = await GradNorm.create(gpu);
    const prog = gn.bind('norm', { state, grads }, { maxNorm: 1 });
    submitDispatches(gpu, prog.dispatches);
    submitDispatches(gpu, prog.dispatches);
    const out = await readGradNormState(gpu, state);
    expect(out.nonFinite).toBe(3);
    expect(out.totalNorm).toBe(Infinity);
    expect(out.clipCoef).toBe(0);
    expect(out.skippedSteps).toBe(2);
    // the stored norm covers the finite elements: f32 tree sum, ~1e-6 relative
    expectClose('finiteNorm', [out.finiteNorm], [gradNormRef(g, 1, 1).finiteNorm], 1e-5, 0);
  });

  it('is deterministic and independent of how the buffer is chunked', async () => {
    const gpu = await testGpu();
    const n = 3 * 16384 + 77;
    const g = new Rng(11).f32(n, 0.1);
    const grads = gpu.tensorFrom('grads', [n], 'f32', g);
    const gn = await GradNorm.create(gpu);
    const run = async (chunkElements?: number): Promise<Float32Array> => {
      const state = createGradNormState(gpu, 'state');
      const prog = gn.bind('norm', { state, grads }, { maxNorm: 1, chunkElements });
      expect(prog.dispatches.length).toBe(chunkElements ? Math.ceil(n / chunkElements) + 1 : 2);
      submitDispatches(gpu, prog.dispatches);
      return new Float32Array(await gpu.read(state));
    };
    const a = await run();
    const b = await run();
    expect(Array.from(b)).toEqual(Array.from(a));
    const chunked = await run(16384);
    // another summation order: a few ulp
    expectClose('chunked totalNorm', [chunked[0]], [a[0]], 1e-6, 0);
    expectClose('vs float64', [a[0]], [gradNormRef(g, 1, 1).totalNorm], 1e-5, 0);
  });
});
