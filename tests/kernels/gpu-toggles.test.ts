import { describe, expect, it } from 'vitest';
import { Gpu, gpuToggles } from '../../src/kernels/gpu.js';
import { testGpu } from '../helpers/gpu.js';

describe('Dawn toggles of a run', () => {
  it('turn robustness off unless asked, keeping f16 on NVIDIA and unquantised timestamps', () => {
    expect(gpuToggles()).toEqual([
      'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness',
      'disable-dawn-features=timestamp_quantization',
    ]);
    expect(gpuToggles({ robustness: true })).toEqual([
      'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
      'disable-dawn-features=timestamp_quantization',
    ]);
  });

  it('the device the tests share runs without robustness, and one opened with it says so', async () => {
    const shared = await testGpu();
    expect(shared.robustness).toBe(false);
    const robust = await Gpu.open({ robustness: true });
    try {
      expect(robust.robustness).toBe(true);
      // the same kernels compile and run there: one buffer round trip
      const t = robust.tensorFrom('x', [4], 'f32', new Float32Array([1, 2, 3, 4]));
      expect(Array.from(await robust.readF32(t))).toEqual([1, 2, 3, 4]);
    } finally {
      robust.destroy();
    }
  });
});
