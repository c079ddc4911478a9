import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config/load.js';
import { join } from 'node:path';
import { packageRoot } from '../../src/config/paths.js';
import { embeddedConfig } from '../../src/model/embedded.js';
import { readConfigSource } from '../../src/model/random-model.js';
import { planStep } from '../../src/train/plan.js';
import { runStepSettings, stepSettings } from '../../src/train/step-settings.js';
import { testGpu } from '../helpers/gpu.js';

describe('step settings from gradient_checkpointing', () => {
  it('true/false keep their meaning; k layers plan saved sets for the L−k layers that keep theirs (Qwen3-4B shape)', async () => {
    const model = (await readConfigSource(join(packageRoot(), 'configs/models/qwen3-4b.json'))).config;
    const plan = (value: unknown) => {
      const { config } = resolveConfig({ gradient_checkpointing: value, lora_target_modules: 'all-linear' }, 'c.yaml');
      return planStep(model, stepSettings(config, 2, 64, 64));
    };
    const full = plan(true);
    const none = plan(false);
    const one = plan(18);
    expect(plan({ checkpoint_layers: 18 }).total).toBe(one.total);
    expect(plan(0).total).toBe(none.total);
    expect(plan(model.numHiddenLayers).total).toBe(full.total);
    expect(full.total).toBeLessThan(one.total);
    expect(one.total).toBeLessThan(none.total);
    expect(one.settings.recompute).toEqual({ checkpointLayers: 18 });
    expect(none.settings.gradientCheckpointing).toBe(false);
  });

  it('a layer count above the model\'s layers is refused, naming the key', async () => {
    const gpu = await testGpu();
    const { config } = resolveConfig({ gradient_checkpointing: { checkpoint_layers: 3 } }, 'c.yaml');
    expect(() => runStepSettings(config, embeddedConfig(), gpu, 2, 64)).toThrow(/gradient_checkpointing: checkpoint_layers = 3; expected a whole number from 0 to the model's 2 layers/);
  });
});
