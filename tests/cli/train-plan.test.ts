import { afterEach, describe, expect, it, vi } from 'vitest';
import { runTrain } from '../../src/cli/train.js';
import { CheckpointError, DeviceLimitError } from '../../src/errors.js';
import { makeTrainFolder } from './train-fixture.js';

/**
 * A config that cannot fit the device is refused before any weight is read, with the memory plan
 * printed and what to lower in the error. The proof that nothing was loaded: the model folder's
 * safetensors file is garbage, so any attempt to read it would fail with a CheckpointError instead
 * (the control case, with a batch that fits, shows that it does).
 */
describe('node train.js: a config that cannot fit', () => {
  afterEach(() => vi.restoreAllMocks());

  it('is refused with the plan and what to lower, before the (corrupt) weights are read', async () => {
    const printed: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((line: unknown) => void printed.push(String(line)));
    const huge = makeTrainFolder('plan', { per_device_train_batch_size: 4096, max_seq_length: 4096 }, { corrupt: true });
    const refused = runTrain(['--config', huge.config]);
    await expect(refused).rejects.toThrow(DeviceLimitError);
    await expect(refused).rejects.toThrow(/memory plan: buffer .* over this device's max\w+ .*lower per_device_train_batch_size.*max_seq_length/);
    const plan = printed.find((l) => l.startsWith('memory plan: batch 4096 × 4096'));
    expect(plan, printed.join('\n')).toBeDefined();
    expect(plan).toMatch(/total\s+\d/);
    expect(printed.some((l) => l.startsWith('model:'))).toBe(false);

    // Control: a batch that fits reaches the load, which fails on the corrupt file.
    const small = makeTrainFolder('plan-ok', {}, { corrupt: true });
    const loaded = runTrain(['--config', small.config]);
    await expect(loaded).rejects.toThrow(CheckpointError);
    await expect(loaded).rejects.toThrow(/model\.safetensors/);
    expect(printed.some((l) => l.startsWith('memory plan: batch 1 × 16'))).toBe(true);
  }, 120_000);
});
