import { describe, expect, it } from 'vitest';
import { ATTENTION_SGM_KEYS, AttentionSgm, attentionScaleLayout, attentionSgmHeadDimProblem } from '../../src/kernels/attention-sgm.js';
import { ConfigError, DeviceError } from '../../src/errors.js';
import { testGpu } from '../helpers/gpu.js';

/** What the tensor-core attention accepts, checked where it cannot run (lavapipe): the options fail before the device does. */
describe('AttentionSgm options', () => {
  it('takes 16 or 32 keys per tile and says so for any other', async () => {
    const gpu = await testGpu();
    expect(ATTENTION_SGM_KEYS).toEqual([16, 32]);
    for (const keys of [0, 8, 48, 64]) {
      const err = await AttentionSgm.create(gpu, { headDim: 128, keys }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect(String(err)).toContain(`keys per tile must be 16 or 32, got ${keys}`);
    }
  });

  it('refuses a head dim that is not a multiple of 32 up to 128, naming the f32 attention', async () => {
    const gpu = await testGpu();
    for (const dh of [16, 80, 100, 160]) {
      expect(attentionSgmHeadDimProblem(dh)).toContain(`head_dim ${dh}`);
      await expect(AttentionSgm.create(gpu, { headDim: dh })).rejects.toThrow(/the f32 attention takes it/);
    }
    for (const dh of [32, 64, 96, 128]) expect(attentionSgmHeadDimProblem(dh)).toBeUndefined();
  });

  it('names the missing subgroup matrices where the adapter has none', async () => {
    const gpu = await testGpu();
    if (gpu.features.has('chromium-experimental-subgroup-matrix' as GPUFeatureName)) return;
    await expect(AttentionSgm.create(gpu, { headDim: 128 })).rejects.toBeInstanceOf(DeviceError);
  });

  it('lays the four head-scale regions out at 256-byte offsets', () => {
    for (const [B, Hkv] of [[1, 1], [4, 8], [16, 8], [3, 5]] as const) {
      const l = attentionScaleLayout(B, Hkv);
      for (const off of [l.qOff, l.kOff, l.vOff, l.dOOff]) expect(off % 64).toBe(0);
      expect(l.kOff - l.qOff).toBeGreaterThanOrEqual(B * Hkv);
      expect(l.length - l.dOOff).toBeGreaterThanOrEqual(B * Hkv);
    }
  });
});
