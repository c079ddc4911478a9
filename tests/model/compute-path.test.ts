import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DeviceError } from '../../src/errors.js';
import { ATTENTION_SCALES_BUFFER, attentionOnTensorCores, attentionScalePlan, chooseComputePath, TENSOR_CORE_STORAGE_BUFFERS, tensorCoreUnsupportedReason, type AdapterCapabilities } from '../../src/model/compute-path.js';
import { storageBufferCount } from '../../src/kernels/kernel.js';
import { matmulSgmForwardSpec } from '../../src/kernels/matmul-sgm.js';
import { attentionScaleLayout } from '../../src/kernels/attention-sgm.js';
import { parseQwen3Config } from '../../src/model/config.js';
import { configSchema } from '../../src/config/schema.js';
import { defaultConfig } from '../../src/config/load.js';

/**
 * The compute path (issue 11 item 5) as a pure function of the adapter's features and
 * subgroup-matrix configs, the model's projection shapes and compute_dtype: fake adapters stand
 * for lavapipe (no f16, no subgroup matrices), an NVIDIA card (f16→f32 16×16×16) and adapters
 * lacking one piece each.
 */
const qwen4b = parseQwen3Config(JSON.parse(readFileSync(join(import.meta.dirname, '../../configs/models/qwen3-4b.json'), 'utf8')), 'qwen3-4b.json');
const F16_F32 = { componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 };
const adapter = (features: string[], configs = [F16_F32], storageBuffers = 16): AdapterCapabilities => ({
  features: new Set(features),
  subgroupMatrixConfigs: configs,
  limits: { maxStorageBuffersPerShaderStage: storageBuffers },
  describe: () => 'fake adapter',
});
const TENSOR_CORE_FEATURES_LIST = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'];
const nvidia = adapter(['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query']);
const lavapipe = adapter(['subgroups'], []);

describe('compute path selection', () => {
  it('auto: tensor cores where the adapter offers f16→f32 16×16×16 subgroup matrices with shader-f16, else f32 with the reason', () => {
    expect(chooseComputePath(nvidia, 'auto', qwen4b).path).toBe('tensor-cores');
    const lp = chooseComputePath(lavapipe, 'auto', qwen4b);
    expect(lp.path).toBe('f32');
    expect(lp.why).toMatch(/lacks shader-f16, chromium-experimental-subgroup-matrix/);
    // each missing piece alone sends auto to f32
    expect(chooseComputePath(adapter(['subgroups', 'chromium-experimental-subgroup-matrix']), 'auto').path).toBe('f32');
    expect(chooseComputePath(adapter(['shader-f16', 'subgroups']), 'auto').path).toBe('f32');
    expect(chooseComputePath(adapter(['shader-f16', 'chromium-experimental-subgroup-matrix']), 'auto').path).toBe('f32');
    // only f16→f16 or 8×8 configs: no
    const f16only = adapter(['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'], [{ ...F16_F32, resultComponentType: 'f16' }, { ...F16_F32, M: 8, N: 8, K: 8 }]);
    expect(chooseComputePath(f16only, 'auto').path).toBe('f32');
    expect(tensorCoreUnsupportedReason(f16only)).toMatch(/no f16→f32 16×16×16 subgroup-matrix config/);
    expect(tensorCoreUnsupportedReason(nvidia, qwen4b)).toBeUndefined();
  });

  it('too few storage buffers per shader stage for the tensor-core kernels: auto stays on f32 saying so, float16 is refused', () => {
    // the forward matmul binds the most: 9 (y, x, row_scale, the weight's four, u, lora_b) and the vec4 views of u and lora_b
    expect(storageBufferCount(matmulSgmForwardSpec)).toBe(11);
    expect(TENSOR_CORE_STORAGE_BUFFERS).toBe(11);
    const eight = adapter(TENSOR_CORE_FEATURES_LIST, [F16_F32], 8);
    const choice = chooseComputePath(eight, 'auto', qwen4b);
    expect(choice.path).toBe('f32');
    expect(choice.why).toMatch(/allows 8 storage buffers per shader stage; the subgroup-matrix kernels bind up to 11/);
    expect(() => chooseComputePath(eight, 'float16', qwen4b)).toThrow(/allows 8 storage buffers/);
    expect(chooseComputePath(adapter(TENSOR_CORE_FEATURES_LIST, [F16_F32], 11), 'auto', qwen4b).path).toBe('tensor-cores');
  });

  it('float32 forces f32 everywhere; float16 demands tensor cores and names what the adapter lacks', () => {
    expect(chooseComputePath(nvidia, 'float32', qwen4b).path).toBe('f32');
    expect(chooseComputePath(lavapipe, 'float32', qwen4b).path).toBe('f32');
    expect(chooseComputePath(nvidia, 'float16', qwen4b).path).toBe('tensor-cores');
    expect(() => chooseComputePath(lavapipe, 'float16', qwen4b)).toThrow(DeviceError);
    expect(() => chooseComputePath(lavapipe, 'float16', qwen4b)).toThrow(/compute_dtype: float16 .*fake adapter.* lacks shader-f16, chromium-experimental-subgroup-matrix/);
  });

  it('a model whose projection widths the subgroup-matrix kernels cannot take stays on f32 (auto) or is refused (float16)', () => {
    const odd = { ...qwen4b, hiddenSize: 2560 + 32 };
    expect(chooseComputePath(nvidia, 'auto', odd).path).toBe('f32');
    expect(chooseComputePath(nvidia, 'auto', odd).why).toMatch(/q_proj is \(4096, 2592\).*multiple of 64/);
    expect(() => chooseComputePath(nvidia, 'float16', odd)).toThrow(/multiple of 64/);
  });

  it('compute_dtype: auto by default, the seed\'s bnb_4bit_compute_dtype: bfloat16 leaves it auto, unknown values refused', () => {
    expect(defaultConfig().compute_dtype).toBe('auto');
    expect(defaultConfig().bnb_4bit_compute_dtype).toBe('bfloat16');
    expect(configSchema.safeParse({ compute_dtype: 'bfloat16' }).success).toBe(false);
    expect(configSchema.safeParse({ compute_dtype: 'float16' }).success).toBe(true);
  });
});

describe('tensor-core attention gate', () => {
  it('the tensor-core path at head dims that are multiples of 32 up to 128 plans one head-scale buffer of the layout', () => {
    expect(attentionOnTensorCores('tensor-cores', 128)).toBe(true);
    for (const dh of [16, 48, 100, 256]) expect(attentionOnTensorCores('tensor-cores', dh)).toBe(false);
    expect(attentionOnTensorCores('f32', 128)).toBe(false);
    const [buf, ...rest] = attentionScalePlan('tensor-cores', 4, 8, 128);
    expect(rest).toEqual([]);
    expect(buf!.name).toBe(ATTENTION_SCALES_BUFFER);
    expect(buf!.shape).toEqual([attentionScaleLayout(4, 8).length]);
    expect(attentionScalePlan('f32', 4, 8, 128)).toEqual([]);
  });
});
