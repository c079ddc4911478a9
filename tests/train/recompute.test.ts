import { describe, expect, it } from 'vitest';
import { checkpointedLayers, describeRecompute, recomputePolicy, type RecomputePolicy } from '../../src/train/recompute.js';
import { expectRelNorm } from '../helpers/compare.js';
import { readReference } from '../helpers/fixtures.js';
import { tinyGradients } from '../helpers/tiny-gradients.js';

describe('recomputation policy', () => {
  it('gradient_checkpointing true/false keep their meaning; k or {checkpoint_layers: k} checkpoints layers 0..k−1', () => {
    expect(checkpointedLayers(recomputePolicy(true), 36)).toBe(36);
    expect(checkpointedLayers(recomputePolicy(false), 36)).toBe(0);
    expect(checkpointedLayers(recomputePolicy(12), 36)).toBe(12);
    expect(checkpointedLayers(recomputePolicy({ checkpoint_layers: 5 }), 36)).toBe(5);
    expect(describeRecompute({ checkpointLayers: 2 }, 4)).toBe('layers 0..1 of 4');
    expect(() => checkpointedLayers({ checkpointLayers: 37 }, 36)).toThrow(/checkpoint_layers = 37.*0 to the model's 36 layers/);
  });

  it('fixture: checkpointing layer 0 only gives the gradients of no checkpointing (1e-6)', async () => {
    const ref = await readReference();
    const run = (recompute: RecomputePolicy) => tinyGradients(ref, { base: 'full', recompute });
    const none = await run('none');
    const first = await run({ checkpointLayers: 1 });
    expect(first.loss).toBe(none.loss);
    expect(first.grads.size).toBe(28);
    for (const [key, g] of none.grads) expectRelNorm(`per-layer vs none: ${key}`, first.grads.get(key)!, g, 1e-6);
  });
});
