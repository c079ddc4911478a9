import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseQwen3Config } from '../../src/model/config.js';
import { PROJECTIONS } from '../../src/model/checkpoint.js';
import { checkPlan, formatPlan, guessDeviceMemory, planStep, type StepSettings } from '../../src/train/plan.js';
import { testGpu } from '../helpers/gpu.js';

const qwen4b = parseQwen3Config(JSON.parse(readFileSync(join(import.meta.dirname, '../../configs/models/qwen3-4b.json'), 'utf8')), 'qwen3-4b.json');
const GiB = 2 ** 30;
const base: StepSettings = {
  batch: 4,
  seq: 512,
  r: 32,
  targets: PROJECTIONS,
  gradientCheckpointing: true,
  optimizer: 'adamw',
  base: 'nf4',
  doubleQuant: false,
  lossChunkTokens: 1024,
  loraDropout: 0.05,
};

describe('memory plan', () => {
  it('Qwen3-4B, batch 4 × 512, r=32 on all seven, checkpointing: under 10 GiB', () => {
    const plan = planStep(qwen4b, base);
    console.log(formatPlan(plan));
    expect(plan.total).toBeLessThan(10 * GiB);
    // NF4 weights: 3.63 G projection parameters at 4 bits + one f32 scale per 64 + the bf16 embedding.
    const projParams = 36 * (2560 * 4096 * 2 + 2560 * 1024 * 2 + 2560 * 9728 * 3);
    const expectedWeights = projParams / 2 + (projParams / 64) * 4 + 151936 * 2560 * 2 + (2 * 36 + 1) * 2560 * 2 + 2 * 36 * 128 * 2;
    expect(plan.totals.weights).toBe(expectedWeights);
    // LoRA r=32 on all seven: 32 · (Σ K + Σ Nout) per layer.
    expect(plan.trainable).toBe(36 * 32 * (2560 * 5 + 4096 + 9728 + (4096 + 1024 * 2 + 2560 * 2 + 9728 * 2)));
    // AdamW keeps two f32 moments per (padded) parameter.
    expect(plan.totals.optimizer).toBeGreaterThanOrEqual(2 * 4 * plan.trainable);
  });

  it('checkpointing saves memory and 8-bit AdamW quarters the optimiser state', () => {
    const on = planStep(qwen4b, base);
    const off = planStep(qwen4b, { ...base, gradientCheckpointing: false });
    expect(off.totals.saved).toBeGreaterThan(10 * on.totals.saved);
    const eight = planStep(qwen4b, { ...base, optimizer: 'adamw_8bit' });
    expect(eight.totals.optimizer).toBeLessThan(on.totals.optimizer / 3.5);
  });

  it('refuses what cannot fit, saying what to lower', () => {
    const plan = planStep(qwen4b, { ...base, batch: 64, gradientCheckpointing: false });
    expect(() => checkPlan(plan, { maxBufferSize: 2 ** 40, maxStorageBufferBindingSize: 2 ** 31 - 4, memoryBytes: 24 * GiB })).toThrow(/per_device_train_batch_size/);
    // A binding limit (lavapipe's 128 MiB) names the buffer that breaks it.
    expect(() => checkPlan(planStep(qwen4b, base), { maxBufferSize: 2 ** 40, maxStorageBufferBindingSize: 128 * 2 ** 20 })).toThrow(/embed_tokens/);
    expect(() => checkPlan(planStep(qwen4b, base), { maxBufferSize: 2 ** 40, maxStorageBufferBindingSize: 2 ** 31 - 4, memoryBytes: 24 * GiB })).not.toThrow();
  });

  it('reads device memory from the card\'s name, in the adapter\'s description or device', () => {
    const named = (device: string, description = '') => guessDeviceMemory({ description, device });
    expect(named('NVIDIA H100 80GB HBM3')).toBe(80 * GiB);
    expect(named('NVIDIA GeForce RTX 4090')).toBe(24 * GiB);
    expect(guessDeviceMemory({ description: 'NVIDIA H100 80GB HBM3', device: '' })).toBe(80 * GiB);
    // Dawn's device field: the name lowercased, other characters as '-'
    expect(named('nvidia-h100-80gb-hbm3')).toBe(80 * GiB);
    expect(named('nvidia-geforce-rtx-4090')).toBe(24 * GiB);
    // the H200: 141 GB of HBM3e, taken as 139 GiB; its NVL form too; not the GH200 by this rule
    expect(named('nvidia-h200', 'NVIDIA: 580.159.04 580.159.4.0')).toBe(139 * GiB);
    expect(named('NVIDIA H200')).toBe(139 * GiB);
    expect(named('NVIDIA H200 NVL')).toBe(139 * GiB);
    expect(named('nvidia-gh200')).toBeUndefined();
    // the driver description alone, as the H100 and H200 hosts' bench records show it, names no card
    expect(named('', 'NVIDIA: 580.159.04 580.159.4.0')).toBeUndefined();
    expect(named('llvmpipe (LLVM 15.0.6, 256 bits)')).toBeUndefined();
  });

  it('this adapter\'s device field is its name in the form the table reads (lowercase, \'-\'); lavapipe\'s names no size', async () => {
    const gpu = await testGpu();
    const { description, device } = gpu.adapterInfo;
    expect(device, 'adapter info device').toMatch(/^[a-z0-9-]*$/);
    if (/llvmpipe/i.test(`${description} ${device}`)) expect(guessDeviceMemory(gpu.adapterInfo)).toBeUndefined();
  });
});
