import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config/load.js';
import type { Qwen3Config } from '../../src/model/config.js';
import { autoRecompute, maxMemoryBytes, plannableBytes } from '../../src/train/auto-recompute.js';
import { planStep, type StepSettings } from '../../src/train/plan.js';
import { recomputePolicy } from '../../src/train/recompute.js';
import { stepSettings } from '../../src/train/step-settings.js';
import { readFileSync } from 'node:fs';
import { parseQwen3Config } from '../../src/model/config.js';

/**
 * gradient_checkpointing: auto (issue 11 item 6): the fewest recomputed layers whose plan fits the
 * budget, checked against the plan itself at the Qwen3-4B shape: the chosen k fits and k − 1 does
 * not; no budget → every layer; a budget too small → every layer, said so.
 */
const QWEN3_4B: Qwen3Config = parseQwen3Config(JSON.parse(readFileSync(new URL('../../configs/models/qwen3-4b.json', import.meta.url), 'utf8')), 'configs/models/qwen3-4b.json');

function settings4b(): StepSettings {
  const config = resolveConfig({ gradient_checkpointing: 'auto', lora_r: 32, per_device_train_batch_size: 8, max_seq_length: 512 }, 'test').config;
  return stepSettings(config, 8, 512, 512, 'chunked', 'f32');
}
const totalAt = (s: StepSettings, k: number): number => planStep(QWEN3_4B, { ...s, recompute: { checkpointLayers: k }, gradientCheckpointing: k > 0 }).total;

describe('gradient_checkpointing: auto', () => {
  it('is accepted by the config with max_memory, and means every layer where there is no device', () => {
    const c = resolveConfig({ gradient_checkpointing: 'auto', max_memory: '20GiB' }, 'test').config;
    expect(c.gradient_checkpointing).toBe('auto');
    expect(recomputePolicy(c.gradient_checkpointing)).toBe('full');
    expect(maxMemoryBytes(c.max_memory)).toBe(20 * 2 ** 30);
    expect(maxMemoryBytes(24)).toBe(24 * 2 ** 30);
    expect(maxMemoryBytes('16GB')).toBe(16e9);
    expect(maxMemoryBytes('20000MiB')).toBe(20000 * 2 ** 20);
    expect(maxMemoryBytes(null)).toBeUndefined();
    expect(() => resolveConfig({ max_memory: 'lots' }, 'test')).toThrow(/max_memory/);
    expect(() => resolveConfig({ gradient_checkpointing: 'sometimes' }, 'test')).toThrow(/gradient_checkpointing/);
  });

  it('picks the fewest recomputed layers whose plan fits a 24 GB card at the Qwen3-4B shape (B8×512)', () => {
    const s = settings4b();
    const budget = 24 * 2 ** 30;
    const auto = autoRecompute(QWEN3_4B, s, budget, 'the device\'s');
    const L = QWEN3_4B.numHiddenLayers;
    const k = auto.policy === 'none' ? 0 : auto.policy === 'full' ? L : auto.policy.checkpointLayers;
    expect(totalAt(s, k)).toBeLessThanOrEqual(plannableBytes(budget));
    if (k > 0) expect(totalAt(s, k - 1)).toBeGreaterThan(plannableBytes(budget));
    // B8×512 keeps 34 GiB with no layer recomputed, 6 GiB with all: on 24 GB some layers are recomputed, not all.
    expect(k).toBeGreaterThan(0);
    expect(k).toBeLessThan(L);
    expect(auto.why).toMatch(new RegExp(`^auto: ${k} of ${L} layers recomputed`));
  });

  it('keeps everything with room to spare, recomputes everything without a known budget or when nothing fits', () => {
    const s = settings4b();
    expect(autoRecompute(QWEN3_4B, s, 80 * 2 ** 30, 'the device\'s').policy).toBe('none');
    const unknown = autoRecompute(QWEN3_4B, s, undefined, 'the device\'s');
    expect(unknown.policy).toBe('full');
    expect(unknown.why).toMatch(/does not report its memory; set max_memory/);
    const tiny = autoRecompute(QWEN3_4B, s, 4 * 2 ** 30, 'max_memory');
    expect(tiny.policy).toBe('full');
    expect(tiny.why).toMatch(/still over/);
  });
});
