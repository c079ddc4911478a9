import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stepSettings } from '../../src/cli/train.js';
import { loadConfig } from '../../src/config/load.js';
import { embeddedConfig, EMBEDDED_MODEL_ID } from '../../src/model/embedded.js';
import { checkPlan, planStep } from '../../src/train/plan.js';

describe('the embedded default run (node train.js with no arguments)', () => {
  it('its config loads cleanly and its step plan fits lavapipe (128 MiB bindings)', () => {
    const { config, warnings } = loadConfig(join(import.meta.dirname, '../../configs/embedded-default.yaml'));
    expect(warnings).toEqual([]);
    expect(config.model_id).toBe(EMBEDDED_MODEL_ID);
    expect(config.dataset_id).toMatch(/data[/\\]cinematic-prompts$/);
    const plan = planStep(embeddedConfig(), stepSettings(config, config.per_device_train_batch_size, config.max_seq_length, 192));
    expect(() => checkPlan(plan, { maxBufferSize: 2 ** 32, maxStorageBufferBindingSize: 2 ** 27 })).not.toThrow();
    // the plan counts the LoRA parameters of r=8 on all seven projections of both layers
    const c = embeddedConfig();
    const perLayer = 8 * (c.hiddenSize * 5 + c.numAttentionHeads * c.headDim + c.intermediateSize) + 8 * (c.numAttentionHeads * c.headDim + 2 * c.numKeyValueHeads * c.headDim + 2 * c.hiddenSize + 2 * c.intermediateSize);
    expect(plan.trainable).toBe(c.numHiddenLayers * perLayer);
  });
});
