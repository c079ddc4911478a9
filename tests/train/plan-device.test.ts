import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseQwen3Config } from '../../src/model/config.js';
import { PROJECTIONS } from '../../src/model/checkpoint.js';
import { checkPlan, planStep, shrinkingSettings, type StepSettings } from '../../src/train/plan.js';

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
const limits = { maxBufferSize: 2 ** 40, maxStorageBufferBindingSize: 2 ** 31 - 4 };

describe('memory plan against the device', () => {
  it('says when the device memory is unknown, and checks it when known', () => {
    const plan = planStep(qwen4b, base);
    const unknown = checkPlan(plan, limits);
    expect(unknown.memoryKnown).toBe(false);
    expect(unknown.note).toMatch(/does not report its memory/);
    expect(checkPlan(plan, { ...limits, memoryBytes: 80 * GiB }).memoryKnown).toBe(true);
  });

  it('a refusal names the largest buffers and only settings that shrink them', () => {
    // Full-precision base, checkpointing on: the weights dominate; no "smaller batch" for them, no "turn checkpointing on".
    const plan = planStep(qwen4b, { ...base, base: 'full', batch: 1, seq: 64 });
    let message = '';
    try {
      checkPlan(plan, { ...limits, memoryBytes: 6 * GiB });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/The largest buffers:/);
    const largest = message.split('\n').slice(1, 4);
    expect(largest.length).toBe(3);
    for (const line of largest) {
      expect(line).toMatch(/\[weights\]: lower .*use_4bit: true/);
      expect(line).not.toMatch(/per_device_train_batch_size|gradient_checkpointing/);
    }
  });

  it('suggests checkpointing only when it is off, and 8-bit AdamW only for 32-bit AdamW', () => {
    const off = planStep(qwen4b, { ...base, gradientCheckpointing: false });
    const saved = off.buffers.find((b) => b.name.startsWith('saved gate'))!;
    expect(shrinkingSettings(saved, off.settings, off.layers).join()).toMatch(/gradient_checkpointing: true/);
    const partial = planStep(qwen4b, { ...base, recompute: { checkpointLayers: 10 } });
    expect(shrinkingSettings(partial.buffers.find((b) => b.name.startsWith('saved gate'))!, partial.settings, partial.layers).join()).toMatch(/checkpoint more layers/);
    const eight = planStep(qwen4b, { ...base, optimizer: 'adamw_8bit' });
    const state = eight.buffers.find((b) => b.category === 'optimizer')!;
    expect(shrinkingSettings(state, eight.settings, eight.layers).join()).not.toMatch(/8bit/);
    const adamw = planStep(qwen4b, base);
    expect(shrinkingSettings(adamw.buffers.find((b) => b.category === 'optimizer')!, adamw.settings, adamw.layers).join()).toMatch(/paged_adamw_8bit/);
  });

  it('suggests double quantisation for the NF4 block scales, with its speed cost on the tensor-core path, and not when it is on', () => {
    for (const compute of ['f32', 'tensor-cores'] as const) {
      const plan = planStep(qwen4b, { ...base, compute });
      const absmax = plan.buffers.find((b) => b.category === 'weights' && b.name.includes('absmax'))!;
      const said = shrinkingSettings(absmax, plan.settings, plan.layers).join();
      expect(said).toMatch(/bnb_4bit_use_double_quant: true/);
      expect(/slower on tensor cores/.test(said)).toBe(compute === 'tensor-cores');
      const dq = planStep(qwen4b, { ...base, compute, doubleQuant: true });
      for (const b of dq.buffers.filter((x) => x.category === 'weights')) expect(shrinkingSettings(b, dq.settings, dq.layers).join()).not.toMatch(/double_quant/);
    }
  });
});
