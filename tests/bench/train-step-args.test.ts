import { describe, expect, it } from 'vitest';
import { maxMemoryArg, parseCheckpointingModes } from '../../bench/train-step-args.js';
import { ConfigError } from '../../src/errors.js';
import { maxMemoryBytes } from '../../src/train/auto-recompute.js';
import { guessDeviceMemory } from '../../src/train/plan.js';
import { recomputeBudget } from '../../src/train/step-settings.js';

// The checkpointing flags of bench/train-step.ts: the comma list of settings, and --max-memory,
// the budget of auto, which goes the trainer's way (recomputeBudget: the flag, else the device's
// memory as guessDeviceMemory reads it from the adapter's names).

describe('bench/train-step --checkpointing', () => {
  it('takes single settings, both (= on,off) and comma lists, in the order given, each once', () => {
    expect(parseCheckpointingModes('on')).toEqual(['on']);
    expect(parseCheckpointingModes('off')).toEqual(['off']);
    expect(parseCheckpointingModes('auto')).toEqual(['auto']);
    expect(parseCheckpointingModes('both')).toEqual(['on', 'off']);
    expect(parseCheckpointingModes('on,off,auto')).toEqual(['on', 'off', 'auto']);
    expect(parseCheckpointingModes('auto, off')).toEqual(['auto', 'off']);
    expect(parseCheckpointingModes('both,auto')).toEqual(['on', 'off', 'auto']);
    expect(parseCheckpointingModes('on,both')).toEqual(['on', 'off']);
  });

  it('refuses anything else, naming the flag and the item', () => {
    expect(() => parseCheckpointingModes('yes')).toThrow(ConfigError);
    expect(() => parseCheckpointingModes('on,sometimes')).toThrow(/--checkpointing on,sometimes: 'sometimes' is not a setting/);
    expect(() => parseCheckpointingModes('on,,off')).toThrow(/'' is not a setting/);
  });
});

describe('bench/train-step --max-memory', () => {
  it('reads sizes as the config\'s max_memory does, a bare number as GiB', () => {
    expect(maxMemoryArg(undefined)).toBeNull();
    expect(maxMemoryArg('24GiB')).toBe('24GiB');
    expect(maxMemoryArg('24')).toBe(24);
    expect(maxMemoryArg('23.5')).toBe(23.5);
    expect(maxMemoryBytes(maxMemoryArg('24'))).toBe(maxMemoryBytes('24GiB'));
  });

  it('refuses a size the config would refuse, or none, naming the flag', () => {
    expect(() => maxMemoryArg('24G')).toThrow(/--max-memory: "24G"/);
    expect(() => maxMemoryArg('lots')).toThrow(ConfigError);
    expect(() => maxMemoryArg('0GiB')).toThrow(/--max-memory 0GiB: expected a size above 0/);
  });

  it('is the budget of auto when given, else the device\'s memory as the trainer guesses it', () => {
    const rtx4090 = { adapterInfo: { vendor: 'nvidia', architecture: '', description: 'NVIDIA: 580.159.04 580.159.4.0', device: 'nvidia-geforce-rtx-4090' } };
    const unknown = { adapterInfo: { vendor: 'mesa', architecture: '', description: 'llvmpipe: Mesa', device: 'llvmpipe-llvm-15-0-6-256-bits-' } };
    expect(recomputeBudget('20GiB', unknown, '--max-memory')).toEqual({ bytes: 20 * 2 ** 30, from: '--max-memory' });
    const guessed = recomputeBudget(null, rtx4090, '--max-memory');
    expect(guessed.bytes).toBeDefined();
    expect(guessed).toEqual({ bytes: guessDeviceMemory(rtx4090.adapterInfo), from: 'the device\'s' });
    expect(recomputeBudget(null, unknown)).toEqual({ bytes: undefined, from: 'the device\'s' });
  });
});
