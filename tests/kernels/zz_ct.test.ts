import { it } from 'vitest';
import { Kernel } from '../../src/kernels/kernel.js';
import { matmulForwardSpec } from '../../src/kernels/matmul.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { testGpu } from '../helpers/gpu.js';
const files = (process.env.ZZ_FILES ?? 'matmul_forward.wgsl').split(',');
const configs = JSON.parse(process.env.ZZ_CONFIGS ?? '[]');
it('timing', async () => {
  const gpu = await testGpu();
  for (const file of files) for (const c of configs) {
    const k = await Kernel.create(gpu, { ...matmulForwardSpec, file }, c);
    const t = (n: number) => gpu.tensor('t', [n], 'f32');
    const t1 = performance.now();
    submitDispatches(gpu, [k.bind('a', { y: t(64), x: t(64), w: t(64), absmax: t(4), absmax2: t(4), qmap: t(4), u: t(16), lora_b: t(16) }, { m: 1, n: 3, k: 64, r: 4, scale: 1, offset: 0 }, [1, 1])]);
    await gpu.sync();
    console.log(file, JSON.stringify(c), 'first dispatch', (performance.now() - t1).toFixed(0));
  }
});
